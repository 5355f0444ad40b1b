"""Per-class maps of a semantic segmentation model: every class the model paints on the image is explained
by the score it stands on there, as :mod:`gradcam.detection` explains a detector's boxes (same pipeline,
pictures, manifest and web view).

A segmentation model outputs per-pixel class scores ``Y`` (B, classes, h, w). Its predicted region of class
``c`` is ``R_c = {p : argmax_k Y_k,p = c}``; the region's score is the class's summed logit over it,
``S_c = sum_{p in R_c} Y_c,p`` (the semantic-segmentation target of Vinogradova et al., "Towards
Interpretable Semantic Segmentation via Gradient-weighted Class Activation Mapping", AAAI 2020), and its map is
Grad-CAM of ``S_c`` at a layer ``A``: ``ReLU(sum_k w_k A_k)``, ``w_k = mean_ij dS_c / dA_k,ij``. The region is
the one painted in the explained forward pass and stays fixed: the masking methods (Score-CAM, Ablation-CAM)
score their changed copies on the same pixels.

Classes are kept largest region first, those covering at least ``min_area`` of the image and whose mean
probability over their region is at least ``conf``, at most ``max_boxes`` of them. Each is a
:class:`gradcam.detection.Detection` whose ``box`` is its region's bounding box in input pixels, ``confidence``
the region's mean probability, ``anchor`` the class and ``region`` the (h, w) mask itself.

Example:
    >>> found = explain_boxes(segformer, x, SegmentationDetector(), layer="segformer.stages.3")  # doctest: +SKIP
    >>> [(d.label, round(float(d.region.float().mean()), 2)) for d in found.detections]
    [(0, 0.61), (15, 0.32)]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .detection import Detection
from .targets import select_logits


def class_scores(output: Any) -> torch.Tensor:
    """The (B, classes, h, w) per-pixel scores of a segmentation output: a tensor, torchvision's
    ``{"out": ...}``, a Hugging Face output's ``.logits``."""
    if isinstance(output, dict) and isinstance(output.get("out"), torch.Tensor):
        return output["out"]
    scores = select_logits(output)
    if scores.dim() != 4:
        raise ValueError(f"a segmentation output is (B, classes, h, w), got {tuple(scores.shape)}")
    return scores


@dataclass(frozen=True)
class SegmentationDetector:
    """The :class:`gradcam.detection.Detector` of a semantic segmentation model: one "detection" per class it
    paints (see the module's docstring). ``conf`` is the region's mean probability, ``min_area`` its share of
    the image."""

    conf: float = 0.25
    max_boxes: int = 10
    min_area: float = 0.005
    only: tuple[int, ...] = ()  # explain only these classes (empty: every class painted)

    def detect(self, output: Any, size: tuple[int, int]) -> list[list[Detection]]:
        scores = class_scores(output).detach().float()
        probabilities = scores.softmax(1)
        painted = scores.argmax(1)  # (B, h, w)
        height, width = scores.shape[-2:]
        scale_y, scale_x = size[0] / height, size[1] / width
        found = []
        for image_probabilities, image_painted in zip(probabilities, painted, strict=True):
            classes, counts = image_painted.unique(return_counts=True)
            order = counts.argsort(descending=True)
            kept: list[Detection] = []
            for label, count in zip(classes[order].tolist(), counts[order].tolist(), strict=True):
                if count < self.min_area * height * width or len(kept) == self.max_boxes:
                    continue
                if self.only and label not in self.only:
                    continue
                region = image_painted == label
                confidence = float(image_probabilities[label][region].mean())
                if confidence < self.conf:
                    continue
                rows, columns = region.any(1).nonzero()[:, 0], region.any(0).nonzero()[:, 0]
                box = (float(columns[0]) * scale_x, float(rows[0]) * scale_y,
                       float(columns[-1] + 1) * scale_x, float(rows[-1] + 1) * scale_y)  # fmt: skip
                kept.append(Detection(box, int(label), confidence, int(label), region=region))
            found.append(kept)
        return found

    def score(self, detection: Detection) -> Callable[[Any], torch.Tensor]:
        """The class's logits summed over the region painted on the explained image: a fixed mask, so a
        perturbation method's masked copies are scored on the same pixels (as pytorch-grad-cam's
        ``SemanticSegmentationTarget``); a detection without its region is painted again from each output."""
        label, painted = detection.label, detection.region

        def region_score(output: Any) -> torch.Tensor:
            scores = class_scores(output)
            region = painted if painted is not None else scores.detach().argmax(1) == label
            return (scores[:, label] * region.to(scores.device, scores.dtype)).sum(dim=(-2, -1))

        return region_score
