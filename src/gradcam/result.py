"""The result of one :func:`gradcam.explain` call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .contributions import channel_contributions


def normalise(maps: torch.Tensor, spatial_dims: int = 2) -> torch.Tensor:
    """Min-max normalise each map over its last ``spatial_dims`` dimensions (1 for signals, 3 for volumes
    and clips) to [0, 1]; a constant map becomes 0."""
    low, high = maps.flatten(-spatial_dims).aminmax(dim=-1)  # one pass over the maps
    shape = (*low.shape, *([1] * spatial_dims))
    low, span = low.reshape(shape), (high - low).reshape(shape)
    return (maps - low) / torch.where(span > 0, span, torch.inf)  # a constant map: 0 / inf = 0


INTERPOLATION = {1: "linear", 2: "bilinear", 3: "trilinear"}


def upsample(maps: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Linear resize of (B, K, *s) maps to ``size`` (1 to 3 dimensions: linear, bilinear, trilinear), with
    sample centres aligned, as image resizers do."""
    if tuple(maps.shape[-len(size) :]) == tuple(size):
        return maps
    return F.interpolate(maps, size=size, mode=INTERPOLATION[len(size)], align_corners=False)


def fuse(maps: list[torch.Tensor], fusion: str = "mean", spatial_dims: int = 2) -> torch.Tensor:
    """Normalise each layer's upsampled maps and average them (Layer-CAM's fusion across layers), or
    multiply them (``fusion="product"``, Refine-CAM: a region stays only where every layer agrees), or sum the
    raw maps before normalising (``"sum"``, layers apart: a detector's box is read from one scale, and a
    normalised zero map of the other scales must not count)."""
    if len(maps) == 1:
        return normalise(maps[0], spatial_dims)
    if fusion == "sum":
        total = maps[0].clone()
        for more in maps[1:]:
            total += more
        return normalise(total, spatial_dims)
    stacked = torch.stack([normalise(m, spatial_dims) for m in maps])
    return normalise(stacked.prod(dim=0) if fusion == "product" else stacked.mean(dim=0), spatial_dims)


@dataclass(frozen=True)
class LayerResult:
    """One layer's share of an explanation.

    ``activations`` (B, C, h, w) float32; ``weights`` the method's channel weights, (B, K, C) or
    element-wise (B, K, C, h, w), None for methods without them; ``raw`` (B, K, h, w) the ReLU'd map.
    """

    name: str
    activations: torch.Tensor
    weights: torch.Tensor | None
    raw: torch.Tensor


@dataclass(frozen=True)
class ChannelContributions:
    """The N feature maps that contribute most to each map: ``channels`` (B, K, N), ``maps``
    (B, K, N, h, w) holding ``w_c * A_c``, ``totals`` (B, K, N) their sums over the map, and
    ``grand_total`` (B, K) the sum over every channel (the pre-ReLU map's sum)."""

    channels: torch.Tensor
    maps: torch.Tensor
    totals: torch.Tensor
    grand_total: torch.Tensor


@dataclass(frozen=True)
class Explanation:
    """Maps for B images and K targets each.

    Attributes:
        maps: (B, K, H, W) float32 in [0, 1], upsampled (bilinear) to the input's H x W; (B, K, L) for
            signals and (B, K, D, H, W) for volumes and clips (linear, trilinear).
        targets: (B, K) class indices explained, or None where the targets were callables.
        scores: (B, K) the explained scores (the logits by default).
        logits: (B, num_classes) the model's scores for every class (None for other outputs).
        method: the method's registered name.
        layer_results: one :class:`LayerResult` per layer, in the order asked for.
        counterfactual: True when the maps show what speaks against the targets.
        guided: (B, K, C, H, W) guided backpropagation, with ``explain(guided=True)``.
        class_maps: every class's map from the same forward pass, with ``explain(every_class=True)``
            (a :class:`~gradcam.all_classes.ClassMaps`).
    """

    maps: torch.Tensor
    targets: torch.Tensor | None
    scores: torch.Tensor
    logits: torch.Tensor | None
    method: str
    layer_results: tuple[LayerResult, ...]
    counterfactual: bool = False
    guided: torch.Tensor | None = None
    class_maps: Any = None

    def __repr__(self) -> str:
        batch, count = self.maps.shape[:2]
        shown = self.targets is not None and self.targets.numel() <= 20
        targets = f", targets={self.targets.tolist()}" if shown and self.targets is not None else ""
        return (
            f"Explanation({self.method}, layer={self.layer!r}, {batch} image(s) x {count} target(s){targets}, "
            f"maps {tuple(self.maps.shape[-2:])}{', counterfactual' if self.counterfactual else ''})"
        )

    @property
    def guided_gradcam(self) -> torch.Tensor:
        """(B, K, C, H, W) Guided Grad-CAM: guided backpropagation times the map (``explain(guided=True)``)."""
        if self.guided is None:
            raise ValueError("no guided backpropagation in this explanation; call explain(..., guided=True)")
        return self.guided * self.maps.unsqueeze(2)

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(result.name for result in self.layer_results)

    @property
    def layer(self) -> str:
        """The resolved layer name; several fused layers are joined by ``+``."""
        return "+".join(self.layers)

    @property
    def raw(self) -> torch.Tensor:
        """(B, K, h, w) layer-resolution maps before upsampling and normalisation. With several layers,
        each layer's map is normalised, resized to the finest layer's grid and averaged."""
        if len(self.layer_results) == 1:
            return self.layer_results[0].raw
        size = max((tuple(r.raw.shape[-2:]) for r in self.layer_results), key=lambda s: s[0] * s[1])
        return torch.stack([upsample(normalise(r.raw), size) for r in self.layer_results]).mean(0)

    def channel_contributions(self, top: int = 8, layer: int = 0) -> ChannelContributions:
        """The ``top`` feature maps contributing most (largest ``sum_ij w_c A_c,ij``) to each map: the
        "Grad-CAM per feature map" picture of the original work.

        Example:
            >>> ex.channel_contributions(top=8).maps.shape   # doctest: +SKIP
            torch.Size([1, 1, 8, 14, 14])
        """
        result = self.layer_results[layer]
        if result.weights is None:
            raise ValueError(f"method {self.method!r} has no channel weights, so no per-feature-map contributions")
        activations = result.activations.unsqueeze(1)  # (B, 1, C, *s)
        contributions = channel_contributions(result.weights, activations)  # (B, K, C, *s)
        totals = contributions.flatten(3).sum(dim=-1)
        top = min(top, totals.shape[-1])
        best = totals.topk(top, dim=-1)
        spatial = contributions.shape[3:]
        index = best.indices.reshape(*best.indices.shape, *([1] * len(spatial))).expand(-1, -1, -1, *spatial)
        return ChannelContributions(best.indices, contributions.gather(2, index), best.values, totals.sum(-1))
