"""Input kinds as a registry: which files each kind takes, which options it honours, which engines run it.

Every kind is one :class:`InputKind`; the command line, the local engine, Ray and the web app ask this
registry instead of deciding by suffix themselves:

- ``photo``: JPEG, PNG, WebP, ... (8-bit), explained in batches (:class:`gradcam.pipeline.local.Runner`);
- ``image``: image arrays at full precision (16-bit or float TIFF, ``.npy`` (H, W) or (C, H, W) with
  ``--kind image``), explained as images: the same batches, writer and pictures as photos;
- ``video``: explained frame by frame or clip by clip, one file at a time (:mod:`gradcam.pipeline.video`);
- ``volume`` and ``signal``: ``.npy``/NIfTI arrays, one file at a time (:mod:`gradcam.pipeline.arrays`);
- ``detection``: photos given to a detector (``yolo:`` models), one photo at a time, one map per box
  (:mod:`gradcam.pipeline.detect`); chosen by the model (:func:`for_model`), not by the files.

An option a kind does not honour is refused before anything runs, in one line naming the option and the
kind (:func:`refuse_unsupported`); the test ``tests/test_options_matrix.py`` runs every option on every
kind and engine.

Example:
    >>> kind_of(Path("scan.nii.gz")).name, kind_of(Path("cells.npy"), "image").name      # doctest: +SKIP
    ('volume', 'image')
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..io.arrays import array_dimensions
from ..io.image_arrays import IMAGE_ARRAY_SUFFIXES, is_high_precision_tiff
from ..io.images import IMAGE_SUFFIXES, FoundImages, find_images
from ..io.models import DEFAULT_MODEL, LoadedModel, Preprocessing
from ..io.video import VIDEO_SUFFIXES
from .options import EVERY_KIND_TAKES, OPTION_FLAGS, RunOptions, UsageError, given_options, saved_outputs

_VIDEO_ONLY = frozenset({"video.every", "video.smoothing"})
_DETECTION_ONLY = frozenset({"detection.conf", "detection.max_boxes"})
_PREPROCESS = frozenset(name for name in OPTION_FLAGS if name.startswith("preprocess."))
_PHOTO_TAKES = frozenset(OPTION_FLAGS) - _VIDEO_ONLY - _DETECTION_ONLY
_VIDEO_TAKES = frozenset({
    "layer", "target", "alpha", "colormap", "batch_size", "max_megapixels", "max_side", "frame", "tint",
    "counterfactual", "eigen_smooth", "perturbation_batch", "method_options", "top_channels", "prefix_tokens",
    "token_grid", "engine", *_VIDEO_ONLY, *_PREPROCESS,
})  # fmt: skip
_ARRAY_TAKES = frozenset({
    "layer", "target", "alpha", "colormap", "resume", "counterfactual", "eigen_smooth", "perturbation_batch",
    "method_options", "top_channels", "engine", "max_megapixels",  # millions of values (voxels, samples)
})  # fmt: skip
_DETECTION_TAKES = frozenset({
    "layer", "alpha", "colormap", "max_megapixels", "counterfactual", "eigen_smooth", "perturbation_batch",
    "method_options", "top_channels", "prompts", "target", *_DETECTION_ONLY,  # prompts: OWL's text queries
})  # fmt: skip


@dataclass(frozen=True)
class InputKind:
    """One kind of input: its ``name`` (``--kind``), what it is, the file suffixes it may read, the
    options it honours (``takes``, besides those every kind takes), and how it runs: ``batched`` kinds go
    through the photo Runner (decoded to a DecodedPhoto), the others one file at a time (``explain_file``)."""

    name: str
    plural: str
    suffixes: tuple[str, ...]
    takes: frozenset[str]
    batched: bool
    how: str  # said when an option is refused: how this kind is run
    images: bool = True  # its model takes images (a black photo may probe it); volumes and signals: no

    def honours(self, option: str) -> bool:
        return option in EVERY_KIND_TAKES or option in self.takes

    def preprocessing_of(self, bundle: LoadedModel) -> Preprocessing | None:
        """What this kind's inputs go through before ``bundle``'s model, as the manifest records it: the
        bundle's preprocessing for photos, image arrays and videos; None for the kinds given to the model
        as they are (volumes, signals) or letterboxed (a detector's photos)."""
        return bundle.preprocessing if self.honours("preprocess.resize") else None

    def preprocessed(self, bundle: LoadedModel, options: RunOptions) -> LoadedModel:
        """``bundle`` with the user's ``--resize``/``--crop``/``--mean``/``--std``/``--interpolation`` in its
        preprocessing, for the kinds whose inputs are resized for the model (a UsageError, one line, for
        values that do not fit the model)."""
        if not self.honours("preprocess.resize"):
            return bundle
        return replace(bundle, preprocessing=options.preprocess.applied_to(bundle.preprocessing))

    def explain_file(self) -> Callable[..., Any]:
        """``(bundle, path, key, options, progress) -> PhotoRecord`` for a kind run one file at a time."""
        if self.name == "video":
            from .video import explain_video

            return explain_video
        if self.name == "detection":
            from .detect import explain_detections

            return explain_detections
        from .arrays import explain_array

        return lambda bundle, path, key, options, progress=None: explain_array(bundle, Path(path), key, options)


PHOTO = InputKind("photo", "photos", tuple(sorted(IMAGE_SUFFIXES)), _PHOTO_TAKES, True, "")
IMAGE = InputKind("image", "image arrays", IMAGE_ARRAY_SUFFIXES, _PHOTO_TAKES, True, "")
VIDEO = InputKind(
    "video", "videos", VIDEO_SUFFIXES, _VIDEO_TAKES, False, "videos are explained one at a time, as a stream"
)
VOLUME = InputKind(
    "volume", "volumes", (".npy", ".nii", ".nii.gz"), _ARRAY_TAKES, False, "volumes are explained one file at a time",
    images=False,
)  # fmt: skip
SIGNAL = InputKind(
    "signal", "signals", (".npy",), _ARRAY_TAKES, False, "signals are explained one file at a time", images=False
)
KINDS: dict[str, InputKind] = {kind.name: kind for kind in (PHOTO, IMAGE, VIDEO, VOLUME, SIGNAL)}
DETECTION = InputKind(
    "detection", "a detector's photos", tuple(sorted(IMAGE_SUFFIXES)), _DETECTION_TAKES, False,
    "a detector explains each box it keeps, one photo at a time",
)  # fmt: skip


def _known_detector(model: str) -> bool:
    """Whether ``model`` names a detector before it is loaded: a ``yolo:`` config or checkpoint that is not a
    classify model by its name (Ultralytics' own rule: ``-cls`` in the name, or a ``classify`` folder), an
    ``hf:`` folder of an object-detection checkpoint. What the name cannot tell (a ``best.pt``, a hub name) is
    settled once the model is loaded (:func:`after_loading`)."""
    from ..io.hf_detection import is_detection_folder

    if model == DEFAULT_MODEL:  # embedded, a classifier: no torchvision import (1.5 s) on its way to a run
        return False
    if "." not in model and ":" not in model:  # a torchvision name: its segmentation models paint classes
        from ..io.tv_segmentation import segmentation_models

        return model in segmentation_models()
    if model.startswith("yolo:"):
        path = Path(model[5:])
        return "-cls" not in path.stem and "classify" not in path.parts and not undecided(model)
    return model.startswith("hf:") and is_detection_folder(model[3:])


def undecided(model: str) -> bool:
    """Whether only loading ``model`` tells whether it detects or classifies: a ``yolo:`` checkpoint (its task
    is inside the pickle), an ``hf:`` hub name (its config is on the hub). Its options are checked once it is
    loaded."""
    if model.startswith("yolo:"):
        return model.endswith(".pt")
    return model.startswith("hf:") and not Path(model[3:]).is_dir()


def for_model(kind: InputKind, model: str) -> InputKind:
    """The kind a run has with ``model``: photos given to a detector (``yolo:``, an ``hf:`` folder of an
    object-detection checkpoint) are a detection run; other inputs are refused for a detector in one line."""
    if not _known_detector(model):
        return kind
    if kind.name != "photo":
        raise UsageError(f"--model {model}: a detector explains photos, not {kind.plural}")
    return DETECTION


def after_loading(kind: InputKind, is_detector: bool) -> InputKind:
    """The kind once the model is loaded and known: a hub detector's photos become a detection run, and a
    ``yolo:`` model its name took for a detector but that classifies (a ``best.pt`` of a classify run) a
    photo run again."""
    if is_detector and kind.name == "photo":
        return DETECTION
    if not is_detector and kind is DETECTION:
        return PHOTO
    return kind


# kinds that may share one run: they are run by the same loop and written to the same manifest
_RUN_TOGETHER = {"volume": "arrays", "signal": "arrays"}


def kind_of(path: Path, override: str | None = None) -> InputKind | None:
    """The kind of the file at ``path`` (None: no kind reads it): ``override`` (``--kind``) where the kind
    reads files with this suffix, else guessed from the suffix and, for ``.npy`` and TIFF, the header
    (a ``.npy`` of 1-2 dimensions is a signal, of 3-4 a volume; a 16-bit or float TIFF an image array)."""
    name = path.name.lower()
    if override is not None:
        kind = KINDS[override]
        return kind if name.endswith(kind.suffixes) else None
    if name.endswith(VIDEO_SUFFIXES):
        return VIDEO
    if name.endswith((".nii", ".nii.gz")):
        return VOLUME
    if name.endswith(".npy"):
        dimensions = array_dimensions(path)
        return VOLUME if dimensions is not None and dimensions >= 3 else SIGNAL
    if name.endswith((".tif", ".tiff")) and is_high_precision_tiff(path):
        return IMAGE
    return PHOTO if path.suffix.lower() in IMAGE_SUFFIXES else None


@dataclass(frozen=True)
class FoundInputs:
    """The files of a run, all of one kind (or of kinds run together: volumes and signals)."""

    kind: InputKind
    found: FoundImages


def find_inputs(inputs: Sequence[str], exclude: Iterable[Path] = (), override: str | None = None) -> FoundInputs:
    """Expand files, folders (recursive) and globs into the files of one kind; a UsageError when they are
    of several kinds that cannot share a run (say which in one line) or none is found."""
    if override is not None and override not in KINDS:
        raise UsageError(f"--kind {override}: choose from {', '.join(KINDS)}")
    seen: dict[Path, InputKind | None] = {}  # each file's kind read once (a .npy header, a TIFF's mode)

    def accept(path: Path) -> bool:
        seen[path] = kind_of(path, override)
        return seen[path] is not None

    found = find_images(inputs, exclude, accept=accept)
    kinds: dict[str, InputKind] = {}
    for path in found.paths:
        kind = seen[path] if path in seen else kind_of(path, override)
        kind = kind or (KINDS[override] if override else PHOTO)  # files named one by one are tried
        kinds.setdefault(kind.name, kind)
    runs = {_RUN_TOGETHER.get(name, name) for name in kinds}
    if len(runs) > 1:
        named = " and ".join(kinds[name].plural for name in sorted(kinds))
        raise UsageError(f"{named} in one run: give them to separate `gradcam explain` runs (or say --kind)")
    if not kinds:
        return FoundInputs(KINDS[override] if override else PHOTO, found)
    chosen = kinds.get("volume") or next(iter(kinds.values()))
    return FoundInputs(chosen, found)


# what the kinds run one file at a time write, as the manifest's ``format`` and ``save`` say it
_FILE_OUTPUTS = {
    "video": ("mp4", ["overlay"]), "volume": ("png", ["map"]), "signal": ("png", ["map"]),
    "detection": ("png", ["overlay", "map"]),
}  # fmt: skip


def manifest_outputs(kind: InputKind, options: RunOptions) -> dict[str, Any]:
    """The manifest's ``format`` and ``save`` for a run of ``kind``, whichever engine ran it: the photo
    outputs asked for (``--format``, ``--save`` with what ``--per-channel`` and ``--guided`` add), or what
    a video, volume or signal run writes."""
    if kind.name in _FILE_OUTPUTS:
        format, save = _FILE_OUTPUTS[kind.name]
        return {"format": format, "save": save}
    return {"format": options.format, "save": sorted(saved_outputs(options))}


def refuse_unsupported(kind: InputKind, options: RunOptions) -> None:
    """A UsageError naming the first option given that ``kind`` does not honour: nothing is dropped
    silently (``--counterfactual`` on a volume would otherwise give a plain map)."""
    for name in given_options(options):
        if not kind.honours(name):
            how = f" ({kind.how})" if kind.how else ""
            raise UsageError(f"{OPTION_FLAGS[name]}: not for {kind.plural}{how}")
