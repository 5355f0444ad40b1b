"""Per-box maps of an object detector: every box the detector keeps (after its own confidence threshold and
non-maximum suppression) explained from one forward pass.

A detector is described to this module by a small adapter (:class:`Detector`): ``detect(output, size)``
lists the kept boxes of each image from the model's raw output (``size``: the input's height and width),
and ``score(detection)`` returns the scalar that box stands on, one per image: for a YOLO head, the class
score of the box's class at the anchor it came from (``output[:, 4 + class, anchor]``); for a DETR, the
class probability of the box's query. Grad-CAM of that score at a layer ``A`` is, as for a classifier,
``L = ReLU(sum_c w_c A_c)`` with ``w_c = mean_ij d score / d A_c,ij`` (Selvaraju et al., 2017).

With several layers (a detection head reads several scales: YOLO's P3, P4, P5, each from its own feature
map) every box is explained at the feature map its prediction is read from: each layer starts its own graph
(``explain(layers_apart=True)``), so a box's gradient reaches its own scale's map and stops there (the other
scales' maps of that box are zero), and the per-layer raw maps are *summed* at the input's size before
normalising (averaging normalised maps would stretch a zero or near-zero scale to full strength). The
backward pass of each box then runs through its own head branch only: about a third of a forward pass for
ten boxes on YOLOv8n (``bench/bench_yolo.py``).

Example:
    >>> boxes = explain_boxes(net, x, YoloDetector(classes=80), layer=["model.15", "model.18", "model.21"])
    >>> boxes.detections[0].box, boxes.maps.shape                            # doctest: +SKIP
    ((112.0, 40.5, 380.2, 610.0), torch.Size([3, 640, 480]))
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from .explain import explain
from .hooks import model_lock
from .layers import LayerSpec
from .methods import CAMMethod, get_method
from .result import Explanation
from .targets import NoTargets, TargetsFromOutput


@dataclass(frozen=True)
class Detection:
    """One kept box: ``box`` (x1, y1, x2, y2) in the model's input pixels, its class ``label``, the
    detector's ``confidence`` and the ``anchor`` (the prediction's position in the raw output). A segmentation
    model's class region also has its ``region``: the (h, w) mask of the pixels painted with that class, at the
    output's resolution (:mod:`gradcam.segmentation`)."""

    box: tuple[float, float, float, float]
    label: int
    confidence: float
    anchor: int
    region: torch.Tensor | None = field(default=None, compare=False, repr=False)


class Detector(Protocol):
    def detect(self, output: Any, size: tuple[int, int]) -> list[list[Detection]]: ...

    def score(self, detection: Detection) -> Callable[[Any], torch.Tensor]: ...


@dataclass(frozen=True)
class BoxExplanation:
    """``detections`` (K boxes) and their ``maps`` (K, H, W) in [0, 1] at the input's size; ``explanation``
    is :func:`gradcam.explain`'s (None when the detector kept no box)."""

    detections: tuple[Detection, ...]
    maps: torch.Tensor
    explanation: Explanation | None


class _ChosenBoxes(TargetsFromOutput):
    """The boxes of this one call, chosen on its own forward pass (never shared between calls)."""

    def __init__(self, detector: Detector, size: tuple[int, int]) -> None:
        self.detector, self.size = detector, size
        self.found: list[Detection] = []

    def choose(self, output: Any) -> list[Callable[[Any], torch.Tensor]]:
        with torch.no_grad():  # the NMS records nothing, however the output nests its tensors
            self.found = list(self.detector.detect(output, self.size)[0])
        return [self.detector.score(d) for d in self.found]


def explain_boxes(
    model: nn.Module,
    image: torch.Tensor,
    detector: Detector,
    method: str | CAMMethod = "gradcam",
    layer: LayerSpec = None,
    *,
    eigen_smooth: bool = False,
    counterfactual: bool = False,
) -> BoxExplanation:
    """One map per box the detector keeps on ``image`` (1, C, H, W), from one forward pass.

    Args:
        detector: the adapter that finds the boxes in the raw output and names each box's score
            (:class:`gradcam.io.yolo.YoloDetector` for Ultralytics models).
        method: a gradient method (gradcam, gradcam++, hirescam, xgradcam, layercam, ...), an activation
            method (eigencam: the same map for every box) or a masking method (scorecam, ablationcam).
        layer: one layer or several (their raw maps summed, see the module's docstring); None: the
            detector's ``default_layer(model)`` where it has one (a YOLO head's inputs).
    """
    chosen = get_method(method)
    if chosen.wraps_explain:
        raise ValueError(f"{chosen.name} runs the model its own way and cannot explain a detector's boxes")
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"explain_boxes: one image (1, C, H, W) at a time, got {tuple(image.shape)}")
    if layer is None and hasattr(detector, "default_layer"):
        layer = detector.default_layer(model)
    if isinstance(layer, str) and "," in layer:
        layer = [part.strip() for part in layer.split(",") if part.strip()]
    with model_lock(model):
        if hasattr(detector, "prepare"):  # bound to this model (a new instance: the given one is shared)
            detector = detector.prepare(model) or detector
    boxes = _ChosenBoxes(detector, (int(image.shape[2]), int(image.shape[3])))
    layout = detector.token_layout(model, boxes.size) if hasattr(detector, "token_layout") else None
    prefix_tokens, grid = layout if layout is not None else (None, None)
    try:
        ex = explain(model, image, chosen, layer, boxes, eigen_smooth=eigen_smooth, counterfactual=counterfactual,
                     layers_apart=True, prefix_tokens=prefix_tokens, grid=grid)  # fmt: skip
    except NoTargets:
        return BoxExplanation((), image.new_zeros((0, *image.shape[2:])), None)
    empty = [k for k in range(ex.maps.shape[1]) if not bool(ex.maps[0, k].any())]  # raw maps summed, normalised
    if empty and chosen.uses_gradients:
        warnings.warn(
            f"box {empty[0]}: its map is zero at every layer (its score's gradient is zero, or every weighted "
            "sum is negative there); pick another layer or method",
            stacklevel=2,
        )
    return BoxExplanation(tuple(boxes.found), ex.maps[0], ex)
