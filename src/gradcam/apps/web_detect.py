"""The web app's path for detectors (``yolo:`` and Hugging Face object-detection models): each box the
detector keeps gets its own map, drawn as the command line draws it (:mod:`gradcam.pipeline.detect`).

The confidence threshold and the number of boxes come from the "Method options" box (``conf=0.1
max_boxes=5``), beside the methods' own options.

Example:
    >>> overlays, found, files, layer = explain_detector_photo(bundle, "yolo:best.pt", path, ["gradcam"],
    ...                                                        0.5, "jet", out_dir, "conf=0.3")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..io.files import write_atomic
from ..io.images import ImageReadError
from ..io.models import LoadedModel
from ..pipeline.detect import explain_detections
from ..pipeline.kinds import DETECTION
from ..pipeline.manifest import now, run_manifest
from ..pipeline.method_options import WEB_BOUNDS, methods_with_options
from ..pipeline.options import DetectionSettings, RunOptions, UsageError
from .web_state import AppError, typed_prompts

MAX_BOXES = 12  # the page draws at most this many boxes a method


def detection_settings(method_options: str) -> tuple[DetectionSettings, list[str]]:
    """``conf=`` and ``max_boxes=`` taken out of the method options (the rest is the methods')."""
    settings, rest = DetectionSettings(), []
    for item in re.split(r"[;\s]+", method_options.strip()) if method_options.strip() else []:
        key, _, value = item.partition("=")
        try:
            if key.strip() == "conf":
                settings = DetectionSettings(float(value), settings.max_boxes)
            elif key.strip() == "max_boxes":
                settings = DetectionSettings(settings.conf, int(value))
            else:
                rest.append(item)
        except ValueError:
            raise AppError(f"{item}: give conf=C (0 to 1) or max_boxes=N (1 to {MAX_BOXES})") from None
    if not 0 <= settings.conf <= 1 or not 1 <= settings.max_boxes <= MAX_BOXES:
        raise AppError(f"conf must be between 0 and 1 and max_boxes between 1 and {MAX_BOXES}")
    return settings, rest


def explain_detector_photo(
    bundle: LoadedModel,
    model_name: str,
    file: Path,
    methods: list[str],
    alpha: float,
    colormap: str,
    out_dir: Path,
    method_options: str = "",
    target: str | None = None,
) -> tuple[list[tuple[str, str]], dict[str, float], list[str], str]:
    """For each method: the picture of every box, then one per box (their captions), the boxes found (a
    caption per box, the confidence), the files written (pictures, maps, the run's JSON) and the layer. An
    open-vocabulary detector (OWL-ViT) looks for the text queries typed in ``target`` (separated by ;)."""
    settings, rest = detection_settings(method_options)
    prompts = typed_prompts(target)
    if "queries" in bundle.extra and not prompts:
        raise AppError(f"{model_name} finds what you name: type it in Target (text queries separated by ;).")
    keep = None if "queries" in bundle.extra or not prompts else ",".join(prompts)  # the classes whose boxes to keep
    try:
        built = methods_with_options(methods, rest, WEB_BOUNDS)  # bounded before any work
    except UsageError as error:
        raise AppError(str(error)) from None
    pairs = tuple((item.partition("=")[0], item.partition("=")[2]) for item in rest)
    overlays: list[tuple[str, str]] = []
    found: dict[str, float] = {}
    records = []
    for method, configured in zip(methods, built, strict=True):
        name = configured if isinstance(configured, str) else configured.name
        options = RunOptions(out=out_dir, method=name, alpha=alpha, colormap=colormap, overwrite=True,
                             method_options=pairs, detection=settings, target=keep,
                             prompts=prompts if "queries" in bundle.extra else ())  # fmt: skip
        try:
            record = explain_detections(bundle, file, file.stem, options)
        except (ValueError, TypeError, ImageReadError, UsageError) as error:
            raise AppError(str(error).replace(str(file), file.name)) from None
        records.append(record)
        if not record.targets:
            raise AppError(f"{model_name} kept no box at conf {settings.conf:g}; lower it (Method options: conf=0.05)")
        overlays.append((record.targets[0].files["boxes"], f"{method}: every box ({len(record.targets)})"))
        for k, kept in enumerate(record.targets):
            where = f"box {k}" if kept.area is None else f"region {k}, {kept.area:.0%} of the image"
            overlays.append((kept.files["overlay"], f"{method}: {kept.label} {kept.score:.2f} ({where})"))
            found.setdefault(f"{kept.label} ({where})", float(kept.score))
    asked = RunOptions(out=out_dir, method=str(methods[0]), format="png", save=("map", "overlay"), detection=settings)
    manifest = run_manifest("web", model_name, bundle.source, asked, records, kind="detection", layer=records[0].layer,
                            started=None, finished=now(), methods=[str(m) for m in methods],
                            preprocessing=DETECTION.preprocessing_of(bundle))  # fmt: skip
    manifest_path = out_dir / f"{file.stem}.json"
    text = json.dumps(manifest.to_json(), indent=1)
    write_atomic(manifest_path, lambda temporary: temporary.write_text(text, encoding="utf-8"))
    files = sorted({path for record in records for t in record.targets for path in t.files.values()})
    return overlays, found, [*files, str(manifest_path)], records[0].layer or str(bundle.default_layer)
