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
- ``agreement`` (what the maps do, at any place of the frame): the class's (or cluster's) maps agree with
  each other across its different photos (:func:`~gradcam.audits.measure.agreement`, around the mean map of
  the other classes' photos) by at least ``FLAG_AGREEMENT``, and by ``AGREEMENT_MARGIN`` more than the maps
  of the runner-up class on the same photos agree. Photos of one class often look alike (so its maps
  agree somewhat: 0.1-0.45 on the clean classes of the planted suite); a mark that stays in one place
  whatever the photo shows makes them agree almost fully (0.75-0.87), while the same photos' maps for
  another class still follow their content. Thresholds chosen on the suite's "corner" and "centre" kinds.
Only clusters of at least ``MIN_FLAG_SIZE`` photos and ``MIN_FLAG_SHARE`` of their class are flagged.
A cluster's ``shortcut_score`` is its largest ratio of a rule's figure to its threshold (>= 1: flagged);
a class's is that of its highest-scoring eligible cluster.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..pipeline.naming import label_of
from .clusters import spectral_clusters
from .engine import Columns, Measured
from .measure import CORNERS, agreement, peak_of, rank_correlation, top_share_iou

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
FLAG_AGREEMENT = 0.6
AGREEMENT_MARGIN = 0.25
TOP_SHARE = 0.2

CORNER_WORDS = {name: name.replace("_", "-") for name in CORNERS}
# a group judged by its agreement alone (the class as a whole: the region rules judge its clusters)
_NO_REGIONS: dict[str, Any] = {"energy_corners": {}, "energy_border": None, "energy_in_boxes": None, "box_area": None}


@dataclass
class Findings:
    """An audit's findings. ``head``: ``audit.json`` without its per-photo lists (``photos``,
    ``comparison.photos``), which :meth:`photo_entries` and :meth:`comparison_entries` give one at a time,
    so a report of 100,000 photos is written without holding it; ``measured``: the columns they come from."""

    head: dict[str, Any]
    measured: Measured
    labels: Any
    compared_labels: Any
    cluster_of: np.ndarray  # (N,) int32, -1 none
    right: np.ndarray  # (N,) int8: 1 right, 0 wrong, -1 truth unknown
    wrong_reason: np.ndarray  # (N,) int8: 1 right for the wrong reason, 0 not, -1 unknown (no boxes, no truth)
    rank_correlation: np.ndarray | None = None
    top20_iou: np.ndarray | None = None

    @property
    def maps(self) -> np.ndarray:
        return self.measured.models[0].grids

    @property
    def predicted_maps(self) -> np.ndarray:
        return self.measured.models[0].predicted_grids

    @property
    def compared_maps(self) -> np.ndarray | None:
        return self.measured.models[1].grids if len(self.measured.models) > 1 else None

    def photo_entry(self, row: int) -> dict[str, Any]:
        """``photos[row]`` of ``audit.json``."""
        view, item = self.measured.models[0], self.measured.item(row)
        truth = item.truth
        predicted_row = int(view.predicted_rows[row])
        return {
            "path": item.path, "key": item.key,
            "truth": None if truth is None else {"index": truth, "label": label_of(self.labels, truth)},
            "predicted": _class(self.labels, view.predicted[row], view.probability[row]),
            "explained": _class(self.labels, view.explained[row], view.explained_probability[row]),
            "right": _flag(self.right[row]), "right_for_wrong_reason": _flag(self.wrong_reason[row]),
            "energy_border": _number(view.border[row]),
            "energy_corners": {name: _number(view.corners[row, i]) for i, name in enumerate(CORNERS)},
            "energy_in_boxes": _number(view.in_boxes[row]), "box_area": _number(view.box_area[row]),
            "peak": [_number(view.peak[row, 0]), _number(view.peak[row, 1])], "empty_map": bool(view.empty[row]),
            "cluster": None if self.cluster_of[row] < 0 else int(self.cluster_of[row]), "map_row": row,
            "predicted_map_row": None if predicted_row < 0 else predicted_row,
        }  # fmt: skip

    def photo_entries(self) -> Iterator[dict[str, Any]]:
        return (self.photo_entry(row) for row in range(len(self.measured.positions)))

    def comparison_entry(self, row: int) -> dict[str, Any]:
        """``comparison.photos[row]`` of ``audit.json``."""
        assert self.rank_correlation is not None and self.top20_iou is not None
        a, b = self.measured.models
        item = self.measured.item(row)
        truth = item.truth
        return {
            "path": item.path, "key": item.key, "map_row": row,
            "class": _class(self.labels, a.explained[row]),
            "rank_correlation": _number(self.rank_correlation[row]), "top20_iou": _number(self.top20_iou[row]),
            "predicted": _class(self.labels, a.predicted[row]),
            "compared_predicted": _class(self.compared_labels, b.predicted[row]),
            "prediction_changed": bool(a.predicted[row] != b.predicted[row]),
            "right": None if truth is None else bool(a.predicted[row] == truth),
            "compared_right": None if truth is None else bool(b.predicted[row] == truth),
        }  # fmt: skip

    def comparison_entries(self) -> Iterator[dict[str, Any]]:
        return (self.comparison_entry(row) for row in range(len(self.measured.positions)))


def _class(labels: Any, index: Any, probability: Any = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"index": int(index), "label": label_of(labels, int(index))}
    if probability is not None:
        entry["probability"] = _number(probability)
    return entry


def _flag(value: Any) -> bool | None:
    return None if value < 0 else bool(value)


def _number(value: Any, digits: int = 4) -> float | None:
    if value is None:
        return None
    value = float(value)
    return round(value, digits) if math.isfinite(value) else None


def _mean(values: Any) -> float | None:
    kept = np.asarray(values, dtype=np.float64)
    kept = kept[np.isfinite(kept)]
    return float(kept.mean()) if kept.size else None


def _grid_list(grid: Any) -> list[list[float]]:
    return [[round(float(v), 5) for v in row] for row in np.asarray(grid)]


def region_figures(view: Columns, rows: np.ndarray) -> dict[str, Any]:
    """Mean energy shares of some photos' maps (a class, a cluster): ``rows`` of ``view``."""
    corners = {name: _number(_mean(view.corners[rows, i])) for i, name in enumerate(CORNERS)}
    boxed = rows[np.isfinite(view.box_area[rows])]
    return {
        "energy_border": _number(_mean(view.border[rows])),
        "energy_corners": corners,
        "energy_in_boxes": _number(_mean(view.in_boxes[boxed])),
        "box_area": _number(_mean(view.box_area[boxed])),
        "photos_with_boxes": len(boxed),
    }


def flags(
    figures: dict[str, Any],
    peak_consistency: float | None,
    peak: tuple[float, float],
    agreed: dict[str, Any] | None = None,
) -> tuple[list[str], float]:
    """The reasons a group of maps looks like a shortcut, and its shortcut score (see the module);
    ``agreed``: its :func:`agreement_figures`."""
    reasons: list[str] = []
    ratios = [0.0]
    if agreed is not None and agreed["maps"] is not None:
        shared, control = agreed["maps"], agreed["runner_up_maps"]
        margin_met = control is None or shared - control >= AGREEMENT_MARGIN
        if margin_met:
            ratios.append(shared / FLAG_AGREEMENT)
        if shared >= FLAG_AGREEMENT and margin_met:
            where = agreed["place"]
            against = "" if control is None else f"; the same photos' maps for their runner-up class: {control:.0%}"
            reasons.append(
                f"its maps agree across {agreed['photos']} different photos: {shared:.0%} of their variation is shared "
                f"(around x {where[1]:.2f}, y {where[0]:.2f} of the frame){against}"
            )
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
        limit = outside_limit(area)
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


def agreement_figures(
    grids: np.ndarray, control_grids: np.ndarray, centre: torch.Tensor, control_centre: torch.Tensor
) -> dict[str, Any]:
    """``agreement`` of a group's maps (``maps``) and of its photos' runner-up maps (``runner_up_maps``),
    each around the other classes' mean map; empty maps left out. ``place``: the (y, x) peak of the group's
    mean map minus ``centre``, where its maps agree: the centre of the cells with at least half its largest
    excess (the single largest cell sits on an edge of a mark as often as on its middle)."""
    maps = torch.from_numpy(grids.astype(np.float32))
    control = torch.from_numpy(control_grids.astype(np.float32))
    maps, control = maps[maps.flatten(1).sum(1) > 0], control[control.flatten(1).sum(1) > 0]
    residual = (maps.mean(0) - centre) if len(maps) else torch.zeros_like(centre)
    excess = residual.clamp(min=0)
    y, x = peak_of(excess[None], tolerance=0.5)[0].tolist()  # the centre of the cells of at least half the peak
    return {
        "maps": _number(agreement(maps, centre)), "runner_up_maps": _number(agreement(control, control_centre)),
        "photos": len(maps), "place": [_number(y), _number(x)],
    }  # fmt: skip


def outside_limit(box_area: Any) -> Any:
    """Below this share of energy inside the boxes, a map is about something else than the object."""
    return np.minimum(FLAG_IN_BOXES, BOX_CONCENTRATION * box_area)


def _class_figures(
    index: int, rows: np.ndarray, measured: Measured, right: np.ndarray, labels: Any, cluster_of: np.ndarray
) -> dict[str, Any]:
    view = measured.models[0]
    others = view.explained != index
    centre = torch.from_numpy(view.grids[others].astype(np.float32).mean(0)) if others.any() else None
    control_centre = torch.from_numpy(view.control_grids[others].astype(np.float32).mean(0)) if others.any() else None

    def agreed(group: np.ndarray) -> dict[str, Any] | None:
        if centre is None or control_centre is None:
            return None  # one class only: nothing to compare its maps with
        return agreement_figures(view.grids[group], view.control_grids[group], centre, control_centre)

    members = view.grids[rows].astype(np.float32)
    known = int((right[rows] >= 0).sum())
    correct = int((right[rows] == 1).sum())
    assignment = spectral_clusters(torch.from_numpy(members)).numpy()
    clusters = []
    for number in range(int(assignment.max()) + 1 if len(rows) else 0):
        inside = np.nonzero(assignment == number)[0]
        members_rows = rows[inside]
        mean_map = members[inside].mean(0)
        y, x = peak_of(torch.from_numpy(mean_map)[None])[0].tolist()
        peak = (y, x)
        full = members_rows[~view.empty[members_rows]]
        near = np.hypot(view.peak[full, 0] - peak[0], view.peak[full, 1] - peak[1]) <= FIXED_RADIUS
        consistency = float(near.mean()) if len(full) else None
        figures = region_figures(view, members_rows)
        eligible = len(inside) >= max(MIN_FLAG_SIZE, MIN_FLAG_SHARE * len(rows))
        cluster_agreement = agreed(members_rows)
        reasons, score = flags(figures, consistency, peak, cluster_agreement)
        distance = np.linalg.norm((members[inside] - mean_map).reshape(len(inside), -1), axis=1)
        typical = [measured.item(int(members_rows[i])).key for i in np.argsort(distance, kind="stable")[:TYPICAL]]
        cluster_of[members_rows] = number
        clusters.append({
            "index": number, "size": len(inside), "share": _number(len(inside) / len(rows)),
            **figures, "peak": [_number(peak[0]), _number(peak[1])], "peak_consistency": _number(consistency),
            "flagged": bool(eligible and reasons), "reasons": reasons if eligible else [],
            "shortcut_score": _number(score if eligible else 0.0), "eligible": eligible,
            "typical": typical, "mean_map": _grid_list(mean_map), "agreement": cluster_agreement,
        })  # fmt: skip
    flagged = [c for c in clusters if c["flagged"]]
    class_agreement = agreed(rows)
    class_reasons, class_score = flags(_NO_REGIONS, None, (0.5, 0.5), class_agreement)
    if len(rows) < MIN_FLAG_SIZE:
        class_reasons, class_score = [], 0.0
    return {
        "index": index, "name": label_of(labels, index), "photos": len(rows),
        "photos_with_truth": known, "right": correct if known else None,
        "accuracy": _number(correct / known) if known else None,
        **region_figures(view, rows),
        "mean_map": _grid_list(members.mean(0)),
        "clusters": clusters, "flagged": bool(flagged or class_reasons), "agreement": class_agreement, "evidence": None,
        "reasons": [f"all {len(rows)} photos: {reason}" for reason in class_reasons]
        + [f"cluster {c['index']} ({c['size']} photos): {reason}" for c in flagged for reason in c["reasons"]
           if not (class_reasons and c["size"] == len(rows) and reason in class_reasons)],  # said once
        "shortcut_score": _number(
            max([class_score] + [c["shortcut_score"] or 0.0 for c in clusters if c["eligible"]])
        ),
    }  # fmt: skip


def summarise(measured: Measured, labels: Any, run: dict[str, Any], compared_labels: Any = None) -> Findings:
    """The findings of an audit; ``run`` holds what was run (model, method, layer, ...), kept as it is."""
    view = measured.models[0]
    count = len(measured.positions)
    truth = np.array([-1 if measured.item(r).truth is None else measured.item(r).truth for r in range(count)])
    right = np.where(truth < 0, -1, view.predicted == truth).astype(np.int8)
    boxed = np.isfinite(view.in_boxes)
    outside = np.zeros(count, dtype=bool)
    outside[boxed] = view.in_boxes[boxed] < outside_limit(view.box_area[boxed])
    wrong_reason = np.where((right == 1) & boxed, outside, -1).astype(np.int8)
    cluster_of = np.full(count, -1, dtype=np.int32)
    classes = [
        _class_figures(int(index), np.nonzero(view.explained == index)[0], measured, right, labels, cluster_of)
        for index in np.unique(view.explained)
    ]
    classes.sort(key=lambda c: (-(c["shortcut_score"] or 0.0), c["index"]))
    failed = [{"path": measured.items[p].path, "key": measured.items[p].key, "error": e}
              for p, e in sorted(measured.errors.items())]  # fmt: skip
    known = right >= 0
    head: dict[str, Any] = {
        "version": 1, **run, "grid": int(view.grids.shape[-1]) if count else 16,
        "summary": {
            "photos": len(measured.items), "audited": count, "failed": len(failed),
            "photos_with_truth": int(known.sum()),
            "accuracy": _number(float((right[known] == 1).mean())) if known.any() else None,
            "classes": len(classes), "flagged_classes": sum(1 for c in classes if c["flagged"]),
            "right_for_wrong_reason": int((wrong_reason == 1).sum()),
        },
        "classes": classes, "failed": failed,
    }  # fmt: skip
    findings = Findings(head, measured, labels, compared_labels, cluster_of, right, wrong_reason)
    if len(measured.models) > 1:
        _compare(findings)
    return findings


def _compare(findings: Findings) -> None:
    a, b = findings.measured.models
    grids_a, grids_b = torch.from_numpy(a.grids.astype(np.float32)), torch.from_numpy(b.grids.astype(np.float32))
    correlation = rank_correlation(grids_a, grids_b).numpy()
    overlap = top_share_iou(grids_a, grids_b, TOP_SHARE).numpy()
    findings.rank_correlation, findings.top20_iou = correlation, overlap
    changed = a.predicted != b.predicted
    keys = [findings.measured.item(r).key for r in range(len(a))]
    classes: list[dict[str, Any]] = []
    for index in np.unique(a.explained):
        rows = np.nonzero(a.explained == index)[0]
        order = sorted(rows.tolist(), key=lambda r: (_sort_value(_number(correlation[r])), keys[r]))
        classes.append({
            "index": int(index), "name": label_of(findings.labels, int(index)), "photos": len(rows),
            "rank_correlation": _number(_mean(correlation[rows])), "top20_iou": _number(_mean(overlap[rows])),
            "prediction_changes": int(changed[rows].sum()),
            "by_disagreement": [keys[r] for r in order],
            "mean_map": _grid_list(grids_a[rows].mean(0)), "compared_mean_map": _grid_list(grids_b[rows].mean(0)),
        })  # fmt: skip
    classes.sort(key=lambda c: (_sort_value(c["rank_correlation"]), c["index"]))
    findings.head["comparison"] = {
        "rank_correlation": _number(_mean(correlation)), "top20_iou": _number(_mean(overlap)),
        "prediction_changes": int(changed.sum()), "classes": classes,
    }  # fmt: skip


def _sort_value(value: float | None) -> float:
    return 2.0 if value is None else value
