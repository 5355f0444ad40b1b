"""Hugging Face object detectors (DETR, Conditional/Deformable DETR, RT-DETR, YOLOS, Table Transformer, ...):
``hf:FOLDER`` or ``hf:ORG/NAME`` of a ``...ForObjectDetection`` checkpoint gets one map per box; a
``...ForSemanticSegmentation`` checkpoint (SegFormer, BEiT, DPT, UperNet, MobileViT) one map per class it
paints (:mod:`gradcam.segmentation`).

Their outputs hold per query ``logits`` (B, Q, classes [+ 1 "no object"]) and ``pred_boxes`` (B, Q, 4: centre
x, centre y, width, height, relative to the input). The boxes are kept as the models' own post-processing
keeps them: DETR-style heads (a softmax with a "no object" class) keep each query's best class above the
threshold; sigmoid heads (Conditional/Deformable DETR, RT-DETR) keep the top (query, class) pairs above it.
A box's score is that class's probability for its query.

Example:
    >>> bundle = gradcam.load_model("hf:my-detr-folder")                        # doctest: +SKIP
    >>> x, frame = bundle.extra["frame"](photo)
    >>> explain_boxes(bundle.model, x[None], bundle.extra["detector"])
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from ..detection import Detection
from ..segmentation import SegmentationDetector
from .letterbox import shorter_side, squashed

SIGMOID_HEADS = frozenset(
    {"conditional_detr", "deformable_detr", "rt_detr", "rt_detr_v2", "dab_detr", "d_fine", "deta"}
)
MAX_CONFIG_BYTES = 1_000_000
REGION_ARCHITECTURES = ("ForObjectDetection", "ForSemanticSegmentation")  # explained box by box, class by class


@dataclass(frozen=True)
class HfDetector:
    """The :class:`gradcam.detection.Detector` of a transformers object-detection output."""

    sigmoid: bool = False
    conf: float = 0.5
    max_boxes: int = 10
    only: tuple[int, ...] = ()  # keep only these classes' boxes (empty: every class)

    def probabilities(self, output: Any) -> torch.Tensor:
        """(B, Q, classes): each query's class probabilities ("no object" dropped for softmax heads)."""
        logits = output["logits"] if isinstance(output, dict) else output.logits
        return logits.sigmoid() if self.sigmoid else logits.softmax(-1)[..., :-1]

    def detect(self, output: Any, size: tuple[int, int]) -> list[list[Detection]]:
        probabilities = self.probabilities(output).detach().float()
        boxes = (output["pred_boxes"] if isinstance(output, dict) else output.pred_boxes).detach().float()
        height, width = size
        found = []
        left_out = torch.full((probabilities.shape[-1],), bool(self.only), device=probabilities.device)
        left_out[list(self.only)] = False  # with ``only``, every other class; without it, none
        for probs, relative in zip(probabilities, boxes, strict=True):
            if self.sigmoid:
                probs = probs.masked_fill(left_out, -1.0)
                values, flat = probs.flatten().topk(min(self.max_boxes, probs.numel()))
                queries, labels = flat // probs.shape[1], flat % probs.shape[1]
            else:
                best, classes = probs.max(-1)  # each query's best class, kept only if it is one asked for
                best = best.masked_fill(left_out[classes], -1.0)
                values, queries = best.topk(min(self.max_boxes, len(best)))
                labels = classes[queries]
            kept = []
            for value, query, label in zip(values.tolist(), queries.tolist(), labels.tolist(), strict=True):
                if value < self.conf:
                    continue
                cx, cy, w, h = relative[query].tolist()
                box = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
                kept.append(Detection(box, int(label), float(value), int(query)))
            found.append(kept)
        return found

    def score(self, detection: Detection) -> Callable[[Any], torch.Tensor]:
        query, label = detection.anchor, detection.label

        def box_score(output: Any) -> torch.Tensor:
            return self.probabilities(output)[:, query, label]

        return box_score

    def token_layout(self, model: Any, size: tuple[int, int]) -> tuple[int, tuple[int, int]] | None:
        """The token layout of a transformer detector whose tokens are not a plain grid (YOLOS)."""
        return yolos_layout(model, size)

    def default_layer(self, model: Any) -> str | None:
        """The feature maps the transformer reads: DETR's ``input_projection`` (a 1x1 convolution on the
        backbone's last stage), or every scale's projection of a multi-scale model (RT-DETR's
        ``model.encoder_input_proj.0,1,2``: a query may come from any scale; their maps are summed as YOLO's)."""
        names = [name for name, _ in model.named_modules()]
        if getattr(getattr(model, "config", None), "model_type", "") == "yolos":  # a ViT: its last block's input
            blocks = sorted({int(n.split(".")[3]) for n in names if n.startswith("vit.encoder.layer.") and
                             n.split(".")[3].isdigit()})  # fmt: skip
            return f"vit.encoder.layer.{blocks[-1]}.layernorm_before" if blocks else None
        if "model.input_projection" in names:
            return "model.input_projection"
        for stem in ("model.encoder_input_proj.", "model.input_proj."):
            scales = sorted({int(n.split(".")[2]) for n in names if n.startswith(stem) and n.split(".")[2].isdigit()})
            if scales:
                return ",".join(f"{stem}{scale}" for scale in scales)
        return None


def yolos_layout(model: Any, size: tuple[int, int]) -> tuple[int, tuple[int, int]] | None:
    """How YOLOS lays its tokens for an input of ``size``: a class token, the patches row by row, then its
    detection tokens (the prefix and the patch grid; the rest trails); None for other models."""
    config = getattr(model, "config", None)
    if getattr(config, "model_type", "") != "yolos":
        return None
    patch = int(getattr(config, "patch_size", 16))
    return 1, (size[0] // patch, size[1] // patch)


def is_detection_folder(spec: str) -> bool:
    """Whether ``hf:FOLDER``'s ``config.json`` names a ``...ForObjectDetection`` or ``...ForSemanticSegmentation``
    architecture (read without importing transformers; a hub name is asked of its config when loaded)."""
    config = Path(spec) / "config.json"
    try:
        if not config.is_file() or config.stat().st_size > MAX_CONFIG_BYTES:
            return False
        architectures = json.loads(config.read_text()).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return False
    return any(str(name).endswith(REGION_ARCHITECTURES) for name in architectures)


def detection_extra(config: Any, processor: dict) -> dict[str, Any]:
    """The bundle's ``extra`` for a detector: the :class:`HfDetector` and how a photo becomes its input
    (the processor's shorter/longer side and normalisation, DETR's 800/1333 and ImageNet's by default; a
    ``size`` of height and width is a resize to exactly that, as RT-DETR's processor does)."""
    size = processor.get("size") or {}
    mean, std = normalisation(processor)
    detector = HfDetector(sigmoid=getattr(config, "model_type", "") in SIGMOID_HEADS)
    frame: Callable
    if size.get("height") and size.get("width") and not size.get("shortest_edge"):  # RT-DETR: 640 x 640, squashed
        frame = partial(squashed, size=(int(size["height"]), int(size["width"])), mean=mean, std=std)
    else:
        shortest = int(size.get("shortest_edge") or 800)
        longest = int(size.get("longest_edge") or max(shortest, 1333))
        frame = partial(shorter_side, shortest=shortest, longest=longest, mean=mean, std=std)
    return {"detector": detector, "frame": frame, "task": "detect"}


IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def normalisation(
    processor: dict, defaults: tuple[tuple[float, ...], tuple[float, ...]] = IMAGENET_MEAN_STD
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The processor's mean and std (``defaults`` where it names none, ImageNet's unless given; 0 and 1 when it
    does not normalise)."""
    if not processor.get("do_normalize", True):
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    return tuple(processor.get("image_mean") or defaults[0]), tuple(processor.get("image_std") or defaults[1])


def processor_dict(spec: str, where: dict) -> dict:
    """The image processor's settings as a dict (empty when the checkpoint has none)."""
    folder = Path(spec)
    path = folder / "preprocessor_config.json"
    if folder.is_dir():
        try:
            if path.is_file() and path.stat().st_size <= MAX_CONFIG_BYTES:
                return dict(json.loads(path.read_text()))
        except (OSError, ValueError):
            return {}
        return {}
    try:
        import transformers

        processor = transformers.AutoImageProcessor.from_pretrained(spec, **where)
        return processor.to_dict()
    except Exception:  # no processor in the checkpoint: the DETR defaults
        return {}


def segmentation_extra(processor: dict, fallback: int) -> dict[str, Any]:
    """The bundle's ``extra`` for a semantic segmentation model: the :class:`SegmentationDetector` and how a
    photo becomes its input: the processor's ``size`` {height, width} (a squash, as SegFormer's), or
    ``{shortest_edge}`` (the shorter side, aspect kept); ``fallback`` px square without a processor."""
    size = processor.get("size") or {}
    if isinstance(size, int):
        size = {"height": size, "width": size}
    mean, std = normalisation(processor)
    if size.get("shortest_edge") and not size.get("height"):
        shortest = int(size["shortest_edge"])
        frame: Callable = partial(shorter_side, shortest=shortest, longest=4 * shortest, mean=mean, std=std)
    else:
        height, width = int(size.get("height") or fallback), int(size.get("width") or fallback)
        frame = partial(squashed, size=(height, width), mean=mean, std=std)
    return {"detector": SegmentationDetector(), "frame": frame, "task": "segment"}


def segmentation_layer(model: Any, size: tuple[int, int]) -> str | None:
    """The last feature map of the segmentation model's backbone (its base model: ``segformer.stages.3``),
    found on one blank input of ``size``; the decode head's own layers would explain the painting by itself."""
    from ..layers import auto_layer

    prefix = getattr(model, "base_model_prefix", "")
    base = getattr(model, prefix, None) if prefix else None
    if base is None:
        return None
    parameter = next(model.parameters())
    inside = auto_layer(base, torch.zeros(1, 3, *size, device=parameter.device, dtype=parameter.dtype))
    return f"{prefix}.{inside}" if inside else None
