"""Explain one photo with a detector (``yolo:`` models, Hugging Face detectors) or a segmentation model: every
box it keeps (every class it paints) gets its own map, from one forward pass; written as one picture of all
boxes, one picture per box and the maps as an array, with a record per box (class, confidence, box on the
photo) in the run's manifest. A class region is drawn by its outline, its caption saying how much it covers.

Example:
    >>> record = explain_detections(bundle, Path("street.jpg"), "street", RunOptions(out=Path("out")))  # doctest: +SKIP
    >>> [(t.label, t.score, t.box) for t in record.targets]
    [('person', 0.91, (12.0, 40.5, 210.0, 470.0)), ('car', 0.84, (300.2, 210.0, 611.0, 402.5))]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..detection import Detection, explain_boxes
from ..io.images import read_image
from ..io.models import LoadedModel
from ..render.detections import box_picture, boxes_picture
from ..render.viz import drawing_factor
from ..segmentation import SegmentationDetector
from .naming import label_of, target_stem
from .options import RunOptions, UsageError, parse_target
from .records import PhotoRecord, TargetRecord
from .writer import save_npy_atomic, save_picture


def explain_detections(
    bundle: LoadedModel, path: Path, key: str, options: RunOptions, progress: Any = None
) -> PhotoRecord:
    """One photo through ``bundle``'s detector with ``options`` (method, layer, ``--conf``, ``--max-boxes``,
    counterfactual, eigen_smooth, alpha, colormap, overwrite); raises ValueError or OSError in one line."""
    path = Path(path)
    photo = read_image(path, max_megapixels=options.max_megapixels, name=str(path))
    parameter = next(bundle.model.parameters())
    pixels, box = bundle.extra["frame"](photo)  # the detector's own resizing (a letterbox for YOLO)
    net, labels = bundle.model, bundle.labels
    if "queries" in bundle.extra:  # an open-vocabulary detector: the text queries are its classes
        net, labels = bundle.extra["queries"](options.prompts), list(options.prompts)
    detector = replace(bundle.extra["detector"], conf=options.detection.conf, max_boxes=options.detection.max_boxes,
                       only=detection_classes(options.target, labels))  # fmt: skip
    layer = bundle.layer_for(options.layer)
    found = explain_boxes(net, pixels[None].to(parameter.device, parameter.dtype), detector,
                          options.cam_method(), layer, eigen_smooth=options.eigen_smooth,
                          counterfactual=options.counterfactual)  # fmt: skip
    options.out.mkdir(parents=True, exist_ok=True)
    maps = box.map_to_photo(found.maps.detach().float().cpu()) if found.detections else torch.zeros(0)
    regions = _regions_on_photo(found.detections, box, tuple(pixels.shape[1:]))
    semantic = isinstance(detector, SegmentationDetector)  # a class's region, not an instance in its box
    boxes = [box.box_to_photo(d.box) for d in found.detections]
    names = [label_of(labels, d.label) for d in found.detections]
    empty = [not bool(heat.any()) for heat in maps] if found.detections else []
    areas: list[float | None] = (
        [round(float(r.float().mean()), 4) for r in regions] if regions is not None else [None] * len(boxes)
    )
    captions = [
        f"{name} {_confidence(d.confidence)}{_share(area)}{', empty map' if blank else ''}"
        for name, d, area, blank in zip(names, found.detections, areas, empty, strict=True)
    ]
    all_boxes = options.out / f"{key}.{options.method}.boxes.png"
    map_file = options.out / f"{key}.{options.method}.maps.npy"
    stems = [
        options.out / f"{target_stem(key, options.method, d.label, name)}.box{k}.png"
        for k, (d, name) in enumerate(zip(found.detections, names, strict=True))
    ]
    existing = [p for p in (all_boxes, map_file, *stems) if p.exists()]
    if existing and not options.overwrite:
        raise FileExistsError(f"{existing[0]} exists; pass --overwrite to replace it")
    targets = []
    if found.detections:
        small = box.inside(found.maps.detach().float().cpu())  # (K, h, w) at the model's resolution
        save_npy_atomic(small.numpy().astype(np.float16), map_file)
        drawn = _enlarged(photo, maps, boxes, regions)  # a small photo is drawn larger, legible
        picture = boxes_picture(drawn.photo, drawn.maps, drawn.boxes, captions, options.alpha, drawn.regions, semantic)
        save_picture(picture, all_boxes, "png")
        for k, detection in enumerate(found.detections):
            region = None if drawn.regions is None else drawn.regions[k]
            picture = box_picture(drawn.photo, drawn.maps[k], drawn.boxes[k], captions[k], options.alpha, region,
                                  frame=not semantic)  # fmt: skip
            save_picture(picture, stems[k], "png")
            files = {"overlay": str(stems[k]), "boxes": str(all_boxes), "map": str(map_file)}
            targets.append(TargetRecord(index=detection.label, label=names[k], score=round(detection.confidence, 6),
                                        files=files, box=_rounded(boxes[k]), area=areas[k]))  # fmt: skip
    layer_name = layer if isinstance(layer, str) else None
    return PhotoRecord(path=str(path), status="ok", method=options.method, layer=layer_name,
                       size=(photo.width, photo.height), targets=tuple(targets), kind="detection")  # fmt: skip


@dataclass(frozen=True)
class _Drawn:
    """What a detector's pictures are drawn on: the photo, its maps (K, H, W), boxes and regions, enlarged
    together by a whole factor when the photo is small (:func:`gradcam.render.viz.drawing_factor`)."""

    photo: Image.Image
    maps: torch.Tensor
    boxes: list[tuple[float, float, float, float]]
    regions: list[torch.Tensor] | None


def _enlarged(photo: Image.Image, maps: torch.Tensor, boxes: list, regions: list[torch.Tensor] | None) -> _Drawn:
    factor = drawing_factor(photo.size)
    if factor == 1:
        return _Drawn(photo, maps, boxes, regions)
    size = (photo.height * factor, photo.width * factor)
    return _Drawn(
        photo.resize((size[1], size[0]), Image.Resampling.NEAREST),
        F.interpolate(maps[None], size=size, mode="bilinear", align_corners=False)[0],
        [(x1 * factor, y1 * factor, x2 * factor, y2 * factor) for x1, y1, x2, y2 in boxes],
        None if regions is None else [r.repeat_interleave(factor, 0).repeat_interleave(factor, 1) for r in regions],
    )


def detection_classes(target: str | None, labels: Sequence[str] | None) -> tuple[int, ...]:
    """``--target`` for a detector: the classes whose boxes (a segmentation model's regions) to keep, by name or
    index, comma-separated; () keeps every class. ``top3`` and ``all`` mean nothing here: a UsageError."""
    if target is None or not target.strip():
        return ()
    chosen = parse_target(target, labels, len(labels) if labels is not None else None)
    if not isinstance(chosen, list):
        raise UsageError(f"--target {target}: a detector keeps its own boxes; name the classes to keep (person,car)")
    return tuple(chosen)


def _regions_on_photo(detections: Sequence[Detection], box: Any, size: tuple[int, int]) -> list[torch.Tensor] | None:
    """A segmentation model's class regions (each (h, w) at its output's resolution) on the photo's pixels:
    widened to the input's ``size`` by nearest neighbours, then carried back as the maps are (a letterbox's
    padding cut away); None for boxes."""
    if not detections or any(d.region is None for d in detections):
        return None
    masks = torch.stack([d.region for d in detections if d.region is not None]).float().cpu()
    on_input = F.interpolate(masks[None], size=size, mode="nearest")[0]
    return list(box.map_to_photo(on_input) >= 0.5)


def _rounded(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (round(v, 2) for v in box)
    return (x1, y1, x2, y2)


def _share(area: float | None) -> str:
    """How much of the photo a segmentation class (an instance's mask) covers; nothing for a box."""
    return "" if area is None else f", {area:.0%} of the image"


def _confidence(value: float) -> str:
    """0.87; a tiny confidence (random weights, a low --conf) as 2e-04 rather than a misleading 0.00."""
    return f"{value:.2f}" if value >= 0.01 else f"{value:.0e}"
