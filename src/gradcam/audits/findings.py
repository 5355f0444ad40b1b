"""From the measured photos to the audit's findings: per class, per cluster, per photo and, with a
second model, the comparison. Every figure lands in ``audit.json`` under the names documented in
``docs/audit.md`` (the schema ships as ``audit.schema.json``).

When a cluster is flagged as a possible shortcut (each rule gives its reason in words):
- ``corner``: at least ``FLAG_CORNER`` of its maps' energy in one corner (a corner is 6.25% of the frame);
- ``border``: at least ``FLAG_BORDER`` on the border band (the outer eighth of each side, 44% of the frame);
- ``outside boxes`` (photos with boxes): less than ``FLAG_IN_BOXES`` of the energy inside the boxes, and
  less than ``BOX_CONCENTRATION`` times the boxes' share of the frame (a small object's blurry map may
  spill out of its box and still be about the object);
- ``fixed place``: at least ``FLAG_FIXED_PLACE`` of its maps peak within ``FIXED_RADIUS`` of the same
  point, and that point is at least ``OFF_CENTRE`` from the frame's centre (objects move from photo to
  photo; a watermark does not; photographers centre objects, so a fixed centre is no evidence).
Only clusters of at least ``MIN_FLAG_SIZE`` photos and ``MIN_FLAG_SHARE`` of their class are flagged.
A cluster's ``shortcut_score`` is its largest ratio of a rule's figure to its threshold (>= 1: flagged);
a class's is that of its highest-scoring eligible cluster.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..pipeline.writer import label_of
from .clusters import spectral_clusters
from .engine import PhotoAudit
from .measure import CORNERS, rank_correlation, top_share_iou

FLAG_CORNER = 0.2  # 3.2 times a corner's share of the frame
FLAG_BORDER = 0.6
FLAG_IN_BOXES = 0.5
BOX_CONCENTRATION = 1.5
FLAG_FIXED_PLACE = 0.8
FIXED_RADIUS = 0.2
OFF_CENTRE = 0.3
MIN_FLAG_SIZE = 3
MIN_FLAG_SHARE = 0.1
TYPICAL = 6
TOP_SHARE = 0.2

CORNER_WORDS = {name: name.replace("_", "-") for name in CORNERS}


@dataclass
class Findings:
    """``report``: the JSON document; ``maps``: (N, G, G) float16 rows (``photos[*].map_row``);
    ``predicted_maps``: the predicted class's map for wrong photos (``photos[*].predicted_map_row``);
    ``compared_maps``: the second model's maps (same rows), or None."""

    report: dict[str, Any]
    maps: np.ndarray
    predicted_maps: np.ndarray
    compared_maps: np.ndarray | None


def _number(value: float | None, digits: int = 4) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return sum(kept) / len(kept) if kept else None


def _grid_list(grid: torch.Tensor) -> list[list[float]]:
    return [[round(float(v), 5) for v in row] for row in grid]


def region_figures(views: Sequence[Any]) -> dict[str, Any]:
    """Mean energy shares of some photos' maps (a class, a cluster)."""
    corners = {name: _number(_mean([v.corners[i] for v in views])) for i, name in enumerate(CORNERS)}
    with_boxes = [v for v in views if v.in_boxes is not None]
    return {
        "energy_border": _number(_mean([v.border for v in views])),
        "energy_corners": corners,
        "energy_in_boxes": _number(_mean([v.in_boxes for v in with_boxes])),
        "box_area": _number(_mean([v.box_area for v in with_boxes])),
        "photos_with_boxes": len(with_boxes),
    }


def flags(
    figures: dict[str, Any], peak_consistency: float | None, peak: tuple[float, float]
) -> tuple[list[str], float]:
    """The reasons a group of maps looks like a shortcut, and its shortcut score (see the module)."""
    reasons: list[str] = []
    ratios = [0.0]
    corners = {k: v for k, v in figures["energy_corners"].items() if v is not None}
    if corners:
        corner, share = max(corners.items(), key=lambda kv: kv[1])
        ratios.append(share / FLAG_CORNER)
        if share >= FLAG_CORNER:
            reasons.append(f"{share:.0%} of the map's energy in the {CORNER_WORDS[corner]} corner (6% of the frame)")
    border = figures["energy_border"]
    if border is not None:
        ratios.append(border / FLAG_BORDER)
        if border >= FLAG_BORDER:
            reasons.append(f"{border:.0%} of the map's energy on the border (44% of the frame)")
    inside, area = figures["energy_in_boxes"], figures["box_area"]
    if inside is not None and area is not None:
        limit = min(FLAG_IN_BOXES, BOX_CONCENTRATION * area)
        ratios.append((1 - inside) / max(1e-6, 1 - limit))
        if inside < limit:
            reasons.append(f"only {inside:.0%} of the map's energy inside the object's boxes ({area:.0%} of the frame)")
    off = math.hypot(peak[0] - 0.5, peak[1] - 0.5)
    if peak_consistency is not None and off >= OFF_CENTRE:
        ratios.append(peak_consistency / FLAG_FIXED_PLACE)
        if peak_consistency >= FLAG_FIXED_PLACE:
            reasons.append(
                f"the map peaks at the same off-centre place (x {peak[1]:.2f}, y {peak[0]:.2f} of the frame) "
                f"in {peak_consistency:.0%} of its photos"
            )
    return reasons, max(ratios)


def _peak_of(grid: torch.Tensor) -> tuple[float, float]:
    size = grid.shape[-1]
    flat = int(grid.flatten().argmax())
    return ((flat // size + 0.5) / size, (flat % size + 0.5) / size)


def _class_figures(
    index: int, rows: list[int], photos: Sequence[PhotoAudit], grids: torch.Tensor, labels: Any
) -> tuple[dict[str, Any], dict[int, int]]:
    views = [photos[r].views[0] for r in rows]
    members = grids[rows].float()
    truth_known = [photos[r].item.truth is not None for r in rows]
    right = sum(
        1 for r, known in zip(rows, truth_known, strict=True) if known and photos[r].views[0].predicted == index
    )
    labels_of_clusters = spectral_clusters(members)
    cluster_of: dict[int, int] = {}
    clusters = []
    for number in range(int(labels_of_clusters.max()) + 1 if len(rows) else 0):
        inside = (labels_of_clusters == number).nonzero()[:, 0].tolist()
        cluster_views = [views[i] for i in inside]
        mean_map = members[inside].mean(0)
        peak = _peak_of(mean_map)
        near = [
            math.hypot(v.peak[0] - peak[0], v.peak[1] - peak[1]) <= FIXED_RADIUS for v in cluster_views if not v.empty
        ]
        consistency = sum(near) / len(near) if near else None
        figures = region_figures(cluster_views)
        eligible = len(inside) >= max(MIN_FLAG_SIZE, MIN_FLAG_SHARE * len(rows))
        reasons, score = flags(figures, consistency, peak)
        distance = (members[inside] - mean_map).flatten(1).norm(dim=1)
        typical = [photos[rows[inside[i]]].item.key for i in distance.argsort()[:TYPICAL].tolist()]
        for i in inside:
            cluster_of[rows[i]] = number
        clusters.append({
            "index": number, "size": len(inside), "share": _number(len(inside) / len(rows)),
            **figures, "peak": [_number(peak[0]), _number(peak[1])], "peak_consistency": _number(consistency),
            "flagged": bool(eligible and reasons), "reasons": reasons if eligible else [],
            "shortcut_score": _number(score if eligible else 0.0), "eligible": eligible,
            "typical": typical, "mean_map": _grid_list(mean_map),
        })  # fmt: skip
    flagged = [c for c in clusters if c["flagged"]]
    known = sum(truth_known)
    entry = {
        "index": index, "name": label_of(labels, index), "photos": len(rows),
        "photos_with_truth": known, "right": right if known else None,
        "accuracy": _number(right / known) if known else None,
        **region_figures(views),
        "mean_map": _grid_list(members.mean(0)),
        "clusters": clusters, "flagged": bool(flagged),
        "reasons": [f"cluster {c['index']} ({c['size']} photos): {reason}" for c in flagged for reason in c["reasons"]],
        "shortcut_score": _number(max([c["shortcut_score"] or 0.0 for c in clusters if c["eligible"]], default=0.0)),
    }  # fmt: skip
    return entry, cluster_of


def summarise(photos: Sequence[PhotoAudit], labels: Any, run: dict[str, Any], compared_labels: Any = None) -> Findings:
    """The findings of an audit of ``photos`` (in their order); ``run`` holds what was run (model, method,
    layer, ...) and is kept in the report as it is."""
    good = [i for i, p in enumerate(photos) if p.ok]
    grid_size = photos[good[0]].views[0].grid.shape[0] if good else 16
    maps = (
        np.stack([photos[i].views[0].grid for i in good]) if good else np.zeros((0, grid_size, grid_size), np.float16)
    )
    grids = torch.from_numpy(maps.astype(np.float32))
    by_class: dict[int, list[int]] = defaultdict(list)
    for position, i in enumerate(good):
        by_class[photos[i].views[0].explained].append(position)
    classes, cluster_of = [], {}
    for index in sorted(by_class):
        entry, clusters = _class_figures(index, by_class[index], [photos[i] for i in good], grids, labels)
        classes.append(entry)
        cluster_of.update(clusters)
    classes.sort(key=lambda c: (-(c["shortcut_score"] or 0.0), c["index"]))
    predicted_maps: list[np.ndarray] = []
    photo_entries = []
    for position, i in enumerate(good):
        photo_entries.append(_photo_entry(photos[i], labels, position, cluster_of.get(position), predicted_maps))
    failed = [{"path": p.item.path, "key": p.item.key, "error": p.error} for p in photos if not p.ok]
    truth_known = [e for e in photo_entries if e["truth"] is not None]
    report: dict[str, Any] = {
        "version": 1, **run, "grid": grid_size,
        "summary": {
            "photos": len(photos), "audited": len(good), "failed": len(failed),
            "photos_with_truth": len(truth_known),
            "accuracy": _number(_mean([1.0 if e["right"] else 0.0 for e in truth_known])),
            "classes": len(classes), "flagged_classes": sum(1 for c in classes if c["flagged"]),
            "right_for_wrong_reason": sum(1 for e in photo_entries if e["right_for_wrong_reason"]),
        },
        "classes": classes, "photos": photo_entries, "failed": failed,
    }  # fmt: skip
    compared = None
    if good and len(photos[good[0]].views) > 1:
        compared = np.stack([photos[i].views[1].grid for i in good])
        report["comparison"] = _comparison(
            [photos[i] for i in good], grids, torch.from_numpy(compared.astype(np.float32)), labels, compared_labels
        )
    predicted = np.stack(predicted_maps) if predicted_maps else np.zeros((0, grid_size, grid_size), np.float16)
    return Findings(report, maps, predicted, compared)


def _photo_entry(
    photo: PhotoAudit, labels: Any, row: int, cluster: int | None, predicted_maps: list[np.ndarray]
) -> dict[str, Any]:
    view, truth = photo.views[0], photo.item.truth
    right = None if truth is None else view.predicted == truth
    outside = None
    if right and view.in_boxes is not None and view.box_area is not None:
        outside = view.in_boxes < min(FLAG_IN_BOXES, BOX_CONCENTRATION * view.box_area)
    predicted_row = None
    if view.predicted_grid is not None:
        predicted_row = len(predicted_maps)
        predicted_maps.append(view.predicted_grid)
    return {
        "path": photo.item.path, "key": photo.item.key,
        "truth": None if truth is None else {"index": truth, "label": label_of(labels, truth)},
        "predicted": {"index": view.predicted, "label": label_of(labels, view.predicted),
                      "probability": _number(view.probability)},
        "explained": {"index": view.explained, "label": label_of(labels, view.explained),
                      "probability": _number(view.explained_probability)},
        "right": right, "right_for_wrong_reason": outside,
        "energy_border": _number(view.border),
        "energy_corners": {name: _number(view.corners[i]) for i, name in enumerate(CORNERS)},
        "energy_in_boxes": _number(view.in_boxes), "box_area": _number(view.box_area),
        "peak": [_number(view.peak[0]), _number(view.peak[1])], "empty_map": view.empty,
        "cluster": cluster, "map_row": row, "predicted_map_row": predicted_row,
    }  # fmt: skip


def _comparison(
    photos: Sequence[PhotoAudit], grids_a: torch.Tensor, grids_b: torch.Tensor, labels: Any, labels_b: Any
) -> dict[str, Any]:
    correlation = rank_correlation(grids_a, grids_b)
    overlap = top_share_iou(grids_a, grids_b, TOP_SHARE)
    entries: list[dict[str, Any]] = []
    by_class: dict[int, list[int]] = defaultdict(list)
    for row, photo in enumerate(photos):
        a, b = photo.views
        truth = photo.item.truth
        entries.append({
            "path": photo.item.path, "key": photo.item.key, "map_row": row,
            "class": {"index": a.explained, "label": label_of(labels, a.explained)},
            "rank_correlation": _number(float(correlation[row])), "top20_iou": _number(float(overlap[row])),
            "predicted": {"index": a.predicted, "label": label_of(labels, a.predicted)},
            "compared_predicted": {"index": b.predicted, "label": label_of(labels_b, b.predicted)},
            "prediction_changed": a.predicted != b.predicted,
            "right": None if truth is None else a.predicted == truth,
            "compared_right": None if truth is None else b.predicted == truth,
        })  # fmt: skip
        by_class[a.explained].append(row)
    classes: list[dict[str, Any]] = []
    for index, rows in sorted(by_class.items()):
        order = sorted(rows, key=lambda r: (_sort_value(entries[r]["rank_correlation"]), entries[r]["key"]))
        classes.append({
            "index": index, "name": label_of(labels, index), "photos": len(rows),
            "rank_correlation": _number(_mean([entries[r]["rank_correlation"] for r in rows])),
            "top20_iou": _number(_mean([entries[r]["top20_iou"] for r in rows])),
            "prediction_changes": sum(1 for r in rows if entries[r]["prediction_changed"]),
            "by_disagreement": [entries[r]["key"] for r in order],
            "mean_map": _grid_list(grids_a[rows].mean(0)), "compared_mean_map": _grid_list(grids_b[rows].mean(0)),
        })  # fmt: skip
    classes.sort(key=lambda c: (_sort_value(c["rank_correlation"]), c["index"]))
    return {
        "rank_correlation": _number(_mean([e["rank_correlation"] for e in entries])),
        "top20_iou": _number(_mean([e["top20_iou"] for e in entries])),
        "prediction_changes": sum(1 for e in entries if e["prediction_changed"]),
        "photos": entries, "classes": classes,
    }  # fmt: skip


def _sort_value(value: float | None) -> float:
    return 2.0 if value is None else value
