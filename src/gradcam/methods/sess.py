"""SESS, a method around methods: scales and sliding windows for photos larger than the model's input.

SESS (Tyagi et al., "SESS: Saliency Enhancing with Scaling and Sliding", ECCV 2022, arXiv:2207.01769):
the image is resized to several scales (shorter side ``s_i = w + i * round(w * 2/7)`` for a window of
``w`` = the image's shorter side, 12 scales), a ``w x w`` window slides over each (stride ``w``; the last
window of a row or column shifted back inside), and every patch is explained with the ``base`` method for
the image's target. Each patch map is weighted by the patch's softmax score for the target over the best
patch's (``pre_filter_ratio`` drops the lowest-scoring patches first), pasted back where it came from and
resized to the image, and the maps are fused: the mean over the patches whose value exceeds ``theta`` at
each pixel (``pool="mean"``), or the maximum. A Gaussian blur (11 x 11, sigma 5) smooths the result.

Example:
    >>> gradcam.explain(model, x, SESS(base="gradcam++", num_scales=6), layer="layer4")   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import CAMMethod, get_method, register


@register
class SESS(CAMMethod):
    name = "sess"
    needs_model = True
    any_dimensions = False  # its scales and sliding windows are of images
    wraps_explain = True

    def __init__(
        self,
        base: str | CAMMethod = "gradcam",
        num_scales: int = 12,
        scale_step_ratio: float = 2.0 / 7.0,
        scales: Sequence[int] | None = None,
        window: int | None = None,
        step: int | None = None,
        pre_filter_ratio: float = 0.0,
        theta: float = 0.0,
        pool: str = "mean",
        smooth: bool = True,
        softmax_scores: bool = True,
        batch_size: int = 32,
    ) -> None:
        if pool not in ("mean", "max"):
            raise ValueError(f"pool must be mean or max, got {pool!r}")
        if not 0 <= pre_filter_ratio < 1 or num_scales < 1 or batch_size < 1:
            raise ValueError("pre_filter_ratio in [0, 1), num_scales >= 1 and batch_size >= 1")
        self.base = get_method(base)
        if getattr(self.base, "wraps_explain", False):
            raise ValueError("sess: the base method cannot be sess itself")
        self.num_scales, self.scale_step_ratio = num_scales, scale_step_ratio
        self.scales = tuple(scales) if scales is not None else None
        self.window, self.step = window, step
        self.pre_filter_ratio, self.theta, self.pool = pre_filter_ratio, theta, pool
        self.smooth, self.softmax_scores, self.batch_size = smooth, softmax_scores, batch_size

    def wrapped_maps(
        self,
        model: nn.Module,
        images: torch.Tensor,
        layer: Any,
        targets_of: Callable[[torch.Tensor], torch.Tensor],
        explain: Callable[..., Any],
        select: Callable[[Any], torch.Tensor],
    ) -> torch.Tensor:
        """(B, K, H, W) maps for the classes ``targets_of`` picks from the whole images' scores, normalised
        to [0, 1]; ``explain`` is :func:`gradcam.explain`, run on the patches with the base method."""
        from ..result import normalise

        with torch.inference_mode():
            indices = targets_of(select(model(images)))

        def explain_patches(batch: torch.Tensor, target: int) -> torch.Tensor:
            return explain(model, batch, self.base, layer, [target] * len(batch), output=select).maps[:, 0]

        def scores_of(batch: torch.Tensor) -> torch.Tensor:
            return select(model(batch))

        maps = torch.zeros(*indices.shape, *images.shape[-2:])
        for b in range(len(images)):
            for k in range(indices.shape[1]):
                maps[b, k] = self.image_map(images[b : b + 1], int(indices[b, k]), explain_patches, scores_of)
        return normalise(maps)

    def scale_sizes(self, window: int) -> list[int]:
        if self.scales is not None:
            if min(self.scales) < window:
                raise ValueError(f"sess: every scale must be at least the window ({window} px)")
            return list(self.scales)
        step = round(window * self.scale_step_ratio)
        return [window + step * i for i in range(self.num_scales)]

    def image_map(
        self,
        image: torch.Tensor,
        target: int,
        explain_patches: Callable[[torch.Tensor, int], torch.Tensor],
        scores_of: Callable[[torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        """The fused (H, W) map of one (1, C, H, W) image for class ``target``; ``explain_patches(batch,
        target)`` gives the base method's (n, H', W') maps, ``scores_of(batch)`` the model's (n, classes)."""
        from torchvision.transforms.functional import resize

        height, width = image.shape[-2:]
        window = self.window or min(height, width)
        step = self.step or window
        patches, places = [], []
        for scale in self.scale_sizes(window):
            scaled = resize(image, [scale], antialias=True)
            scaled_height, scaled_width = scaled.shape[-2:]
            for top in _starts(scaled_height, step, window):
                for left in _starts(scaled_width, step, window):
                    patches.append(scaled[..., top : top + window, left : left + window])
                    places.append((top, left, scaled_height, scaled_width))
        scores = []
        with torch.inference_mode():
            for start in range(0, len(patches), self.batch_size):
                out = scores_of(torch.cat(patches[start : start + self.batch_size]))
                out = out.softmax(-1) if self.softmax_scores else out
                scores.append(out[:, target].float().clamp(min=0))
        score = torch.cat(scores)
        order = score.argsort()[int(len(score) * self.pre_filter_ratio) :]
        best = score[order[-1]]
        weights = score[order] / best if best > 0 else torch.ones(len(order))
        total = image.new_zeros(height, width, dtype=torch.float32)
        counts = torch.zeros_like(total)
        for start in range(0, len(order), self.batch_size):
            chosen = order[start : start + self.batch_size]
            maps = explain_patches(torch.cat([patches[int(i)] for i in chosen]), target)
            for heat, weight, index in zip(maps, weights[start : start + self.batch_size], chosen, strict=True):
                top, left, scaled_height, scaled_width = places[int(index)]
                canvas = total.new_zeros(scaled_height, scaled_width)
                canvas[top : top + window, left : left + window] = heat.float() * weight
                pasted = F.interpolate(canvas[None, None], size=(height, width), mode="bilinear",
                                       align_corners=False)[0, 0]  # fmt: skip
                if self.pool == "max":
                    total = torch.maximum(total, pasted)
                else:
                    above = pasted > self.theta
                    total += torch.where(above, pasted, 0)
                    counts += above
        fused = total if self.pool == "max" else torch.where(counts > 0, total / counts.clamp(min=1), 0)
        return _gaussian_blur(fused) if self.smooth else fused


def _starts(length: int, step: int, window: int) -> list[int]:
    """Window starts along one side; the last window is shifted back to end at the border."""
    starts = []
    for start in range(0, length, step):
        if start + window >= length:
            starts.append(max(length - window, 0))
            break
        starts.append(start)
    return starts


def _gaussian_blur(image: torch.Tensor, size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """An (H, W) map blurred by a separable Gaussian, mirrored at the borders (without repeating the edge)."""
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).to(image)
    pad = size // 2
    padded = F.pad(image[None, None], (pad, pad, pad, pad), mode="reflect")
    blurred = F.conv2d(padded, kernel.view(1, 1, 1, size))
    return F.conv2d(blurred, kernel.view(1, 1, size, 1))[0, 0]
