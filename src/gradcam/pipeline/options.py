"""One options type for a run of ``gradcam explain``, whatever the input kind and the engine.

:class:`RunOptions` is built from the command line in one place (``gradcam.apps.cli.explain``) and read by
every kind (:mod:`gradcam.pipeline.kinds`) and engine (local, Ray). What differs between kinds sits in a
sub-option (:class:`VideoSettings`); :data:`OPTION_FLAGS` names the command-line flag of each field, so that
an option a kind does not honour is refused in one line naming the flag (:func:`given_options`).

Example:
    >>> options = RunOptions(out=Path("out"), counterfactual=True)
    >>> [OPTION_FLAGS[name] for name in given_options(options)]
    ['--counterfactual']
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..io.images import DEFAULT_MAX_MEGAPIXELS
from ..io.models import Preprocessing
from ..methods import CAMMethod, get_method
from ..targets import class_index


class UsageError(ValueError):
    """A bad option: exit code 2."""


@dataclass(frozen=True)
class VideoSettings:
    """What only videos take: every ``every``-th frame explained (the output keeps those), and frame by
    frame with an image model, ``smoothing`` of the previous frame's map kept (0 <= s < 1)."""

    every: int = 1
    smoothing: float = 0.0


@dataclass(frozen=True)
class DetectionSettings:
    """What only a detector's photos take (``yolo:`` models): boxes kept from ``conf`` up, at most
    ``max_boxes`` of them a photo (after the detector's own non-maximum suppression)."""

    conf: float = 0.25
    max_boxes: int = 10


INTERPOLATIONS = ("bilinear", "bicubic")


@dataclass(frozen=True)
class PreprocessSettings:
    """The user's own preprocessing (``--resize``, ``--crop``, ``--mean``, ``--std``, ``--interpolation``),
    each replacing the model's where given. ``--crop`` alone keeps the model's ratio of resize to crop
    (256/224 for ImageNet's: ``--crop 240`` resizes to 274); ``--resize`` alone keeps its crop.

    Example:
        >>> chosen = PreprocessSettings(crop=(240, 240), mean=(0.5,), std=(0.5,))
        >>> chosen.applied_to(Preprocessing(resize=256, crop=(224, 224))).describe()
        'resize the shorter side to 274, centre crop 240 x 240 (bilinear), mean 0.5 0.5 0.5, std 0.5 0.5 0.5'
    """

    resize: int | None = None
    crop: tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    interpolation: str | None = None

    def applied_to(self, spec: Preprocessing) -> Preprocessing:
        """``spec`` with these choices in it; a UsageError (one line naming the option) for values that do
        not fit together or the model's channels."""
        if self == PreprocessSettings():
            return spec
        crop = self.crop or spec.crop
        resize = self.resize
        if resize is None:
            resize = round(max(crop) * spec.resize / max(spec.crop)) if self.crop else spec.resize
        if min(crop) > resize and not spec.squash:
            raise UsageError(f"--resize {resize}: smaller than the crop {crop[0]}x{crop[1]}; give --resize >= --crop")
        channels = len(spec.mean)
        mean = _per_channel("--mean", self.mean, channels) or spec.mean
        std = _per_channel("--std", self.std, channels) or spec.std
        return replace(spec, resize=resize, crop=crop, mean=mean, std=std,
                       interpolation=self.interpolation or spec.interpolation)  # fmt: skip


def _per_channel(flag: str, values: tuple[float, ...] | None, channels: int) -> tuple[float, ...] | None:
    if values is None:
        return None
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        what = f"{channels} channels; give 1 or {channels}" if channels > 1 else "one channel (grey); give 1"
        raise UsageError(f"{flag}: {len(values)} values for a model of {what}")
    return values


@dataclass
class RunOptions:
    """Every option of a run (see ``gradcam explain -h``); ``out`` is the output folder."""

    out: Path
    method: str = "gradcam"
    layer: str | None = None
    target: str | None = None
    prompts: tuple[str, ...] = ()
    per_channel: int = 0
    alpha: float = 0.5
    colormap: str = "jet"
    batch_size: int = 8
    workers: int = 2
    device: str = "cpu"
    overwrite: bool = False
    resume: bool = False
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
    max_side: int | None = None
    frame: str = "crop"
    tint: str = "flat"
    legend: bool | None = None  # None: a footer where the kind draws photos' overlays (a picture shared alone says
    # what it shows, #27 item 3); True/False: asked for (refused by kinds that draw none) or not
    scale: str = "own"  # own: each map to its own maximum; shared: a photo's maps to its strongest one
    counterfactual: bool = False
    eigen_smooth: bool = False
    aug_smooth: bool = False
    guided: bool = False
    perturbation_batch: int = 32
    method_options: tuple[tuple[str, str], ...] = ()
    top_channels: int | None = None
    prefix_tokens: int | None = None
    token_grid: tuple[int, int] | None = None
    save: tuple[str, ...] = ("overlay",)
    format: str = "jpg"
    replicas: int | None = None  # model copies side by side (None: one per thread on a CPU up to 512 MB, else 1)
    video: VideoSettings = field(default_factory=lambda: VideoSettings())
    detection: DetectionSettings = field(default_factory=lambda: DetectionSettings())
    preprocess: PreprocessSettings = field(default_factory=lambda: PreprocessSettings())
    kind: str | None = None  # the input kind (gradcam.pipeline.kinds); None: guessed from each file
    engine: str = "local"  # or "ray"

    def cam_method(self) -> CAMMethod | str:
        """The method, with its options where it takes some (``--method-option KEY=VALUE`` too)."""
        method = type(get_method(self.method))
        options = list(self.method_options)
        if method.needs_model and method.accepts("batch_size"):
            options.append(("batch_size", str(self.perturbation_batch)))
        if method.accepts("top_channels"):
            options.append(("top_channels", str(self.top_channels)))
        from .method_options import method_with_options

        return method_with_options(self.method, options) if options else self.method


def layer_spec(text: str | None) -> str | list[str] | None:
    """``--layer``: one name, or several comma-separated (their maps fused: averaged, or multiplied by
    refinecam)."""
    if text is None or "," not in text:
        return text
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_target(
    target: str | None, labels: Sequence[str] | None, num_classes: int | None = None, flag: str = "--target"
) -> Any:
    """``--target`` to a target spec: None (top-1), ``top3``, or comma-separated indices / class names;
    errors name ``flag`` (another option that takes classes: ``gradcam audit --prove``)."""
    if target is None or not target.strip():
        return None
    text = target.strip()
    if re.fullmatch(r"top-?\d+", text, re.IGNORECASE):
        return text
    row: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if re.fullmatch(r"-?[0-9]+", part):  # ASCII digits: "²".isdigit() is True, int("²") fails
            index = int(part)
        elif labels is None:
            raise UsageError(f"{flag} {part!r}: this model's class names are unknown; give a class index")
        else:
            try:
                index = class_index(part, labels)
            except ValueError as error:
                raise UsageError(f"{flag}: {error}") from None
        if num_classes is not None and not 0 <= index < num_classes:
            raise UsageError(f"{flag} {index}: out of range for a model with {num_classes} classes")
        if index not in row:
            row.append(index)
    if not row:
        raise UsageError(f"{flag} {target!r}: no class given")
    return row


# The command-line flag of each option; a kind that does not honour an option refuses it by this name.
OPTION_FLAGS: dict[str, str] = {
    "method": "--method", "layer": "--layer", "target": "--target", "prompts": "--prompt",
    "per_channel": "--per-channel", "alpha": "--alpha", "colormap": "--colormap", "batch_size": "--batch-size",
    "workers": "--workers", "device": "--device", "overwrite": "--overwrite", "resume": "--resume",
    "max_megapixels": "--max-megapixels", "max_side": "--max-side", "frame": "--frame", "tint": "--tint",
    "legend": "--legend", "scale": "--scale", "counterfactual": "--counterfactual", "eigen_smooth": "--eigen-smooth",
    "aug_smooth": "--aug-smooth", "guided": "--guided", "perturbation_batch": "--perturbation-batch",
    "method_options": "--method-option", "top_channels": "--top-channels", "prefix_tokens": "--prefix-tokens",
    "token_grid": "--token-grid", "save": "--save", "format": "--format", "replicas": "--replicas",
    "video.every": "--every", "video.smoothing": "--smoothing", "kind": "--kind", "engine": "--engine ray",
    "detection.conf": "--conf", "detection.max_boxes": "--max-boxes", "preprocess.resize": "--resize",
    "preprocess.crop": "--crop", "preprocess.mean": "--mean", "preprocess.std": "--std",
    "preprocess.interpolation": "--interpolation",
}  # fmt: skip
# Options that every kind takes: where the output goes and what the run may do to it.
EVERY_KIND_TAKES = frozenset({"method", "device", "overwrite", "kind"})


def saved_outputs(options: RunOptions) -> frozenset[str]:
    """The outputs a photo run writes: ``--save``, with ``channels`` for ``--per-channel`` and ``guided`` for
    ``--guided``."""
    extra = ({"channels"} if options.per_channel else set()) | ({"guided"} if options.guided else set())
    return frozenset(set(options.save) | extra)


def given_options(options: RunOptions) -> list[str]:
    """The options of ``options`` set to something other than their default (``video.every`` for a
    sub-option), in :data:`OPTION_FLAGS` order; ``out`` is never listed."""
    defaults = RunOptions(out=options.out)
    given = []
    for name in OPTION_FLAGS:
        owner, _, leaf = name.rpartition(".")
        value = getattr(getattr(options, owner), leaf) if owner else getattr(options, name)
        default = getattr(getattr(defaults, owner), leaf) if owner else getattr(defaults, name)
        if value != default:
            given.append(name)
    return given


def option_names() -> list[str]:
    """Every option's name as :data:`OPTION_FLAGS` has it (a test checks that no field lacks a flag)."""
    names = [f.name for f in fields(RunOptions) if f.name not in ("out", "video", "detection", "preprocess")]
    video = [f"video.{f.name}" for f in fields(VideoSettings)]
    detection = [f"detection.{f.name}" for f in fields(DetectionSettings)]
    return names + video + detection + [f"preprocess.{f.name}" for f in fields(PreprocessSettings)]
