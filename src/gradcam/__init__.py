"""gradcam: why did the image model decide that? Grad-CAM-family heatmaps for any PyTorch vision model.

Example:
    >>> import gradcam, torch, torchvision                     # doctest: +SKIP
    >>> model = torchvision.models.vgg19(weights="DEFAULT")
    >>> ex = gradcam.explain(model, images, method="gradcam", layer="features.35", targets="top-3")
    >>> ex.maps.shape                                          # (B, 3, 224, 224), in [0, 1]
"""

from .all_classes import ClassMaps, explain_all
from .audits import AuditResult, audit
from .dff import Concepts, concepts
from .explain import explain
from .io.models import LoadedModel, load_model, read_labels, with_labels
from .layers import auto_layer, list_layers
from .methods import CAMMethod, get_method, methods, register
from .pipeline.photo import PhotoExplanation, explain_image
from .result import ChannelContributions, Explanation, LayerResult
from .targets import (
    BoxScore,
    ClassScore,
    Negative,
    Positive,
    Regression,
    SegmentationScore,
    Similarity,
    TextPrompt,
    imagenet_labels,
)

__version__ = "0.1.0"

__all__ = [
    "AuditResult",
    "BoxScore",
    "CAMMethod",
    "ChannelContributions",
    "ClassMaps",
    "ClassScore",
    "Concepts",
    "Explanation",
    "LayerResult",
    "LoadedModel",
    "Negative",
    "PhotoExplanation",
    "Positive",
    "Regression",
    "SegmentationScore",
    "Similarity",
    "TextPrompt",
    "audit",
    "auto_layer",
    "concepts",
    "explain",
    "explain_all",
    "explain_image",
    "get_method",
    "imagenet_labels",
    "list_layers",
    "load_model",
    "methods",
    "read_labels",
    "register",
    "with_labels",
]
