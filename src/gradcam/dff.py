"""Deep Feature Factorization: *what* the network sees in a photo, not only where.

DFF (Collins, Achanta & Süsstrunk, "Deep Feature Factorization for Concept Discovery", ECCV 2018,
arXiv:1806.10206) factorises a layer's activations over every position of every photo with non-negative
matrix factorisation: ``A (C, B h w) ~= W H``, W (C, k) the k concept vectors, H (k, B h w) where each
concept lies in each photo. The channels are first shifted by their minimum so that ``A`` is
non-negative (and the shift added back to the concept vectors), as pytorch-grad-cam does. Each concept
"votes" for the classes the model's head gives a map that is that concept everywhere (for a
global-pool + linear head: ``fc(w_j)``, as pytorch-grad-cam's ``computation_on_concepts``). NMF leaves the
scale between ``w_j`` and ``h_j`` free; the concept vector is taken where the concept is strongest
(``w_j max h_j``), so its votes do not depend on the solver's arbitrary scale (pytorch-grad-cam's do).

The factorisation is hierarchical alternating least squares (HALS, Cichocki & Phan 2009; scikit-learn's
coordinate-descent solver is the same update), in torch, from a seeded random start.

Example:
    >>> found = gradcam.concepts(model, x, k=4)                      # doctest: +SKIP
    >>> found.maps.shape, found.top_classes(2)[0]                    # (B, k, H, W); concept 0's two classes
    (torch.Size([2, 4, 224, 224]), [('tabby', 0.61), ('tiger cat', 0.22)])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

MAX_ACTIVATION_BYTES = 2 * 1024**3  # the layer's activations of all photos, factorised together


def nmf(
    x: torch.Tensor,
    k: int,
    iterations: int = 200,
    tol: float = 1e-4,
    seed: int = 0,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``x ~= W H`` for a non-negative ``x`` (m, n): ``W`` (m, k) and ``H`` (k, n), both non-negative.

    HALS: each column of W and row of H is in turn the least-squares optimum with the others fixed,
    clipped at zero. Starts from ``init`` or from ``|N(0, 1)| sqrt(mean(x) / k)`` drawn with ``seed``; stops
    after ``iterations`` sweeps or when ten sweeps lower the squared error by less than ``tol`` times ten
    times the second sweep's decrease (the error is measured every ten sweeps). Products in float32 (float64
    for a float64 ``x``), the error in float64."""
    if x.dim() != 2 or bool((x < 0).any()):
        raise ValueError("nmf: expected a non-negative (m, n) matrix")
    if k < 1:
        raise ValueError(f"nmf: k must be >= 1, got {k}")
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    x = x.to(dtype)
    if init is None:
        generator = torch.Generator().manual_seed(seed)
        scale = (x.double().mean() / k).sqrt()
        w = (torch.randn(x.shape[0], k, generator=generator, dtype=torch.float64).abs() * scale).to(x.device, dtype)
        h = (torch.randn(k, x.shape[1], generator=generator, dtype=torch.float64).abs() * scale).to(x.device, dtype)
    else:
        w, h = (t.detach().to(dtype).to(x.device).clone() for t in init)
    x_norm = (x.double() ** 2).sum()

    def error() -> float:
        return float(
            x_norm - 2 * (w.double() * (x @ h.T).double()).sum() + ((w.T @ w).double() * (h @ h.T).double()).sum()
        )

    previous, first_drop = 0.0, None
    for sweep in range(1, iterations + 1):
        _hals_sweep(w, x @ h.T, h @ h.T)  # the columns of W
        _hals_sweep(h.T, x.T @ w, w.T @ w)  # the rows of H, as columns of H^T (a view: updated in place)
        if sweep <= 2:
            now = error()
            first_drop, previous = (previous - now if sweep == 2 else None), now
        elif sweep % 10 == 0 and first_drop is not None:
            now = error()
            if first_drop > 0 and previous - now <= tol * 10 * first_drop:
                break
            previous = now
    return w.float(), h.float()


def _hals_sweep(factor: torch.Tensor, cross: torch.Tensor, gram: torch.Tensor) -> None:
    """One HALS sweep over the columns of ``factor`` (m, k), in place: for each j,
    ``f_j <- max(0, f_j + (cross_j - F gram_j) / gram_jj)``."""
    for j in range(factor.shape[1]):
        if gram[j, j] <= 0:
            continue
        updated = factor[:, j] + (cross[:, j] - factor @ gram[:, j]) / gram[j, j]
        factor[:, j] = updated.clamp(min=0)


def factorize(activations: torch.Tensor, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """DFF of (B, C, h, w) activations, jointly over the batch: ``(concepts (k, C), maps (B, k, h, w))``,
    with ``activations - offset ~= sum_j (concepts_j - offset) maps_j`` (``offset`` each channel's minimum).
    NMF's split of scale between a concept and its map is arbitrary; here each concept vector is the
    activation where that concept is strongest, ``offset + w_j max(h_j)`` (what its votes are read from),
    and each map is in the activations' own units, ``h_j |w_j|``, so that concepts compare by their maps."""
    batch, channels = activations.shape[:2]
    grid = activations.shape[2:]
    flat = activations.detach().float().transpose(0, 1).reshape(channels, -1)
    flat = torch.nan_to_num(flat)
    offset = flat.amin(dim=1, keepdim=True)
    w, h = nmf(flat - offset, k, seed=seed)
    concepts = (w * h.amax(dim=1) + offset).T  # (k, C)
    h = h * w.norm(dim=0)[:, None]
    maps = h.reshape(k, batch, *grid).transpose(0, 1)
    return concepts, maps


@dataclass(frozen=True)
class Concepts:
    """What :func:`concepts` found: ``maps`` (B, k, H, W) each concept's place in each photo, in [0, 1] per
    photo (divided by the photo's strongest value over all concepts, so a concept absent from a photo stays
    near 0 there); ``raw`` (B, k, h, w) the factor H at the layer's grid; ``vectors`` (k, C) the
    concepts in the layer's channel space; ``scores`` (k, classes) the model's scores for each concept
    (None when the head could not be run on a concept); ``labels`` class names; ``layer``."""

    maps: torch.Tensor
    raw: torch.Tensor
    vectors: torch.Tensor
    scores: torch.Tensor | None
    labels: Sequence[str] | None
    layer: str

    def top_classes(self, count: int = 3) -> list[list[tuple[str, float]]]:
        """Per concept, the ``count`` classes it votes for most, with their softmax probabilities."""
        if self.scores is None:
            return [[] for _ in range(self.vectors.shape[0])]
        probabilities = self.scores.float().softmax(dim=1)
        top = probabilities.topk(min(count, probabilities.shape[1]), dim=1)
        return [
            [(self._label(int(i)), float(p)) for p, i in zip(values, indices, strict=True)]
            for values, indices in zip(top.values, top.indices, strict=True)
        ]

    def shares(self) -> torch.Tensor:
        """(B, k): each concept's share of each photo (the factor H summed over positions, rows summing to 1)."""
        total = self.raw.flatten(2).sum(dim=2)
        return total / total.sum(dim=1, keepdim=True).clamp(min=torch.finfo(total.dtype).tiny)

    def _label(self, index: int) -> str:
        return self.labels[index] if self.labels is not None and index < len(self.labels) else f"class {index}"


def concept_scores(
    tail: Any, vectors: torch.Tensor, grid: tuple[int, ...], select: Callable[[Any], torch.Tensor]
) -> torch.Tensor | None:
    """The model's scores (k, classes) when the layer's output is concept j at every position (every token
    of a transformer's layer, its class token too): the part of the network after the layer (``tail``, a
    :class:`~gradcam.tail.Tail`) re-run on k such outputs; None without a tail or when the output is not
    (k, classes)."""
    if tail is None:
        return None
    try:
        shape = tail.layer_output.shape
        if len(shape) == 3:  # tokens (B, N, C): the concept in every token
            maps = vectors[:, None, :].expand(-1, shape[1], -1).contiguous()
        else:
            maps = vectors[:, :, None, None].expand(-1, -1, *grid).contiguous()
        with torch.no_grad():
            scores = select(tail(maps.to(tail.layer_output.device, tail.layer_output.dtype),
                                 torch.zeros(len(vectors), dtype=torch.long)))  # fmt: skip
    except (RuntimeError, ValueError, TypeError):
        return None
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2 or scores.shape[0] != len(vectors):
        return None
    return scores.detach().float().cpu()


def _tail(model: nn.Module, layer: str, images: torch.Tensor) -> Any:
    """The network after ``layer`` (recorded on ``images``), or None where it cannot be split there."""
    from .tail import Tail, TailUnavailable

    try:
        return Tail(model, layer, images)
    except (TailUnavailable, RuntimeError, ValueError, TypeError):
        return None


def concepts(
    model: nn.Module,
    images: torch.Tensor,
    k: int = 5,
    layer: str | nn.Module | None = None,
    *,
    labels: Sequence[str] | None = None,
    output: Callable[[Any], torch.Tensor] | None = None,
    seed: int = 0,
    batch_size: int = 32,
) -> Concepts:
    """Deep Feature Factorization (Collins et al., ECCV 2018) of ``images`` (B, C, H, W) at ``layer``
    (default: the layer :func:`gradcam.explain` picks): k concepts shared by the batch, where each lies in
    each photo, and the classes each votes for. Forward passes of ``batch_size`` photos, no gradients; the
    layer's activations of every photo are kept (the factorisation is joint), C h w floats a photo. The
    model is left as it was.

    Example:
        >>> found = gradcam.concepts(model, x, k=4)              # doctest: +SKIP
        >>> found.top_classes(1)
        [[('tabby', 0.61)], [('carton', 0.4)], ...]
    """
    from .hooks import captured_forward, model_lock, preserved_state
    from .layers import resolve_layers
    from .result import upsample
    from .spatial import infer_layout
    from .targets import imagenet_labels, select_logits

    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        raise ValueError("concepts: images must be a float tensor (B, C, H, W)")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"concepts: k must be a whole number >= 1, got {k!r}")
    select = output or select_logits
    with model_lock(model), torch.inference_mode(False), preserved_state(model):
        ((name, module),) = resolve_layers(model, layer, images)[:1]
        torch.set_grad_enabled(False)
        tail = _tail(model, name, images[:batch_size])  # its recording pass is the first batch's forward pass
        parts = []
        for start in range(0, len(images), batch_size):
            if start == 0 and tail is not None:
                tensor, logits = tail.layer_output, select(tail.output)
            else:
                raw, (tensor,) = captured_forward(model, images[start : start + batch_size], [(name, module)], False)
                logits = select(raw)
            layout = infer_layout(tensor, tuple(images.shape[-2:]), None, None, name)
            parts.append(layout.to_spatial(tensor).float())
            needed = parts[0][0].numel() * 4 * len(images) * 3  # the activations, their shifted copy, W H
            if start == 0 and needed > MAX_ACTIVATION_BYTES:
                raise ValueError(
                    f"concepts: {len(images)} photos x {tuple(parts[0].shape[1:])} activations at {name} need about "
                    f"{needed / 1024**3:.1f} GB to factorise together; give fewer photos or another layer"
                )
        activations = torch.cat(parts)
        del parts
        if k > activations.shape[1]:
            raise ValueError(f"concepts: k={k} is more than the layer's {activations.shape[1]} channels")
        vectors, raw = factorize(activations, k, seed)
        # numbered by how much of the photos each holds, largest first: NMF's own order follows its start
        # and the order of the photos' columns, so the same photos in another order renumbered (recoloured)
        # the same concepts
        order = raw.flatten(2).sum(dim=(0, 2)).argsort(descending=True, stable=True)
        vectors, raw = vectors[order], raw[:, order]
        scores = concept_scores(tail, vectors, tuple(raw.shape[2:]), select)
    if labels is None and isinstance(logits, torch.Tensor) and logits.dim() == 2:
        labels = imagenet_labels() if logits.shape[1] == 1000 else None
    peak = raw.flatten(1).amax(dim=1).clamp(min=torch.finfo(raw.dtype).tiny)
    maps = upsample(raw / peak[:, None, None, None], tuple(images.shape[-2:])).clamp(0, 1)
    return Concepts(maps.cpu(), raw.cpu(), vectors.cpu(), scores, labels, name)
