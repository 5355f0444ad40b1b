"""Write an audit: ``audit.json``, the map arrays, PNGs of the mean maps, and ``audit.html``.

Pictures of photos (a class's typical photos, wrong predictions, comparisons) are drawn at the end from
the maps kept on the grid: only the few photos the page shows are read again, so memory does not grow
with the dataset.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..io.files import write_atomic
from ..io.images import DEFAULT_MAX_MEGAPIXELS, model_view
from ..io.models import LoadedModel
from ..pipeline.decode import decode
from ..pipeline.naming import slug
from ..pipeline.writer import save_npy_atomic, save_picture
from ..render.viz import colorize, data_uri, overlay, to_pil
from .findings import Findings

PICTURE_SIDE = 128
PAGE_PHOTOS = 24  # photos per list on the page (wrong predictions, right for the wrong reason, ...)
CHANGED_SHOWN = 200  # predictions that changed, listed on the comparison page


def heat_picture(grid: Any, side: int = PICTURE_SIDE, colormap: str = "jet") -> Image.Image:
    """A mean map (G, G) as a colour picture, scaled to its own maximum."""
    heat = torch.as_tensor(np.asarray(grid, dtype=np.float32))
    heat = F.interpolate(heat[None, None], size=(side, side), mode="bilinear", align_corners=False)[0, 0]
    peak = float(heat.max())
    colour = colorize(heat / peak if peak > 0 else heat, colormap)
    return to_pil((colour * 255).round().to(torch.uint8))


def photo_view(path: str, bundle: LoadedModel, side: int = PICTURE_SIDE, frame: str = "crop") -> torch.Tensor | None:
    """The photo as the model saw it (in ``frame``), ``side`` pixels square, (3, side, side) float in [0, 255]."""
    decoded = decode(Path(path), bundle.preprocessing, DEFAULT_MAX_MEGAPIXELS, frame=frame, picture=False)
    if decoded.input is None:
        return None
    view = model_view(decoded.input, bundle.preprocessing)
    return F.interpolate(view[None].float(), size=(side, side), mode="bilinear", align_corners=False)[0]


def photo_picture(view: torch.Tensor, grid: Any) -> Image.Image:
    """A :func:`photo_view` with the map ``grid`` over it, scaled to its own maximum."""
    side = view.shape[-1]
    heat = torch.as_tensor(np.asarray(grid, dtype=np.float32))
    heat = F.interpolate(heat[None, None], size=(side, side), mode="bilinear", align_corners=False)[0, 0]
    peak = float(heat.max())
    return to_pil(overlay(view.round().clamp(0, 255).to(torch.uint8), heat / peak if peak > 0 else heat, 0.45))


def write_report_json(findings: Findings, path: Path) -> None:
    """``audit.json``, the per-photo lists written one entry at a time (never the whole text in memory)."""

    def write(temporary: Path) -> None:
        with open(temporary, "w", encoding="utf-8") as handle:
            head = {k: v for k, v in findings.head.items() if k != "comparison"}
            handle.write(json.dumps(head, indent=1)[:-2])  # without the closing brace
            handle.write(',\n "photos": [')
            _write_list(handle, findings.photo_entries())
            comparison = findings.head.get("comparison")
            if comparison is not None:
                handle.write(',\n "comparison": ' + json.dumps(comparison, indent=1)[:-2] + ',\n "photos": [')
                _write_list(handle, findings.comparison_entries())
                handle.write("}")
            handle.write("\n}\n")

    write_atomic(path, write)


def _write_list(handle: Any, entries: Any) -> None:
    for number, entry in enumerate(entries):
        handle.write(("\n  " if number == 0 else ",\n  ") + json.dumps(entry))
    handle.write("\n ]")


def write_outputs(
    findings: Findings,
    out: Path,
    bundles: Sequence[LoadedModel],
    evidence_pictures: dict[int, Image.Image] | None = None,
    frame: str = "crop",
    followed_pictures: dict[int, Image.Image] | None = None,
) -> None:
    """Everything an audit writes into ``out`` (see the module's docstring); ``evidence_pictures``: the
    experiments' pictures by class index (``classes[*].evidence.picture``), ``followed_pictures`` those of
    the followed classes (``followed[*].evidence.picture``)."""
    out.mkdir(parents=True, exist_ok=True)
    head = findings.head
    save_npy_atomic(findings.maps, out / "maps.npy")
    save_npy_atomic(findings.predicted_maps, out / "predicted_maps.npy")
    if findings.compared_maps is not None:
        save_npy_atomic(findings.compared_maps, out / "compared_maps.npy")
    folder = out / "maps"
    folder.mkdir(exist_ok=True)
    for entry in head["classes"]:
        name = f"class-{entry['index']}-{slug(entry['name'])}"
        entry["picture"] = f"maps/{name}-mean.png"
        save_picture(heat_picture(entry["mean_map"]), out / entry["picture"], "png")
        for cluster in entry["clusters"]:
            cluster["picture"] = f"maps/{name}-cluster-{cluster['index']}.png"
            save_picture(heat_picture(cluster["mean_map"]), out / cluster["picture"], "png")
        _save_experiment(entry, evidence_pictures, out, name)
    if head.get("followed"):
        save_npy_atomic(findings.measured.models[0].followed_grids, out / "followed_maps.npy")
    for entry in head.get("followed", []):
        name = f"followed-{entry['index']}-{slug(entry['name'])}"
        entry["others_picture"] = f"maps/{name}-others-mean.png"
        save_picture(heat_picture(entry["others_mean_map"]), out / entry["others_picture"], "png")
        entry["picture"] = None
        if entry["mean_map"] is not None:
            entry["picture"] = f"maps/{name}-mean.png"
            save_picture(heat_picture(entry["mean_map"]), out / entry["picture"], "png")
        _save_experiment(entry, followed_pictures, out, name)
    for entry in head.get("comparison", {}).get("classes", []):
        name = f"class-{entry['index']}-{slug(entry['name'])}"
        entry["compared_picture"] = f"maps/{name}-compared-mean.png"
        save_picture(heat_picture(entry["compared_mean_map"]), out / entry["compared_picture"], "png")
    write_report_json(findings, out / "audit.json")
    from ..render.audit_page import audit_page

    html = audit_page(head, page_lists(findings), _Pictures(out, bundles, findings, frame))
    write_atomic(out / "audit.html", lambda temporary: temporary.write_text(html, encoding="utf-8"))


def _save_experiment(entry: dict[str, Any], pictures: dict[int, Image.Image] | None, out: Path, name: str) -> None:
    """The picture of ``entry``'s experiment (a class's or a followed class's, by its index in ``pictures``)
    as ``maps/NAME-experiment.png``, named in its ``evidence``."""
    evidence = entry.get("evidence")
    if evidence is not None and pictures and entry["index"] in pictures:
        evidence["picture"] = f"maps/{name}-experiment.png"
        save_picture(pictures[entry["index"]], out / evidence["picture"], "png")


def page_lists(findings: Findings) -> dict[str, Any]:
    """The few photos the page lists, as ``audit.json`` entries, with the full counts."""
    view = findings.measured.models[0]
    wrong_reason = np.nonzero(findings.wrong_reason == 1)[0]
    wrong_reason = wrong_reason[np.argsort(view.in_boxes[wrong_reason], kind="stable")]
    wrong = np.nonzero(findings.right == 0)[0]
    wrong = wrong[np.argsort(-view.probability[wrong], kind="stable")]
    lists: dict[str, Any] = {
        "boxes": bool(np.isfinite(view.in_boxes).any()), "truth": bool((findings.right >= 0).any()),
        "right_for_wrong_reason": [findings.photo_entry(int(r)) for r in wrong_reason[:PAGE_PHOTOS]],
        "right_for_wrong_reason_count": len(wrong_reason),
        "wrong": [findings.photo_entry(int(r)) for r in wrong[:PAGE_PHOTOS]], "wrong_count": len(wrong),
    }  # fmt: skip
    if len(findings.measured.models) > 1:
        changed = np.nonzero(findings.measured.models[1].predicted != view.predicted)[0]
        lists["changed"] = [findings.comparison_entry(int(r)) for r in changed[:CHANGED_SHOWN]]
        lists["changed_count"] = len(changed)
    return lists


class _Pictures:
    """Data URIs of the pictures the page shows, drawn when first asked for."""

    def __init__(self, out: Path, bundles: Sequence[LoadedModel], findings: Findings, frame: str = "crop") -> None:
        self.out, self.bundles, self.findings = out, bundles, findings
        self.rows = {findings.measured.item(r).key: r for r in range(len(findings.measured.positions))}
        # a photo is often shown twice in a row (true and predicted class, audited and compared model)
        self.view = lru_cache(maxsize=32)(lambda row, number: photo_view(findings.measured.item(row).path,
                                                                         bundles[number], frame=frame))  # fmt: skip

    def file(self, relative: str) -> str:
        return data_uri(Image.open(self.out / relative), "PNG")

    def photo(self, key: str, which: str = "map") -> str | None:
        """``which``: ``map`` (the audited class's), ``predicted`` (the predicted class's), ``compared`` or
        ``followed:K`` (the K-th followed class's)."""
        row = self.rows.get(key)
        if row is None:
            return None
        columns = self.findings.measured.models[0]
        grid = columns.grids[row]
        if which.startswith("followed:"):
            grid = columns.followed_grids[row, int(which.split(":")[1])]
        elif which == "predicted" and columns.predicted_rows[row] >= 0:
            grid = columns.predicted_grids[columns.predicted_rows[row]]
        elif which == "compared" and len(self.findings.measured.models) > 1:
            grid = self.findings.measured.models[1].grids[row]
        seen = self.view(row, 1 if which == "compared" and len(self.bundles) > 1 else 0)
        return data_uri(photo_picture(seen, grid)) if seen is not None else None
