"""Ultralytics YOLO models (v5u, v8, 11 layouts: detect, segment and classify heads): ``yolo:CONFIG.yaml``
(the architecture with random weights, offline: ``yolo:yolov8n.yaml``) or ``yolo:FILE.pt`` (a trained
checkpoint; Ultralytics saves whole pickled models, so it loads only with ``--trust-weights``). Detect and
segment models get a map per box (:mod:`gradcam.detection`); a classify model is a classifier like any other
(:class:`YoloClassifier`: its logits, photos resized and centre-cropped as Ultralytics classifies).

Ultralytics is AGPL-3.0 licensed; it is the optional ``yolo`` extra (``pip install gradcam[yolo]``) and is
imported only when a ``yolo:`` model is asked for.

The photo is letterboxed as Ultralytics' own predictor does (:func:`gradcam.io.letterbox.letterbox`: the
longer side to ``size``, padded with grey 114 to a multiple of the stride, centred); the bundle's
``extra["frame"]`` does it, and its :class:`~gradcam.io.letterbox.Letterbox` carries maps and boxes back.

Example:
    >>> bundle = gradcam.load_model("yolo:yolov8n.yaml")                       # doctest: +SKIP
    >>> x, box = letterbox(photo, 640)
    >>> boxes = explain_boxes(bundle.model, x[None], bundle.extra["detector"], layer=bundle.default_layer)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch

from ..detection import Detection
from .letterbox import letterbox
from .models import LoadedModel, Preprocessing
from .weights import ModelLoadError


@dataclass(frozen=True)
class YoloDetector:
    """The :class:`gradcam.detection.Detector` of an Ultralytics detect or segment head, whose raw output
    is (B, 4 + classes [+ mask coefficients], anchors): boxes (centre x, centre y, w, h) then class scores.
    Boxes are kept by Ultralytics' own ``non_max_suppression`` with ``conf``, ``iou`` and ``max_boxes``."""

    classes: int
    conf: float = 0.25
    iou: float = 0.45
    max_boxes: int = 10
    only: tuple[int, ...] = ()  # keep only these classes' boxes (empty: every class)
    head: Any = field(default=None, compare=False, repr=False)  # bound by prepare(): the model's Detect head
    radii: tuple[int, ...] = ()  # each scale's class branch: how far an anchor's score reads around it

    def detect(self, output: Any, size: tuple[int, int] | None = None) -> list[list[Detection]]:
        from ultralytics.utils.nms import non_max_suppression

        predictions = _predictions(output)
        kept, anchors = non_max_suppression(
            predictions, self.conf, self.iou, classes=list(self.only) or None, nc=self.classes,
            max_det=self.max_boxes, return_idxs=True,
        )  # fmt: skip
        prototypes = _prototypes(output)
        if prototypes is not None and size is None:  # Ultralytics' prototypes lie at a quarter of the input's size
            size = (4 * prototypes.shape[-2], 4 * prototypes.shape[-1])
        found = []
        for image, (boxes, index) in enumerate(zip(kept, anchors, strict=True)):
            detections = []
            for (x1, y1, x2, y2, confidence, label), anchor in zip(
                boxes[:, :6].tolist(), index.view(-1).tolist(), strict=True
            ):
                box = (float(x1), float(y1), float(x2), float(y2))
                region = None
                if prototypes is not None:
                    coefficients = predictions[image, 4 + self.classes :, anchor]
                    region = instance_mask(coefficients, prototypes[image], box, size)
                detections.append(Detection(box, int(label), float(confidence), int(anchor), region=region))
            found.append(detections)
        return found

    def prepare(self, model: Any) -> YoloDetector:
        """This detector bound to ``model``'s head, for :meth:`score`'s local path (where its class branches
        are plain stride-1 convolutions). Also: Ultralytics caches its anchor grid on the head; one made under
        ``torch.inference_mode()`` (any earlier prediction) cannot enter autograd, so it is dropped, and the
        next forward pass makes it again (the same values, as ordinary tensors)."""
        layers = getattr(model, "model", None)
        head: Any = layers[-1] if isinstance(layers, torch.nn.Sequential) and len(layers) else None
        anchors = getattr(head, "anchors", None)
        if head is not None and isinstance(anchors, torch.Tensor) and anchors.is_inference():
            head.shape = None
        branches = getattr(head, "cv3", None)
        if head is None or getattr(head, "end2end", False) or not isinstance(branches, torch.nn.ModuleList):
            return self
        radii = [_reach(branch) for branch in branches]
        if any(radius is None for radius in radii):
            return self
        return replace(self, head=head, radii=tuple(r for r in radii if r is not None))

    def default_layer(self, model: Any) -> list[str]:
        """The head's inputs: every scale it reads (P3, P4, P5 for YOLOv8)."""
        return [f"model.{index}" for index in model.model[-1].f]

    def score(self, detection: Detection) -> Callable[[Any], torch.Tensor]:
        """The box's class score at its anchor, ``output[0][:, 4 + class, anchor]``. With the head bound
        (:meth:`prepare`) it is computed again from the anchor's own neighbourhood of the head's input (the
        class branch's reach, 2 cells for YOLOv8): the same value, but the backward pass of each box then runs
        through a 5 x 5 window instead of every scale's whole class branch (ten boxes: a fraction of a forward
        pass instead of three; tests compare with the full output's gradients)."""
        row, anchor, label = 4 + detection.label, detection.anchor, detection.label
        head, radii = self.head, self.radii

        def box_score(output: Any) -> torch.Tensor:
            features = _features(output)
            if head is not None and features is not None and len(features) == len(radii):
                return _local_class_score(head, features, radii, label, anchor)
            return _predictions(output)[:, row, anchor]

        return box_score


def _features(output: Any) -> list[torch.Tensor] | None:
    """The head's inputs, one per scale, as its eval-mode output carries them (``extras["feats"]``)."""
    extras = output[1] if isinstance(output, (tuple, list)) and len(output) > 1 else None
    features = extras.get("feats") if isinstance(extras, dict) else None
    return list(features) if isinstance(features, (list, tuple)) else None


def _reach(branch: torch.nn.Module) -> int | None:
    """How many cells around a position a stack of stride-1, same-padded convolutions reads (None for
    anything else: a stride, a pooling, an odd padding)."""
    reach = 0
    for module in branch.modules():
        if isinstance(module, torch.nn.Conv2d):
            k, d = module.kernel_size, module.dilation
            if (
                module.stride != (1, 1)
                or k[0] != k[1]
                or d[0] != d[1]
                or module.padding != ((k[0] - 1) // 2 * d[0],) * 2
            ):
                return None
            reach += (k[0] - 1) // 2 * d[0]
        elif isinstance(
            module, (torch.nn.MaxPool2d, torch.nn.AvgPool2d, torch.nn.AdaptiveAvgPool2d, torch.nn.Upsample)
        ):
            return None
    return reach


def _local_class_score(
    head: Any, features: list[torch.Tensor], radii: tuple[int, ...], label: int, anchor: int
) -> torch.Tensor:
    """``sigmoid(cv3[scale](window))`` at the anchor: the window is the anchor's neighbourhood of its scale's
    map, cut at the map's own edges (where the convolutions' zero padding is the full map's too), so the
    value at its centre is exactly the full head's."""
    start = 0
    for scale, feature in enumerate(features):
        height, width = feature.shape[-2:]
        if anchor < start + height * width:
            row, column = divmod(anchor - start, width)
            reach = radii[scale]
            top, left = max(0, row - reach), max(0, column - reach)
            window = feature[:, :, top : row + reach + 1, left : column + reach + 1]
            return head.cv3[scale](window)[:, label, row - top, column - left].sigmoid()
        start += height * width
    raise ValueError(f"anchor {anchor} is beyond the head's {start} positions")


def _prototypes(output: Any) -> torch.Tensor | None:
    """A segment head's mask prototypes (B, 32, h, w) from its eval-mode output ``((y, prototypes), extras)``;
    None for a detect head."""
    first = output[0] if isinstance(output, (tuple, list)) and output else None
    if isinstance(first, (tuple, list)) and len(first) > 1 and isinstance(first[1], torch.Tensor):
        return first[1].detach()
    return None


def instance_mask(
    coefficients: torch.Tensor, prototypes: torch.Tensor, box: tuple[float, float, float, float], size: Any
) -> torch.Tensor:
    """A YOLO segment model's mask of one instance, (h, w) bool at the prototypes' resolution: the sigmoid of its
    coefficients times the prototypes, above 0.5 inside its box (the box scaled from the input's ``size``), as
    Ultralytics' ``process_mask`` makes it before upsampling."""
    channels, height, width = prototypes.shape
    logits = (coefficients.detach().float() @ prototypes.float().view(channels, -1)).view(height, width)
    scale_x, scale_y = width / float(size[1]), height / float(size[0])
    x1, y1, x2, y2 = box
    columns = torch.arange(width, device=logits.device)[None, :].float()
    rows = torch.arange(height, device=logits.device)[:, None].float()
    inside = (columns >= x1 * scale_x) & (columns < x2 * scale_x) & (rows >= y1 * scale_y) & (rows < y2 * scale_y)
    return (logits.sigmoid() > 0.5) & inside


def _predictions(output: Any) -> torch.Tensor:
    """The (B, 4 + classes + ..., anchors) tensor of a YOLO head's eval-mode output: ``(y, extras)`` for a
    detect head, ``((y, prototypes), extras)`` for a segment head."""
    while isinstance(output, (tuple, list)):
        output = output[0]
    return output


def load_yolo(spec: str, trusted: bool, size: int | None = None) -> LoadedModel:
    """``CONFIG.yaml`` (random weights) or a checkpoint ``FILE.pt`` (only with ``trusted``); photos are
    letterboxed to ``size``, by default the size the checkpoint was trained at (as Ultralytics predicts), else
    640."""
    try:
        from ultralytics import YOLO
    except ImportError:
        raise ModelLoadError(
            f"--model yolo:{spec}: needs Ultralytics (AGPL-3.0): pip install 'gradcam[yolo]'"
        ) from None
    if not spec.endswith((".yaml", ".yml", ".pt")):
        raise ModelLoadError(f"--model yolo:{spec}: give an Ultralytics CONFIG.yaml or a checkpoint FILE.pt")
    if spec.endswith(".pt"):
        if not Path(spec).is_file():
            raise ModelLoadError(f"--model yolo:{spec}: no such file (weights are not downloaded here)")
        if not trusted:
            raise ModelLoadError(
                f"--model yolo:{spec}: an Ultralytics checkpoint is a whole pickled model and runs code when "
                "loaded; pass --trust-weights if you trust its source"
            )
    try:
        loaded = YOLO(spec)
        net: Any = loaded.model
    except Exception as error:  # a missing or broken config, a checkpoint of another library
        raise ModelLoadError(f"--model yolo:{spec}: cannot load it ({type(error).__name__}: {error})") from None
    trained = loaded.overrides.get("imgsz") if isinstance(getattr(loaded, "overrides", None), dict) else None
    trained_size = int(max(trained) if isinstance(trained, (list, tuple)) else trained or 0) or None
    head = net.model[-1]
    task = getattr(net, "task", "detect")
    source = "random weights (an Ultralytics config)" if spec.endswith((".yaml", ".yml")) else "Ultralytics checkpoint"
    if task == "classify" and hasattr(head, "linear"):
        return _classifier_bundle(spec, net, source, size or trained_size or 224)
    if task not in ("detect", "segment") or not hasattr(head, "nc"):
        raise ModelLoadError(
            f"--model yolo:{spec}: a {task} model; gradcam explains YOLO detect, segment and classify heads"
        )
    size = size or trained_size or 640
    net = net.float().eval()
    labels = _class_names(net.names, head.nc)
    detector = YoloDetector(classes=head.nc)
    return LoadedModel(
        name=f"yolo:{Path(spec).name}",
        model=net,
        preprocessing=Preprocessing(resize=size, crop=(size, size), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
        labels=labels,
        default_layer=",".join(detector.default_layer(net)),
        source=source,
        extra={"detector": detector, "frame": partial(letterbox, size=size), "task": task},
    )


class YoloClassifier(torch.nn.Module):
    """An Ultralytics classification model whose output is its logits: in eval mode its ``Classify`` head
    returns (probabilities, logits), and a map explains the logit (as for any classifier), not the softmax.
    Its layers keep Ultralytics' names (``model.9.conv`` is the head's last convolution), and it is the same
    module tree: training it or moving it moves the Ultralytics model.

    Example:
        >>> bundle = gradcam.load_model("yolo:yolov8n-cls.yaml")                 # doctest: +SKIP
        >>> bundle.model(torch.rand(1, 3, 224, 224)).shape, bundle.default_layer
        (torch.Size([1, 1000]), 'model.9.conv')
    """

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.model = net.model  # the layers (registered here, so named as Ultralytics names them)
        object.__setattr__(self, "_net", net)  # runs them, with its own routing; not a second child

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net: Any = self._net
        output = net(x)
        return output[1] if isinstance(output, (tuple, list)) else output


def _classifier_bundle(spec: str, net: Any, source: str, size: int) -> LoadedModel:
    """A ``classify`` model: Ultralytics' own preprocessing (the shorter side to ``size``, a centre crop,
    bilinear, pixels in [0, 1] unnormalised); the map at the head's last convolution, before its pooling."""
    net = net.float().eval()
    head = net.model[-1]
    return LoadedModel(
        name=f"yolo:{Path(spec).name}",
        model=YoloClassifier(net).eval(),
        preprocessing=Preprocessing(resize=size, crop=(size, size), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
        labels=_class_names(net.names, int(head.linear.out_features)),
        default_layer=f"model.{len(net.model) - 1}.conv",
        source=source,
        extra={"task": "classify"},
    )


def _class_names(names: Any, count: int) -> list[str]:
    """The model's class names; a config's placeholder names ("0", "1", ...) are COCO's for 80 classes and
    ImageNet's for 1,000 (the datasets Ultralytics' configs are made for)."""
    listed = [str(names[i]) for i in range(count)] if isinstance(names, dict) else [str(n) for n in names]
    if count == 1000 and listed == [str(i) for i in range(1000)]:
        from ..targets import imagenet_labels

        return list(imagenet_labels())
    if count == 80 and listed == [str(i) for i in range(80)]:
        import ultralytics
        import yaml

        coco = Path(ultralytics.__file__).parent / "cfg" / "datasets" / "coco.yaml"
        with open(coco) as handle:
            names = yaml.safe_load(handle)["names"]
        return [str(names[i]) for i in range(80)]
    return listed
