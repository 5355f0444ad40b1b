"""``explain()``: one call, one forward pass, no state between calls."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .hooks import capture, preserved_state
from .layers import LayerSpec, resolve_layers
from .methods import CAMMethod, get_method
from .methods.perturbation import PerturbationMethod, Probe
from .result import Explanation, LayerResult, normalise, upsample
from .targets import ResolvedTargets, TargetSpec, resolve_targets, select_logits


def explain(
    model: nn.Module,
    images: torch.Tensor,
    method: str | CAMMethod = "gradcam",
    layer: LayerSpec = None,
    targets: TargetSpec = None,
    *,
    output: Callable[[Any], torch.Tensor] | None = None,
    labels: Sequence[str] | None = None,
    counterfactual: bool = False,
    eval_mode: bool = True,
) -> Explanation:
    """Explain ``model``'s decision on ``images`` with a class activation map.

    Args:
        model: any PyTorch vision model; it is left exactly as it was (mode, ``requires_grad``,
            parameter ``.grad``, hooks), also when this raises.
        images: a preprocessed float tensor (B, C, H, W) on the model's device.
        method: a registered name (:func:`gradcam.methods`) or a :class:`CAMMethod` instance.
        layer: a module name (``"features.35"``), a module, a list of them (maps fused), or None for the
            last layer with a spatial map before global pooling.
        targets: None (top-1), an int, one int per image, a list of K per image, ``"top-k"``, a class
            name, or callables on the output; all K targets come from one forward pass.
        output: picks the (B, num_classes) scores from the model's output (default: the tensor, the first
            element of a tuple, ``.logits``, or a dict's ``"logits"``/``"out"``).
        labels: class names for name targets (ImageNet's for 1,000-class models by default).
        counterfactual: negate the gradients: what speaks *against* each target (Grad-CAM paper, sec. 5).
        eval_mode: run the model in eval mode (restored afterwards).

    Returns:
        an :class:`Explanation`; ``maps`` is (B, K, H, W) in [0, 1].

    Example:
        >>> model = torchvision.models.resnet18().eval()          # doctest: +SKIP
        >>> ex = gradcam.explain(model, torch.randn(2, 3, 224, 224), targets="top-3")
        >>> ex.maps.shape, ex.layer
        (torch.Size([2, 3, 224, 224]), 'layer4')
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images: expected a float tensor (B, C, H, W), got {shape}")
    cam_method = get_method(method)
    select = output or select_logits
    with torch.inference_mode(False):
        if images.is_inference():
            images = images.clone()
        layers = resolve_layers(model, layer, images)
        with preserved_state(model, eval_mode=eval_mode):
            torch.set_grad_enabled(False)
            with capture(layers, graph_from_layer=cam_method.uses_gradients) as record:
                logits = select(model(images))
            activations = record.tensors()
            if logits.dim() != 2:
                raise ValueError(
                    f"the model's scores have shape {tuple(logits.shape)}; expected (B, num_classes): pass output= "
                    "or a callable target for other outputs"
                )
            resolved = resolve_targets(targets, logits.detach(), labels)
            scores = resolved.scores(logits)
            gradients = (
                _gradients(scores, activations, [name for name, _ in layers]) if cam_method.uses_gradients else None
            )
    results = []
    for index, (name, _) in enumerate(layers):
        if isinstance(cam_method, PerturbationMethod):
            probe = Probe(
                model, images, name, activations[index].detach(), _row_scores(select, resolved), scores.detach()
            )
            with preserved_state(model, eval_mode=eval_mode):
                weights = cam_method.perturbation_weights(probe)
            results.append(_weighted_result(name, activations[index], weights))
            continue
        layer_gradients = [g[index] for g in gradients] if gradients is not None else None
        results.append(
            _layer_result(cam_method, name, activations[index], layer_gradients, resolved.count, counterfactual)
        )
    maps = _fuse([upsample(result.raw, tuple(images.shape[-2:])) for result in results])
    return Explanation(
        maps=maps,
        targets=resolved.indices,
        scores=scores.detach().float(),
        logits=logits.detach().float(),
        method=cam_method.name,
        layer_results=tuple(results),
        counterfactual=counterfactual,
    )


def _row_scores(
    select: Callable[[Any], torch.Tensor], resolved: ResolvedTargets
) -> Callable[[Any, torch.Tensor], torch.Tensor]:
    def scores(output: Any, image_ids: torch.Tensor) -> torch.Tensor:
        return resolved.scores(select(output), image_ids)

    return scores


def _weighted_result(name: str, activation: torch.Tensor, weights: torch.Tensor) -> LayerResult:
    """``ReLU(sum_c w_c A_c)`` for channel weights (B, K, C) computed by a perturbation method."""
    activations = activation.detach().float()
    raw = torch.einsum("bkc,bchw->bkhw", weights.float(), activations).clamp(min=0)
    return LayerResult(name, activations, weights.float(), raw)


def _gradients(scores: torch.Tensor, activations: list[torch.Tensor], names: list[str]) -> list[list[torch.Tensor]]:
    """``d scores[:, k] / d activations`` for each target k, through the head only. Summing over the batch
    is exact: in eval mode each image's score depends on its own activations alone."""
    connected = [a.requires_grad for a in activations]
    if not scores.requires_grad or not any(connected):
        warnings.warn(
            f"the scores do not depend on layer {names[0]!r} through autograd; its gradients are zero", stacklevel=3
        )
        return [[torch.zeros_like(a) for a in activations] for _ in range(scores.shape[1])]
    inputs = [a for a, c in zip(activations, connected, strict=False) if c]
    per_target = []
    for k in range(scores.shape[1]):
        grads = torch.autograd.grad(scores[:, k].sum(), inputs, retain_graph=k < scores.shape[1] - 1, allow_unused=True)
        filled = iter(grads)
        row = []
        for activation, is_connected in zip(activations, connected, strict=False):
            grad = next(filled) if is_connected else None
            row.append(torch.zeros_like(activation) if grad is None else grad)
        per_target.append(row)
    return per_target


def _layer_result(
    method: CAMMethod,
    name: str,
    activation: torch.Tensor,
    gradients: list[torch.Tensor] | None,
    count: int,
    counterfactual: bool,
) -> LayerResult:
    activations = activation.detach().float()
    if gradients is None:
        cam, _ = method.combine(activations, None)
        raw = cam.clamp(min=0).unsqueeze(1).expand(-1, count, -1, -1).contiguous()
        return LayerResult(name, activations, None, raw)
    cams, weights = [], []
    for gradient in gradients:
        gradient = gradient.detach().float()
        if counterfactual:
            gradient = -gradient
        cam, weight = method.combine(activations, gradient)
        cams.append(cam)
        weights.append(weight)
    stacked_gradients = torch.stack([g.detach() for g in gradients], dim=1)
    if bool((stacked_gradients == 0).flatten(2).all(dim=2).any()):
        warnings.warn(
            f"layer {name!r}: the gradient of a target is zero everywhere, so its map is zero; "
            "the layer may not influence that score",
            stacklevel=3,
        )
    raw = torch.stack(cams, dim=1).clamp(min=0)
    present = [w for w in weights if w is not None]
    stacked = torch.stack(present, dim=1) if len(present) == len(weights) else None
    return LayerResult(name, activations, stacked, raw)


def _fuse(maps: list[torch.Tensor]) -> torch.Tensor:
    """Normalise each layer's upsampled maps and average them (Layer-CAM's fusion across layers)."""
    if len(maps) == 1:
        return normalise(maps[0])
    return normalise(torch.stack([normalise(m) for m in maps]).mean(dim=0))
