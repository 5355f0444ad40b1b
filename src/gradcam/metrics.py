"""How faithful and how well-localised is a map? Batched, torch, on the model's device.

- :func:`deletion_insertion`: RISE's deletion and insertion curves and their areas (Petsiuk et al.,
  BMVC 2018, arXiv:1806.07421).
- :func:`confidence_change`: Average Drop and Increase in Confidence (Chattopadhay et al., WACV 2018).
- :func:`road`: ROAD, remove-and-debias with noisy linear imputation (Rong et al., ICML 2022,
  arXiv:2202.00449), most- and least-relevant-first.
- :func:`pointing_game`: pointing game (Zhang et al., ECCV 2016) and its energy-based variant
  (Wang et al., Score-CAM, 2020).
- :func:`sanity_check`: cascading model randomisation (Adebayo et al., NeurIPS 2018, arXiv:1810.03292).

Scores are the target class's softmax probability. All are deterministic: same inputs, same numbers.

Example:
    >>> ex = gradcam.explain(model, x)                                    # doctest: +SKIP
    >>> curves = deletion_insertion(model, x, ex.maps[:, 0], ex.targets[:, 0])
    >>> curves.deletion_auc, curves.insertion_auc                          # (B,), (B,): lower / higher is better
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .hooks import model_lock

Scorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SANITY_THRESHOLD = 0.5  # a method passes when, with the whole model randomised, mean |rank corr.| is below


def class_probability(model: nn.Module, batch_size: int = 32) -> Scorer:
    """``score(images, classes) -> (N,)``: the softmax probability of each image's class, in chunks,
    under ``torch.inference_mode()`` (the model's mode is not touched; pass an eval-mode model)."""

    def score(images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        out = []
        with model_lock(model), torch.inference_mode():  # no explain() hooks of another thread fire here
            for start in range(0, len(images), batch_size):
                logits = model(images[start : start + batch_size])
                probabilities = logits.float().softmax(dim=-1)
                out.append(probabilities.gather(1, classes[start : start + batch_size, None].to(logits.device))[:, 0])
        return torch.cat(out) if out else torch.empty(0)

    return score


def _ranks(maps: torch.Tensor) -> torch.Tensor:
    """(B, H, W) -> (B, H*W) rank of each pixel, 0 = most salient; ties broken by position (stable)."""
    flat = maps.flatten(1)
    order = flat.argsort(dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=maps.device).expand_as(order))
    return ranks


def blur(images: torch.Tensor, sigma: float = 5.0) -> torch.Tensor:
    """Separable Gaussian blur, edge-replicated (RISE's insertion start)."""
    radius = max(1, int(3 * sigma))
    x = torch.arange(-radius, radius + 1, device=images.device, dtype=torch.float32)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).to(images.dtype)
    channels = images.shape[1]
    padded = F.pad(images, (radius, radius, 0, 0), mode="replicate")
    out = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    padded = F.pad(out, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(padded, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


@dataclass(frozen=True)
class Curves:
    """Deletion and insertion curves (B, steps + 1) over the fraction of pixels changed, and their areas."""

    fractions: torch.Tensor
    deletion: torch.Tensor
    insertion: torch.Tensor

    @property
    def deletion_auc(self) -> torch.Tensor:
        return torch.trapezoid(self.deletion, self.fractions, dim=-1)

    @property
    def insertion_auc(self) -> torch.Tensor:
        return torch.trapezoid(self.insertion, self.fractions, dim=-1)


def deletion_insertion(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    classes: torch.Tensor,
    steps: int = 16,
    batch_size: int = 32,
    baseline: torch.Tensor | float = 0.0,
    scorer: Scorer | None = None,
) -> Curves:
    """RISE deletion (remove the most salient pixels first, replaced by ``baseline``) and insertion
    (start from a blurred copy and put the most salient pixels back) curves.

    Args:
        images: (B, C, H, W) preprocessed; maps: (B, H, W) saliency; classes: (B,) explained classes.
        steps: points on each curve after the start (the pixels change in ``steps`` equal shares).
    """
    score = scorer or class_probability(model, batch_size)
    batch, _, height, width = images.shape
    ranks = _ranks(maps).view(batch, 1, height, width)
    counts = torch.linspace(0, height * width, steps + 1, device=images.device).round().long()
    blurred = blur(images)
    base = torch.as_tensor(baseline, dtype=images.dtype, device=images.device)
    pairs = torch.cartesian_prod(torch.arange(batch), torch.arange(steps + 1)).to(images.device)
    deletion = torch.empty(batch, steps + 1, device=images.device)
    insertion = torch.empty(batch, steps + 1, device=images.device)
    for start in range(0, len(pairs), batch_size):
        image_ids, step_ids = pairs[start : start + batch_size, 0], pairs[start : start + batch_size, 1]
        changed = ranks[image_ids] < counts[step_ids].view(-1, 1, 1, 1)
        original = images[image_ids]
        removed = torch.where(changed, base, original)
        inserted = torch.where(changed, original, blurred[image_ids])
        both = score(torch.cat([removed, inserted]), torch.cat([classes[image_ids], classes[image_ids]]))
        deletion[image_ids, step_ids] = both[: len(image_ids)].float()
        insertion[image_ids, step_ids] = both[len(image_ids) :].float()
    fractions = counts.float() / (height * width)
    return Curves(fractions.expand(batch, -1), deletion, insertion)


@dataclass(frozen=True)
class ConfidenceChange:
    """Per image: the class probability on the image and on ``image * map``."""

    original: torch.Tensor
    explained: torch.Tensor

    @property
    def average_drop(self) -> float:
        """``100 * mean(max(0, Y - O) / Y)``: lower is better."""
        return float(100 * ((self.original - self.explained).clamp(min=0) / self.original.clamp(min=1e-12)).mean())

    @property
    def increase_in_confidence(self) -> float:
        """``100 * mean(O > Y)``: higher is better."""
        return float(100 * (self.explained > self.original).float().mean())


def confidence_change(
    model: nn.Module, images: torch.Tensor, maps: torch.Tensor, classes: torch.Tensor, batch_size: int = 32
) -> ConfidenceChange:
    """Average Drop / Increase in Confidence: the image multiplied by its map (Grad-CAM++, sec. 5.1)."""
    score = class_probability(model, batch_size)
    both = score(torch.cat([images, images * maps[:, None]]), torch.cat([classes, classes]))
    return ConfidenceChange(both[: len(images)], both[len(images) :])


def _neighbour_mean(x: torch.Tensor, weight_sum: torch.Tensor) -> torch.Tensor:
    """Weighted mean of the 8 neighbours (1/6 direct, 1/12 diagonal; zero-padded borders renormalised):
    the 3x3 kernel [[1, 2, 1], [2, 0, 2], [1, 2, 1]] / 12, computed as a separable [1, 2, 1] pass minus
    the centre (cheaper on CPUs than a depthwise convolution)."""
    p = F.pad(x, (1, 1, 1, 1))
    rows = p[..., :, :-2] + 2 * p[..., :, 1:-1] + p[..., :, 2:]
    both = rows[..., :-2, :] + 2 * rows[..., 1:-1, :] + rows[..., 2:, :]
    return (both - 4 * x) / (12 * weight_sum)


def _solve(values: torch.Tensor, known: torch.Tensor, iterations: int) -> torch.Tensor:
    """Coarse-to-fine Jacobi: solve on a half-size grid first (with twice the iterations: they are 4x
    cheaper there), upsample that as the start, then relax ``iterations`` times here. Known pixels stay
    fixed."""
    height, width = values.shape[-2:]
    ones = torch.ones_like(known[:, :1], dtype=values.dtype)
    weight_sum = _neighbour_mean(ones, torch.ones_like(ones)) * 1.0
    if min(height, width) <= 4:
        total = known.sum(dim=(-2, -1), keepdim=True).clamp(min=1)
        start = ((values * known).sum(dim=(-2, -1), keepdim=True) / total).expand_as(values)
    else:
        coarse_known = F.max_pool2d(known.to(values.dtype), 2, ceil_mode=True) > 0
        coarse_sum = F.avg_pool2d(values * known, 2, ceil_mode=True)
        coarse_count = F.avg_pool2d(known.to(values.dtype), 2, ceil_mode=True)
        coarse = _solve(coarse_sum / coarse_count.clamp(min=1e-12), coarse_known, 2 * iterations)
        start = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    x = torch.where(known, values, start)
    for _ in range(iterations):
        x = torch.where(known, values, _neighbour_mean(x, weight_sum))
    return x


def noisy_linear_impute(
    images: torch.Tensor, removed: torch.Tensor, noise: float = 0.01, iterations: int = 8, seed: int = 0
) -> torch.Tensor:
    """ROAD's noisy linear imputation, batched: each removed pixel becomes the weighted mean of its 8
    neighbours (1/6 direct, 1/12 diagonal). The linear system is solved for all images at once by
    coarse-to-fine Jacobi relaxation (``iterations`` per level), then Gaussian noise (std ``noise``,
    seeded) is added to the imputed pixels.

    Args:
        images: (N, C, H, W); removed: (N, 1, H, W) bool, True where a pixel is removed.
    """
    known = ~removed
    x = _solve(images, known, iterations)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    jitter = torch.randn(x.shape, generator=generator).to(x) * noise
    return torch.where(removed, x + jitter, images)


@dataclass(frozen=True)
class RoadScores:
    """Class probabilities after removing the top (MoRF) or bottom (LeRF) ``percentiles`` of pixels:
    (B, P) each. A faithful map makes MoRF fall fast and LeRF stay high."""

    percentiles: tuple[int, ...]
    most_relevant_first: torch.Tensor
    least_relevant_first: torch.Tensor

    @property
    def combined(self) -> torch.Tensor:
        """(B,) mean LeRF minus mean MoRF: higher is better."""
        return self.least_relevant_first.mean(dim=1) - self.most_relevant_first.mean(dim=1)


def road(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    classes: torch.Tensor,
    percentiles: Sequence[int] = (20, 40, 60, 80),
    batch_size: int = 32,
    seed: int = 0,
) -> RoadScores:
    """ROAD: remove a share of pixels in order of relevance, impute them (:func:`noisy_linear_impute`,
    all variants in one batched solve) and score the class probability."""
    batch, _, height, width = images.shape
    ranks = _ranks(maps).view(batch, 1, height, width)
    total = height * width
    variants, image_ids = [], []
    for most_first in (True, False):
        for p in percentiles:
            count = round(total * p / 100)
            removed = ranks < count if most_first else ranks >= total - count
            variants.append(removed)
            image_ids.append(torch.arange(batch, device=images.device))
    removed = torch.cat(variants)
    ids = torch.cat(image_ids)
    imputed = noisy_linear_impute(images[ids], removed, seed=seed)
    probabilities = class_probability(model, batch_size)(imputed, classes[ids]).float()
    probabilities = probabilities.view(2, len(percentiles), batch).permute(0, 2, 1)
    return RoadScores(tuple(percentiles), probabilities[0], probabilities[1])


@dataclass(frozen=True)
class PointingResult:
    """Per image: whether the map's maximum lies in a box of the class (``hits``), and the share of
    the map's energy inside those boxes (``energy``)."""

    hits: torch.Tensor
    energy: torch.Tensor


def pointing_game(maps: torch.Tensor, boxes: Sequence[torch.Tensor], tolerance: int = 15) -> PointingResult:
    """Pointing game: a hit when the map's maximum is within ``tolerance`` pixels of a box; energy-based:
    ``sum(map in boxes) / sum(map)``.

    Args:
        maps: (B, H, W) on the frame the boxes are in; boxes: per image an (M, 4) tensor of
            (x1, y1, x2, y2) pixel boxes of the explained class.
    """
    hits, energies = [], []
    for heatmap, image_boxes in zip(maps, boxes, strict=True):
        height, width = heatmap.shape
        inside = torch.zeros(height, width, dtype=torch.bool, device=heatmap.device)
        near = torch.zeros_like(inside)
        for x1, y1, x2, y2 in image_boxes.round().long().tolist():
            inside[max(0, y1) : max(0, y2), max(0, x1) : max(0, x2)] = True
            near[max(0, y1 - tolerance) : max(0, y2 + tolerance), max(0, x1 - tolerance) : max(0, x2 + tolerance)] = (
                True
            )
        peak = int(heatmap.flatten().argmax())
        hits.append(bool(near.flatten()[peak]))
        total = heatmap.sum()
        energies.append(float(heatmap[inside].sum() / total) if total > 0 else 0.0)
    return PointingResult(torch.tensor(hits), torch.tensor(energies))


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Rank correlation of each row of (B, N) a and b (ties broken by position)."""
    ra, rb = _ranks(a).float(), _ranks(b).float()
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    return (ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1)).clamp(min=1e-12)


@dataclass(frozen=True)
class SanityResult:
    """Rank correlation between the original maps and the maps after randomising the layers from the top
    down to each named layer (cascading): ``layers[i]`` and ``correlations[i]`` (B,)."""

    layers: tuple[str, ...]
    correlations: torch.Tensor

    def passed(self, threshold: float = SANITY_THRESHOLD) -> bool:
        """A method passes when randomising the whole model leaves maps unlike the originals."""
        return bool(self.correlations[-1].abs().mean() < threshold) if len(self.layers) else False


def sanity_check(
    model: nn.Module,
    images: torch.Tensor,
    explain_maps: Callable[[nn.Module], torch.Tensor],
    seed: int = 0,
    max_layers: int | None = None,
) -> SanityResult:
    """Adebayo et al.'s cascading model randomisation on a copy of ``model`` (the original is never
    touched): re-initialise the parameterised layers from the output down, and after each one compare the
    maps ``explain_maps(copy) -> (B, H, W)`` with the originals by rank correlation."""
    original = explain_maps(model).flatten(1)
    randomised = copy.deepcopy(model)
    layers = [(name, m) for name, m in randomised.named_modules() if any(True for _ in m.parameters(recurse=False))]
    layers.reverse()
    if max_layers is not None and len(layers) > max_layers:
        # evenly spaced, from the top layer alone to the whole model randomised
        checkpoints = {int(i) for i in torch.linspace(0, len(layers) - 1, max_layers).round().tolist()}
    else:
        checkpoints = set(range(len(layers)))
    generator = torch.Generator().manual_seed(seed)
    names, correlations = [], []
    for index, (name, module) in enumerate(layers):
        with torch.no_grad():
            for parameter in module.parameters(recurse=False):
                fresh = torch.randn(parameter.shape, generator=generator) * (parameter.float().std() + 1e-3)
                parameter.copy_(fresh.to(parameter))
        if index in checkpoints:
            names.append(name)
            correlations.append(spearman(original, explain_maps(randomised).flatten(1)))
    return SanityResult(tuple(names), torch.stack(correlations) if correlations else torch.empty(0))
