"""torchvision's semantic segmentation models by name (``deeplabv3_resnet50``, ``fcn_resnet50``,
``lraspp_mobilenet_v3_large``, ...): one map per class they paint (:mod:`gradcam.segmentation`), as a
detector's boxes are explained.

Their output is ``{"out": (B, 21, H, W), "aux": ...}`` over Pascal VOC's 21 classes (``__background__`` first);
photos are resized as their weights' transforms say (the shorter side to 520, ImageNet's normalisation, no
crop). The default layer is the backbone's last stage (``backbone.layer4``; ``backbone.16`` for the MobileNet
ones), the layer pytorch-grad-cam's semantic segmentation tutorial explains.

Example:
    >>> bundle = gradcam.load_model("deeplabv3_resnet50")                       # doctest: +SKIP
    >>> x, frame = bundle.extra["frame"](photo)
    >>> explain_boxes(bundle.model, x[None], bundle.extra["detector"], layer=bundle.default_layer)
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from .letterbox import shorter_side
from .weights import WeightsFile

if TYPE_CHECKING:
    from .models import LoadedModel


def segmentation_models() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models.segmentation))


def load_tv_segmentation(name: str, weights: str | None, file: WeightsFile | None) -> LoadedModel:
    """``name``'s model with its default weights (downloaded by torchvision), a weights ``file``, or random
    weights (``weights="none"``: the backbone random too, nothing downloaded)."""
    from ..segmentation import SegmentationDetector
    from .models import LoadedModel, Preprocessing, torchvision_model  # noqa: F811 (the run-time import)

    model, resized, source, default = torchvision_model(name, weights, file, weights_backbone=None)
    transforms = default.transforms()
    shortest = int(transforms.resize_size[0])
    mean, std = tuple(transforms.mean), tuple(transforms.std)
    backbone = model.get_submodule("backbone")
    last = "layer4" if hasattr(backbone, "layer4") else list(dict(backbone.named_children()))[-1]
    return LoadedModel(
        name=name,
        model=model,
        preprocessing=Preprocessing(shortest, (shortest, shortest), mean, std),
        labels=None if resized else tuple(default.meta["categories"]),
        default_layer=f"backbone.{last}",
        source=source,
        extra={
            "detector": SegmentationDetector(),
            "frame": partial(shorter_side, shortest=shortest, longest=4 * shortest, mean=mean, std=std),
            "task": "segment",
        },
    )
