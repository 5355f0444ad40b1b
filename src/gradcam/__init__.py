"""gradcam: why did the image model decide that? Grad-CAM-family heatmaps for any PyTorch vision model.

Example:
    >>> import gradcam, torch, torchvision                     # doctest: +SKIP
    >>> model = torchvision.models.vgg19(weights="DEFAULT")
    >>> ex = gradcam.explain(model, images, method="gradcam", layer="features.35", targets="top-3")
    >>> ex.maps.shape                                          # (B, 3, 224, 224), in [0, 1]
"""

import importlib
import sys
import types
from typing import Any

# the public names and the module each comes from: imported when first used (PEP 562), so that
# `gradcam -h` and `import gradcam.apps.cli` do not pay for torch before they need it
_PUBLIC = {
    "AuditResult": ".audits",
    "BoxScore": ".targets",
    "CAMMethod": ".methods",
    "ChannelContributions": ".result",
    "ClassMaps": ".all_classes",
    "ClassScore": ".targets",
    "Concepts": ".dff",
    "Explanation": ".result",
    "LayerResult": ".result",
    "LoadedModel": ".io.models",
    "Negative": ".targets",
    "PhotoExplanation": ".pipeline.photo",
    "Positive": ".targets",
    "Regression": ".targets",
    "SegmentationScore": ".targets",
    "Similarity": ".targets",
    "TextPrompt": ".targets",
    "audit": ".audits",
    "auto_layer": ".layers",
    "concepts": ".dff",
    "explain": ".explain",
    "explain_all": ".all_classes",
    "explain_image": ".pipeline.photo",
    "get_method": ".methods",
    "imagenet_labels": ".targets",
    "list_layers": ".layers",
    "load_model": ".io.models",
    "methods": ".methods",
    "read_labels": ".io.labels",
    "register": ".methods",
    "with_labels": ".io.models",
}


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'gradcam' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name], __name__), name)
    globals()[name] = value  # once found, an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])


class _FrontDoor(types.ModuleType):
    """Importing the submodule ``gradcam.explain`` (or ``gradcam.methods``) binds the package attribute of
    that name to the submodule; the public name is the function of that name, as it always was, so such a
    binding is refused (the submodule stays in ``sys.modules``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


_SHADOWED = frozenset({"explain", "methods"})  # public functions named like the submodule they live in
sys.modules[__name__].__class__ = _FrontDoor


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
