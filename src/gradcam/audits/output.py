"""Write an audit: ``audit.json``, the map arrays, PNGs of the mean maps, and ``audit.html``.

Pictures of photos (a class's typical photos, wrong predictions, comparisons) are drawn at the end from
the maps kept on the grid: only the few photos the page shows are read again, so memory does not grow
with the dataset.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..io.files import write_atomic
from ..io.images import model_view
from ..io.models import LoadedModel
from ..pipeline.local import write_json_atomic
from ..pipeline.writer import save_npy_atomic, slug
from ..render.viz import colorize, overlay, to_pil
from .engine import PhotoAudit, decode_for_audit
from .findings import Findings

PICTURE_SIDE = 128
PAGE_CLASSES = 60  # classes given a page with photos (highest shortcut score first); all are in audit.json
PAGE_PHOTOS = 24  # photos per list on the page (wrong predictions, right for the wrong reason, ...)


def heat_picture(grid: Any, side: int = PICTURE_SIDE, colormap: str = "jet") -> Image.Image:
    """A mean map (G, G) as a colour picture, scaled to its own maximum."""
    heat = torch.as_tensor(np.asarray(grid, dtype=np.float32))
    heat = F.interpolate(heat[None, None], size=(side, side), mode="bilinear", align_corners=False)[0, 0]
    peak = float(heat.max())
    colour = colorize(heat / peak if peak > 0 else heat, colormap)
    return to_pil((colour * 255).round().to(torch.uint8))


def photo_picture(path: str, bundle: LoadedModel, grid: Any, side: int = PICTURE_SIDE) -> Image.Image | None:
    """The photo as the model saw it (its crop), ``side`` pixels square, with the map ``grid`` over it."""
    decoded = decode_for_audit(path, bundle.preprocessing)
    if decoded.input is None:
        return None
    view = model_view(decoded.input, bundle.preprocessing)
    view = F.interpolate(view[None].float(), size=(side, side), mode="bilinear", align_corners=False)[0]
    heat = torch.as_tensor(np.asarray(grid, dtype=np.float32))
    heat = F.interpolate(heat[None, None], size=(side, side), mode="bilinear", align_corners=False)[0, 0]
    peak = float(heat.max())
    return to_pil(overlay(view.round().clamp(0, 255).to(torch.uint8), heat / peak if peak > 0 else heat, 0.45))


def data_uri(picture: Image.Image, format: str = "JPEG") -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format=format, **({"quality": 85} if format == "JPEG" else {}))
    kind = "jpeg" if format == "JPEG" else "png"
    return f"data:image/{kind};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def _save_png(picture: Image.Image, path: Path) -> None:
    write_atomic(path, lambda temporary: picture.save(temporary, format="PNG"))


def write_outputs(
    findings: Findings, out: Path, photos: Mapping[str, PhotoAudit], bundles: Sequence[LoadedModel]
) -> None:
    """Everything an audit writes into ``out`` (see the module's docstring)."""
    out.mkdir(parents=True, exist_ok=True)
    report = findings.report
    save_npy_atomic(findings.maps, out / "maps.npy")
    save_npy_atomic(findings.predicted_maps, out / "predicted_maps.npy")
    if findings.compared_maps is not None:
        save_npy_atomic(findings.compared_maps, out / "compared_maps.npy")
    folder = out / "maps"
    folder.mkdir(exist_ok=True)
    for entry in report["classes"]:
        name = f"class-{entry['index']}-{slug(entry['name'])}"
        entry["picture"] = f"maps/{name}-mean.png"
        _save_png(heat_picture(entry["mean_map"]), out / entry["picture"])
        for cluster in entry["clusters"]:
            cluster["picture"] = f"maps/{name}-cluster-{cluster['index']}.png"
            _save_png(heat_picture(cluster["mean_map"]), out / cluster["picture"])
    for entry in report.get("comparison", {}).get("classes", []):
        name = f"class-{entry['index']}-{slug(entry['name'])}"
        entry["compared_picture"] = f"maps/{name}-compared-mean.png"
        _save_png(heat_picture(entry["compared_mean_map"]), out / entry["compared_picture"])
    write_json_atomic(report, out / "audit.json")
    from ..render.audit_page import audit_page

    pictures = _Pictures(out, photos, bundles, findings)
    html = audit_page(report, pictures)
    write_atomic(out / "audit.html", lambda temporary: temporary.write_text(html, encoding="utf-8"))


class _Pictures:
    """Data URIs of the pictures the page shows, drawn when first asked for."""

    def __init__(
        self, out: Path, photos: Mapping[str, PhotoAudit], bundles: Sequence[LoadedModel], findings: Findings
    ) -> None:
        self.out, self.photos, self.bundles, self.findings = out, photos, bundles, findings
        self.rows = {entry["key"]: entry for entry in findings.report["photos"]}

    def file(self, relative: str) -> str:
        return data_uri(Image.open(self.out / relative), "PNG")

    def photo(self, key: str, which: str = "map") -> str | None:
        """``which``: ``map`` (the audited class's), ``predicted`` (the predicted class's) or ``compared``."""
        entry, audit_of = self.rows.get(key), self.photos.get(key)
        if entry is None or audit_of is None:
            return None
        if which == "predicted":
            row = entry["predicted_map_row"]
            grid = self.findings.predicted_maps[row] if row is not None else self.findings.maps[entry["map_row"]]
        elif which == "compared" and self.findings.compared_maps is not None:
            grid = self.findings.compared_maps[entry["map_row"]]
        else:
            grid = self.findings.maps[entry["map_row"]]
        bundle = self.bundles[1] if which == "compared" and len(self.bundles) > 1 else self.bundles[0]
        picture = photo_picture(audit_of.item.path, bundle, grid)
        return data_uri(picture) if picture is not None else None
