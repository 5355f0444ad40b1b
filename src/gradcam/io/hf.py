"""Hugging Face ``transformers`` image classifiers: ``hf:ORG/NAME`` (the hub) or ``hf:PATH`` (a folder
written by ``save_pretrained``), with the model's own image processor and ``id2label`` class names.

The model is ``AutoModelForImageClassification``; its output's ``.logits`` are the scores, and the
automatic layer is found as for any model (token grids of ViT, DeiT, BEiT and Swin included: see
:func:`gradcam.layers.auto_layer`). Needs the ``hf`` extra (``pip install gradcam[hf]``).

Example:
    >>> bundle = load_model("hf:google/vit-base-patch16-224")      # doctest: +SKIP
    >>> bundle.preprocessing.squash, bundle.labels[285]
    (True, 'Egyptian cat')
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .hub import in_hub_cache, reachable
from .models import LoadedModel, ModelLoadError, Preprocessing, WeightsFile, _sized_to
from .quiet import quiet_transformers

if TYPE_CHECKING:
    from torch import nn


def _import_transformers() -> Any:
    try:
        import transformers
    except ImportError as error:
        raise ModelLoadError(
            "hf: models need the transformers package (pip install 'gradcam[hf]' or pip install transformers)"
        ) from error
    quiet_transformers(transformers)
    return transformers


def _cache_only(repo: str) -> bool:
    """Whether ``repo`` must be read from the local cache only (cached, hub unreachable); raises at once (no
    client retries) when neither the cache nor the hub has it."""
    from huggingface_hub import constants

    if reachable(constants.ENDPOINT):
        return False
    if in_hub_cache(repo, ["config.json"]):
        return True
    raise ModelLoadError(
        f"cannot get hf:{repo} from {constants.ENDPOINT} (not in the local cache, and the hub cannot be reached); "
        f"with no network, download it elsewhere (huggingface-cli download {repo}) and pass its folder as "
        f"hf:PATH, or --weights FILE with its config cached"
    )


def load_hf(spec: str, weights: str | None, file: WeightsFile | None, trust_code: bool = False) -> LoadedModel:
    """``spec`` is ``ORG/NAME`` or a local folder; ``weights`` None (the hub's), ``"none"`` or a file. A model
    whose config asks to run its own Python code (``auto_map``) is refused unless ``trust_code``
    (``--trust-weights``): transformers is never left to ask on the terminal."""
    transformers = _import_transformers()
    local_folder = Path(spec).is_dir()
    if not local_folder and (spec.startswith((".", "/", "~")) or spec.count("/") > 1):
        raise ModelLoadError(f"hf:{spec}: no such folder (a hub model is hf:ORG/NAME)")
    if local_folder and not trust_code:
        _refuse_custom_code(Path(spec))
    offline = False if local_folder else _cache_only(spec)
    where: dict[str, Any] = dict(local_files_only=offline, trust_remote_code=trust_code)
    try:
        config = transformers.AutoConfig.from_pretrained(spec, **where)
    except Exception as error:  # hub, network and parsing errors come in many types
        raise ModelLoadError(
            f"hf:{spec}: cannot read its config ({type(error).__name__}: {str(error)[:120]})"
        ) from None
    from .image_text import IMAGE_TEXT_TYPES, load_hf_image_text

    if getattr(config, "model_type", "") in IMAGE_TEXT_TYPES:
        if weights is not None:
            raise ModelLoadError(
                f"hf:{spec}: an image-text model takes no --weights; save it as a folder, pass hf:FOLDER"
            )
        return load_hf_image_text(spec, config, where, bounded(processor_preprocessing(spec, config, where), spec))
    from .hf_owl import OWL_TYPES

    owl = getattr(config, "model_type", "") in OWL_TYPES
    architectures = [str(name) for name in getattr(config, "architectures", None) or []]
    detector = any(name.endswith("ForObjectDetection") for name in architectures)
    segmenter = any(name.endswith("ForSemanticSegmentation") for name in architectures)
    auto = (
        transformers.AutoModelForZeroShotObjectDetection
        if owl
        else transformers.AutoModelForObjectDetection
        if detector
        else transformers.AutoModelForSemanticSegmentation
        if segmenter
        else transformers.AutoModelForImageClassification
    )
    if weights is None:
        try:
            model = auto.from_pretrained(spec, **where)
        except Exception as error:
            raise ModelLoadError(
                f"hf:{spec}: cannot load its weights ({type(error).__name__}: {str(error)[:120]}); "
                "pass --weights FILE, or --weights none for random weights"
            ) from None
        resized, source = False, f"Hugging Face {spec}"
    else:

        def build(num_classes: int | None = None) -> nn.Module:
            sized = config if num_classes is None else _with_classes(config, num_classes)
            return auto.from_config(sized, trust_remote_code=trust_code)

        model, resized = _sized_to(file, build, f"hf:{spec}")
        source = "random weights"
        if file is not None:
            file.load_into(model)
            source = f"weights from {weights}"
    if owl:
        from .hf_detection import processor_dict
        from .hf_owl import load_owl

        return load_owl(spec, config, where, model.eval(), source, processor_dict(spec, where))
    if detector:
        return _detection_bundle(spec, model.eval(), config, where, source)
    if segmenter:
        return _segmentation_bundle(spec, model.eval(), config, where, source)
    return LoadedModel(
        name=f"hf:{spec}",
        model=model.eval(),
        preprocessing=bounded(processor_preprocessing(spec, config, where), spec),
        labels=None if resized else _id2label(config),
        default_layer=None,
        source=source,
    )


def _detection_bundle(spec: str, model: nn.Module, config: Any, where: dict, source: str) -> LoadedModel:
    """An object detector (``...ForObjectDetection``): one map per box (:mod:`gradcam.io.hf_detection`)."""
    from .hf_detection import detection_extra, processor_dict

    extra = detection_extra(config, processor_dict(spec, where))
    return LoadedModel(
        name=f"hf:{spec}",
        model=model,
        preprocessing=_frame_preprocessing(extra, spec),
        labels=_id2label(config),
        default_layer=extra["detector"].default_layer(model),
        source=source,
        extra=extra,
    )


def _segmentation_bundle(spec: str, model: nn.Module, config: Any, where: dict, source: str) -> LoadedModel:
    """A semantic segmentation model (``...ForSemanticSegmentation``): one map per class it paints."""
    from .hf_detection import processor_dict, segmentation_extra, segmentation_layer

    extra = segmentation_extra(processor_dict(spec, where), int(getattr(config, "image_size", 512) or 512))
    preprocessing = _frame_preprocessing(extra, spec)
    return LoadedModel(
        name=f"hf:{spec}",
        model=model,
        preprocessing=preprocessing,
        labels=_id2label(config),
        default_layer=segmentation_layer(model, preprocessing.crop),
        source=source,
        extra=extra,
    )


def _frame_preprocessing(extra: dict, spec: str) -> Preprocessing:
    """What a detector's or segmenter's frame function does to a photo, as the run records it (and bounded:
    a processor config cannot ask for more than ``MAX_INPUT_PIXELS``)."""
    frame = extra["frame"].keywords
    size = tuple(frame.get("size") or (frame["shortest"], frame["shortest"]))
    return bounded(Preprocessing(max(size), size, frame["mean"], frame["std"], squash="size" in frame), spec)


CODE_FILES = ("config.json", "preprocessor_config.json", "tokenizer_config.json", "processor_config.json")


def _refuse_custom_code(folder: Path) -> None:
    """A one-line ModelLoadError when the folder's configs name Python code of its own to run (``auto_map``)."""
    import json

    for name in CODE_FILES:
        path = folder / name
        if not path.is_file() or path.stat().st_size > 10_000_000:
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            continue  # transformers says what is wrong with it
        if isinstance(data, dict) and "auto_map" in data:
            raise ModelLoadError(
                f"hf:{folder}: {name} asks to run Python code from the folder (auto_map); refused. Pass "
                "--trust-weights only if you trust where the folder comes from"
            )


MAX_INPUT_PIXELS = 40_000_000  # as a photo's --max-megapixels: a model folder cannot ask for more per image


def bounded(preprocessing: Preprocessing, spec: str) -> Preprocessing:
    """``preprocessing`` when its working sizes are within ``MAX_INPUT_PIXELS``; else a one-line
    ModelLoadError (a processor config of 100000 x 100000 would allocate tens of GB per photo)."""
    height, width = preprocessing.crop
    if height * width > MAX_INPUT_PIXELS or preprocessing.resize**2 > MAX_INPUT_PIXELS:
        raise ModelLoadError(
            f"hf:{spec}: its image processor asks for {height} x {width} inputs (resize {preprocessing.resize}), "
            f"more than {MAX_INPUT_PIXELS / 1e6:g} megapixels; fix its preprocessor_config.json"
        )
    return preprocessing


def _with_classes(config: Any, num_classes: int) -> Any:
    import copy

    sized = copy.deepcopy(config)
    sized.num_labels = num_classes
    return sized


def _id2label(config: Any) -> tuple[str, ...] | None:
    """The config's class names, or None where they are transformers' placeholders (``LABEL_0``, ...)."""
    mapping = getattr(config, "id2label", None) or {}
    names = tuple(str(mapping.get(i, mapping.get(str(i), i))) for i in range(len(mapping)))
    if not names or all(name == f"LABEL_{i}" for i, name in enumerate(names)):
        return None
    return names


def processor_preprocessing(spec: str, config: Any, where: dict) -> Preprocessing:
    """The model's ``AutoImageProcessor`` as a :class:`Preprocessing`: ``size`` ``{height, width}`` is a
    resize to that size (``squash``); ``{shortest_edge}`` with ``crop_pct`` (ConvNeXt) or ``crop_size`` is a
    shorter-side resize and a centre crop. Without a processor file: the config's ``image_size`` and the
    mean/std of 0.5 that most Hugging Face vision models use (said in a warning)."""
    import warnings

    transformers = _import_transformers()
    try:
        processor = transformers.AutoImageProcessor.from_pretrained(spec, **where)
    except Exception as error:
        side = int(getattr(config, "image_size", 224) or 224)
        warnings.warn(
            f"hf:{spec}: no image processor ({type(error).__name__}); resizing to {side}x{side}, mean = std = 0.5",
            stacklevel=3,
        )
        return Preprocessing(resize=side, crop=(side, side), mean=(0.5,) * 3, std=(0.5,) * 3, squash=True)
    size = _as_dict(getattr(processor, "size", None))
    crop = _as_dict(getattr(processor, "crop_size", None))
    mean = tuple(float(v) for v in (getattr(processor, "image_mean", None) or (0.5, 0.5, 0.5)))
    std = tuple(float(v) for v in (getattr(processor, "image_std", None) or (0.5, 0.5, 0.5)))
    if not getattr(processor, "do_normalize", True):
        mean, std = (0.0,) * 3, (1.0,) * 3
    resample = str(getattr(processor, "resample", "bilinear")).lower()
    interpolation = "bicubic" if "bicubic" in resample or resample.endswith("3") else "bilinear"

    def common(resize: int, crop: tuple[int, int], squash: bool = False) -> Preprocessing:
        return Preprocessing(resize, crop, mean, std, interpolation, squash)

    if size.get("height") and size.get("width"):
        height, width = int(size["height"]), int(size["width"])
        if getattr(processor, "do_center_crop", False) and crop.get("height"):
            crop_h, crop_w = int(crop["height"]), int(crop["width"])
            return common(min(height, width), (crop_h, crop_w))
        return common(max(height, width), (height, width), squash=True)
    shortest = int(size.get("shortest_edge") or getattr(config, "image_size", 224) or 224)
    crop_pct = getattr(processor, "crop_pct", None)
    if crop_pct:  # ConvNeXt: below 384 px a shorter-side resize to size / crop_pct, then the centre crop
        if shortest >= 384:
            return common(shortest, (shortest, shortest), squash=True)
        return common(int(math.floor(shortest / crop_pct)), (shortest, shortest))
    if crop.get("height"):
        return common(shortest, (int(crop["height"]), int(crop["width"])))
    return common(shortest, (shortest, shortest))


def _as_dict(size: Any) -> dict:
    if size is None:
        return {}
    if isinstance(size, int):
        return {"height": size, "width": size}
    if isinstance(size, dict):
        return dict(size)
    return {k: getattr(size, k, None) for k in ("height", "width", "shortest_edge")}
