"""What an audit keeps of each map: where its energy sits, on a small fixed grid.

A map (the explanation's (H, W) map in [0, 1], in the model's input frame) is summarised by its *energy*
shares: the fraction of ``sum(map)`` that falls in a region. Regions: the border (the outer eighth of each
side, 44% of the area), the four corners (a quarter of each side, 6.25% of the area each) and the object
boxes given for the photo. The map is also kept downsampled to ``GRID`` x ``GRID`` cells (area means,
normalised to sum to 1), which is what the class means, the clusters and the comparisons work on: 512
bytes per photo in float16, so 100,000 photos need 51 MB.

Example:
    >>> shares = energy_shares(maps, box_masks)                       # doctest: +SKIP
    >>> shares.border, shares.corners, shares.in_boxes
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..io.images import Geometry

GRID = 16
BORDER = 1 / 8  # the border band's width, as a share of each side
CORNER = 1 / 4  # a corner square's side, as a share of each side
CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")


@dataclass(frozen=True)
class EnergyShares:
    """For N maps: ``border`` (N,), ``corners`` (N, 4) in :data:`CORNERS` order, ``in_boxes`` (N,) (NaN
    where a photo has no box), ``peak`` (N, 2) the (y, x) of the maximum as fractions of the frame, and
    ``empty`` (N,) True where a map has no energy at all (then every share is NaN)."""

    border: torch.Tensor
    corners: torch.Tensor
    in_boxes: torch.Tensor
    peak: torch.Tensor
    empty: torch.Tensor


def region_masks(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The border band (H, W) and the four corner squares (4, H, W) of an H x W frame, as float masks."""
    band_y, band_x = max(1, round(height * BORDER)), max(1, round(width * BORDER))
    border = torch.ones(height, width)
    border[band_y : height - band_y, band_x : width - band_x] = 0
    side_y, side_x = max(1, round(height * CORNER)), max(1, round(width * CORNER))
    corners = torch.zeros(4, height, width)
    corners[0, :side_y, :side_x] = 1
    corners[1, :side_y, width - side_x :] = 1
    corners[2, height - side_y :, :side_x] = 1
    corners[3, height - side_y :, width - side_x :] = 1
    return border, corners


def energy_shares(maps: torch.Tensor, box_masks: torch.Tensor | None = None) -> EnergyShares:
    """Energy shares of N maps (N, H, W) >= 0; ``box_masks`` (N, H, W) in [0, 1], an all-zero mask for a
    photo without boxes (its ``in_boxes`` is NaN)."""
    maps = maps.float().clamp_min(0)
    count, height, width = maps.shape
    border, corners = (m.to(maps.device) for m in region_masks(height, width))
    total = maps.sum(dim=(1, 2))
    empty = total <= 0
    safe = torch.where(empty, torch.ones_like(total), total)
    nan = torch.full_like(total, float("nan"))
    border_share = torch.where(empty, nan, (maps * border).sum(dim=(1, 2)) / safe)
    corner_share = torch.einsum("nhw,khw->nk", maps, corners) / safe[:, None]
    corner_share = torch.where(empty[:, None], nan[:, None], corner_share)
    in_boxes = nan.clone()
    if box_masks is not None:
        boxed = box_masks.flatten(1).amax(dim=1) > 0
        in_boxes = torch.where(boxed & ~empty, (maps * box_masks.to(maps)).sum(dim=(1, 2)) / safe, nan)
    return EnergyShares(border_share, corner_share, in_boxes, peak_of(maps), empty)


def peak_of(maps: torch.Tensor, tolerance: float = 1e-3) -> torch.Tensor:
    """(N, 2): the (y, x) of each of N maps' (N, H, W) maximum, cell centres as fractions of the frame.
    An upsampled map's maximum is often a plateau (bilinear upsampling holds an edge cell's value over
    several pixels): the centre of the cells within ``tolerance`` of the maximum, so that float noise
    between two runs of the same map (another batch, the Ray engine) cannot move the peak across it."""
    height, width = maps.shape[-2:]
    values = maps.flatten(1).float()
    top = values.amax(dim=1, keepdim=True)
    near = (values >= top - tolerance * top.abs()).float()
    rows = (torch.arange(height * width, device=maps.device) // width).float() + 0.5
    columns = (torch.arange(height * width, device=maps.device) % width).float() + 0.5
    count = near.sum(dim=1)
    return torch.stack([(near * rows).sum(dim=1) / count / height, (near * columns).sum(dim=1) / count / width], dim=1)


def grid_maps(maps: torch.Tensor, grid: int = GRID) -> torch.Tensor:
    """N maps (N, H, W) as (N, grid, grid) area means, each normalised to sum to 1 (an empty map stays 0)."""
    small = F.adaptive_avg_pool2d(maps.float().clamp_min(0)[:, None], grid)[:, 0]
    total = small.sum(dim=(1, 2), keepdim=True)
    return small / torch.where(total > 0, total, torch.ones_like(total))


def box_mask(
    boxes: list[list[float]], size: tuple[int, int], geometry: Geometry, frame: tuple[int, int]
) -> torch.Tensor:
    """Object ``boxes`` ([x1, y1, x2, y2] in the photo's own pixels; ``size`` its (width, height)) as a
    (h, w) mask of the model's input ``frame``, through the resize and crop of ``geometry``; parts that the
    crop cut away are dropped."""
    mask = torch.zeros(frame)
    width, height = size
    (resized_h, resized_w), (top, left) = geometry.resized, geometry.crop_origin
    for x1, y1, x2, y2 in boxes:
        xs = sorted((x1 / width * resized_w - left, x2 / width * resized_w - left))
        ys = sorted((y1 / height * resized_h - top, y2 / height * resized_h - top))
        c1, c2 = max(0, int(round(xs[0]))), min(frame[1], int(round(xs[1])))
        r1, r2 = max(0, int(round(ys[0]))), min(frame[0], int(round(ys[1])))
        if c2 > c1 and r2 > r1:
            mask[r1:r2, c1:c2] = 1
    return mask


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman's rank correlation of N pairs of maps (N, ...) (ties get their average rank); NaN where a
    map is constant."""
    ra, rb = _average_ranks(a.flatten(1).float()), _average_ranks(b.flatten(1).float())
    ra, rb = ra - ra.mean(dim=1, keepdim=True), rb - rb.mean(dim=1, keepdim=True)
    denominator = (ra.square().sum(dim=1) * rb.square().sum(dim=1)).sqrt()
    return torch.where(denominator > 0, (ra * rb).sum(dim=1) / denominator, torch.full_like(denominator, float("nan")))


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 0..n-1 of each row, tied values sharing the mean of their ranks."""
    order = values.argsort(dim=1, stable=True)
    ranks = torch.empty_like(values)
    positions = torch.arange(values.shape[1], dtype=values.dtype, device=values.device).expand_as(values)
    ranks.scatter_(1, order, positions)
    for row in range(values.shape[0]):  # ties: few rows, and a unique() per row is cheap at grid size
        unique, inverse = values[row].unique(return_inverse=True)
        if unique.numel() < values.shape[1]:
            sums = torch.zeros_like(unique).scatter_add_(0, inverse, ranks[row])
            counts = torch.zeros_like(unique).scatter_add_(0, inverse, torch.ones_like(ranks[row]))
            ranks[row] = (sums / counts)[inverse]
    return ranks


def top_share_iou(a: torch.Tensor, b: torch.Tensor, share: float = 0.2) -> torch.Tensor:
    """IoU of the top ``share`` of the cells of each of N pairs of maps (N, ...): ties broken by position,
    the same way for both maps, so a map against itself gives exactly 1."""
    flat_a, flat_b = a.flatten(1).float(), b.flatten(1).float()
    keep = max(1, round(share * flat_a.shape[1]))
    top_a = torch.zeros_like(flat_a, dtype=torch.bool).scatter_(1, _top(flat_a, keep), True)
    top_b = torch.zeros_like(flat_b, dtype=torch.bool).scatter_(1, _top(flat_b, keep), True)
    return (top_a & top_b).sum(dim=1) / (top_a | top_b).sum(dim=1)


def _top(values: torch.Tensor, keep: int) -> torch.Tensor:
    return values.argsort(dim=1, descending=True, stable=True)[:, :keep]


def agreement(grids: torch.Tensor, centre: torch.Tensor) -> float | None:
    """How much ``n`` maps (n, G, G) agree with each other beyond a common ``centre`` (G, G), the mean map
    of the whole dataset: the mean inner product of two different maps' residuals ``r = g - centre``, over
    their mean squared norm. 1: every map the same; 0: no more alike than maps of unrelated photos (the
    estimate is unbiased: independent residuals average 0 at any n); None under 2 maps or all at the centre.

    ``sum_(i != j) <r_i, r_j> = |sum_i r_i|^2 - sum_i |r_i|^2``, so the cost is linear in n.

    Example:
        >>> agreement(torch.ones(5, 4, 4), torch.zeros(4, 4))
        1.0
    """
    n = grids.shape[0]
    if n < 2:
        return None
    residuals = (grids.float() - centre.float()).flatten(1)
    squares = residuals.pow(2).sum(dim=1)
    if float(squares.sum()) <= 0:
        return None
    pairs = (residuals.sum(dim=0).pow(2).sum() - squares.sum()) / (n * (n - 1))
    return float(pairs / squares.mean())
