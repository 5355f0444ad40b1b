"""Maps of every class at once: ``explain(model, x, targets="all")``.

"Which classes does this region support?" needs a map per class. Asked one by one, that is one backward
pass per class. Here it is one forward pass and, per chunk of classes, one *batched* backward pass through
the part of the network after the layer (``torch.autograd.grad(..., is_grads_batched=True)``: the chunk's
one-hot gradients are a vmapped batch); the raw maps are kept at the layer's resolution, optionally in
float16, and upsampled only for the classes asked for.

Example:
    >>> every = gradcam.explain(model, x, targets="all")             # doctest: +SKIP
    >>> every.raw.shape                                               # (B, 1000, 7, 7)
    >>> every.maps([281, 282]).shape                                  # (B, 2, 224, 224), in [0, 1]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .hooks import captured_forward, model_lock, preserved_state
from .layers import LayerSpec, resolve_layers
from .methods import CAMMethod, get_method
from .methods.gradient import CAM, GradCAM, HiResCAM
from .result import Explanation, LayerResult, normalise, upsample
from .spatial import infer_layout
from .targets import select_logits

CHUNK_BYTES = 64 << 20  # the gradients of one chunk of classes stay under this (64 MB measured fastest)


@dataclass(frozen=True, repr=False)
class ClassMaps:
    """Every class's map for B images: ``raw`` (B, K, h, w) at the layer's resolution (ReLU'd, before
    normalisation), ``logits`` (B, K); :meth:`maps` upsamples and normalises the classes asked for."""

    raw: torch.Tensor
    logits: torch.Tensor
    method: str
    layer: str
    size: tuple[int, int]
    labels: Sequence[str] | None = None
    activations: torch.Tensor | None = None  # (B, C, h, w) the layer's, for top_explanation

    def top_explanation(self, k: int = 3) -> Explanation:
        """An :class:`~gradcam.Explanation` of each image's ``k`` highest-scoring classes, from the maps
        already computed (no model run)."""
        top = self.top(k)
        rows = torch.arange(len(top))[:, None]
        raw = self.raw[rows, top].float()
        result = LayerResult(self.layer, self.activations if self.activations is not None else raw, None, raw)
        return Explanation(
            maps=normalise(upsample(raw, self.size)),
            targets=top,
            scores=self.logits.gather(1, top),
            logits=self.logits,
            method=self.method,
            layer_results=(result,),
        )

    def maps(self, classes: int | Sequence[int] | None = None) -> torch.Tensor:
        """(B, k, H, W) float32 maps in [0, 1] at the input's size, for ``classes`` (default: each image's
        top-1 class, as ``explain()`` would give)."""
        if classes is None:
            index = self.logits.argmax(dim=1)
            chosen = self.raw[torch.arange(len(index)), index][:, None]
        else:
            wanted = [classes] if isinstance(classes, int) else list(classes)
            chosen = self.raw[:, wanted]
        return normalise(upsample(chosen.float(), self.size))

    def top(self, k: int = 5) -> torch.Tensor:
        """(B, k) the classes of highest logit."""
        return self.logits.topk(min(k, self.logits.shape[1]), dim=1).indices

    def name(self, index: int) -> str:
        return self.labels[index] if self.labels is not None and index < len(self.labels) else str(index)

    def __repr__(self) -> str:
        batch, classes = self.raw.shape[:2]
        return (
            f"ClassMaps({self.method}, layer={self.layer!r}, {batch} image(s) x {classes} classes, raw "
            f"{tuple(self.raw.shape[-2:])} {str(self.raw.dtype).removeprefix('torch.')})"
        )


def explain_all(
    model: nn.Module,
    images: torch.Tensor,
    method: str | CAMMethod = "gradcam",
    layer: LayerSpec = None,
    *,
    output: Callable[[Any], torch.Tensor] | None = None,
    labels: Sequence[str] | None = None,
    dtype: torch.dtype = torch.float32,
    eval_mode: bool = True,
    counterfactual: bool = False,
    prefix_tokens: int | None = None,
    grid: tuple[int, int] | None = None,
) -> ClassMaps:
    """Every class's map from one forward pass (see the module's docstring); ``dtype=torch.float16``
    halves the memory of ``raw``. Gradient methods only: activation methods give one class-agnostic map,
    perturbation methods one pass per channel and class."""
    chosen = get_method(method)
    check_every_class(chosen)
    select = output or select_logits
    with model_lock(model), torch.inference_mode(False):
        if images.is_inference():
            images = images.clone()
        layers = resolve_layers(model, layer, images)
        if len(layers) != 1:
            raise ValueError('targets="all" explains one layer at a time')
        name = layers[0][0]
        with preserved_state(model, eval_mode=eval_mode):
            torch.set_grad_enabled(False)
            raw_output, (activation,) = captured_forward(model, images, layers, graph_from_layer=True)
            logits = select(raw_output)
            size = (images.shape[-2], images.shape[-1])
            layout = infer_layout(activation, size, prefix_tokens, grid, name)
            return class_maps_of(chosen, model, logits, activation, layout, name, size, labels, dtype, counterfactual)


def check_every_class(method: CAMMethod) -> None:
    """A one-line ValueError for methods whose maps are not one gradient per class."""
    if not method.one_gradient_per_class:  # perturbation methods, or more than one gradient per class
        raise ValueError(
            f'targets="all": {method.name} is not supported; use a gradient method (gradcam, hirescam, ...)'
        )
    if not method.uses_gradients:
        raise ValueError(f'targets="all": {method.name} is class-agnostic: its one map serves every class')


def class_maps_of(
    method: CAMMethod,
    model: nn.Module,
    logits: Any,
    activation: torch.Tensor,
    layout: Any,
    name: str,
    size: tuple[int, int],
    labels: Sequence[str] | None,
    dtype: torch.dtype = torch.float32,
    counterfactual: bool = False,
) -> ClassMaps:
    """Every class's map from a forward pass already run: ``activation`` the layer's output with its graph
    to ``logits`` still there (explain_all's pass, or explain()'s with ``every_class=True``)."""
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ValueError('targets="all" needs (B, num_classes) scores; pass output=')
    spatial = layout.to_spatial(activation.detach()).float()
    head = _linear_head(model, logits, activation, spatial, layout)
    if head is not None and type(method) is CAM and not _constant(head[1]):
        head = None  # CAM needs the pooling right after the layer: the general path says so
    if head is not None and type(method) in CLOSED_FORM:
        raw = _closed_form(method, head, spatial, dtype, counterfactual)
    else:
        raw = _every_class(method, logits, activation, spatial, layout, dtype, counterfactual)
    return ClassMaps(raw, logits.detach().float(), method.name, name, size, labels, spatial)


CLOSED_FORM = (GradCAM, HiResCAM, CAM)  # maps that are one matrix product on a linear head (exact types)


def _linear_head(
    model: nn.Module, logits: torch.Tensor, activation: torch.Tensor, spatial: torch.Tensor, layout: Any
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(W, D)`` when every class's gradient is ``G_k = W_k[:, None, None] * D``: the head after the layer is
    element-wise activations, global average pooling and one linear layer ``W`` (K, C), and
    ``D = f'(A) / (h w)`` (B, C, h, w) is shared by every class. Checked, not assumed: ``W`` is the model's
    last (K, C) linear layer, ``D`` is fitted on four classes' real gradients, and all four must match
    ``W_k * D`` to within 1e-5 of their size; anything else returns None (the general path)."""
    batch, classes = logits.shape
    channels = spatial.shape[1]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear) and m.weight.shape == (classes, channels)]
    if not linears or not activation.requires_grad or not logits.requires_grad:
        return None
    weight = linears[-1].weight.detach().float()
    probes = sorted({int(logits[0].argmax()), 0, classes // 2, classes - 1})
    one_hot = torch.zeros(len(probes), batch, classes, dtype=logits.dtype, device=logits.device)
    one_hot[torch.arange(len(probes)), :, torch.tensor(probes)] = 1
    (gradients,) = torch.autograd.grad(
        logits, activation, grad_outputs=one_hot, is_grads_batched=True, retain_graph=True, allow_unused=True
    )
    if gradients is None:
        return None
    laid = layout.to_spatial(gradients.flatten(0, 1)).float().unflatten(0, (len(probes), batch))  # (P, B, C, h, w)
    w = weight[probes][:, None, :, None, None]  # (P, 1, C, 1, 1)
    denominator = (w * w).sum(dim=0)
    if bool((denominator == 0).any()):
        return None
    shared = (w * laid).sum(dim=0) / denominator  # least squares over the probes: (B, C, h, w)
    error = (laid - w * shared).abs().amax()
    if error > 1e-5 * laid.abs().amax().clamp(min=1e-12):
        return None
    return weight, shared


def _constant(shared: torch.Tensor) -> bool:
    spread = (shared - shared.mean(dim=(2, 3), keepdim=True)).abs().amax()
    return bool(spread <= 1e-5 * shared.abs().amax().clamp(min=1e-12))


def _closed_form(
    method: CAMMethod,
    head: tuple[torch.Tensor, torch.Tensor],
    spatial: torch.Tensor,
    dtype: torch.dtype,
    counterfactual: bool,
) -> torch.Tensor:
    """Every class's map on a linear head (see :func:`_linear_head`), as one matrix product:
    Grad-CAM ``sum_c W_kc mean(D_c) A_c``; CAM ``hw`` times that; HiRes-CAM ``sum_c W_kc (D_c A_c)``."""
    weight, shared = head
    sign = -1.0 if counterfactual else 1.0
    height, width = spatial.shape[-2:]
    if type(method) is HiResCAM:
        cams = torch.einsum("kc,bchw->bkhw", sign * weight, shared * spatial)
    else:
        scale = height * width if type(method) is CAM else 1
        channel = shared.mean(dim=(2, 3)) * scale  # (B, C)
        cams = torch.einsum("kc,bc,bchw->bkhw", sign * weight, channel, spatial)
    return cams.clamp(min=0).to(dtype)


def _every_class(
    method: CAMMethod,
    logits: torch.Tensor,
    activation: torch.Tensor,
    spatial: torch.Tensor,
    layout: Any,
    dtype: torch.dtype,
    counterfactual: bool,
) -> torch.Tensor:
    """(B, K, h, w) maps, classes in chunks of one batched backward pass each."""
    batch, classes = logits.shape
    per_class = spatial[0].numel() * batch * 4 * 3  # the gradient, its spatial copy and the method's work
    chunk = max(1, min(classes, CHUNK_BYTES // max(1, per_class)))
    raw = torch.empty(batch, classes, *spatial.shape[-2:], dtype=dtype, device=spatial.device)
    if not activation.requires_grad or not logits.requires_grad:
        raw.zero_()
        return raw
    for start in range(0, classes, chunk):
        count = min(chunk, classes - start)
        one_hot = torch.zeros(count, batch, classes, dtype=logits.dtype, device=logits.device)
        one_hot[torch.arange(count), :, start + torch.arange(count)] = 1
        (gradients,) = torch.autograd.grad(
            logits, activation, grad_outputs=one_hot, is_grads_batched=True, retain_graph=True, allow_unused=True
        )
        if gradients is None:
            raw[:, start : start + count] = 0
            continue
        laid = layout.to_spatial(gradients.flatten(0, 1)).float()  # (count * B, C, h, w)
        if counterfactual:
            laid = -laid
        repeated = spatial.repeat(count, 1, 1, 1)
        cams, _ = method.combine(repeated, laid)
        cams = cams.reshape(count, batch, *cams.shape[-2:]).transpose(0, 1)
        raw[:, start : start + count] = cams.clamp(min=0).to(dtype)
    return raw
