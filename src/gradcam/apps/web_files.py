"""The web app's other inputs: a video, a volume or signal (``.npy``, NIfTI) or an image array (16-bit or
float TIFF) uploaded as a file, explained by the kind's own run (the registry of
:mod:`gradcam.pipeline.kinds`, the same code as ``gradcam explain``), or refused in one line.

Example:
    >>> result = explain_upload("scan.nii.gz", bundle, "gradcam", "", 0.5, "jet", Path("scratch"))  # doctest: +SKIP
    >>> result.picture                                          # the montage, plot, contact sheet or overlay
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..io.images import IMAGE_SUFFIXES, FoundImages
from ..io.models import LoadedModel
from ..pipeline.kinds import KINDS, kind_of, refuse_unsupported
from ..pipeline.options import RunOptions, UsageError, parse_target
from ..render.captions import caption
from .web_state import AppError

MAX_VIDEO_FRAMES = 600  # a request explains at most this many frames (longer videos: the command line)
PICTURE_FILES = ("montage", "plot", "contact_sheet", "overlay")


@dataclass(frozen=True)
class UploadResult:
    picture: str  # the file people look at
    files: list[str]  # every file written, the manifest last
    status: str


def explain_upload(
    path: str | Path,
    bundle: LoadedModel,
    method: str,
    target: str,
    alpha: float,
    colormap: str,
    out: Path,
    kind_name: str | None = None,
) -> UploadResult:
    """Explain one uploaded file into ``out``; an :class:`AppError` (one line) for a file no kind reads, a
    photo (the Photo box takes those), an option or target the kind cannot take, or a run that fails."""
    source = Path(path)
    kind = kind_of(source, kind_name) if kind_name else kind_of(source)
    if kind is None:
        reads = ", ".join(sorted({s for k in KINDS.values() if k.name != "photo" for s in k.suffixes}))
        raise AppError(f"{source.name}: not a file of a kind gradcam reads here ({reads})")
    if kind.name == "photo":
        raise AppError(f"{source.name}: a photo; put it in the Photo box")
    options = RunOptions(out=out, method=method, target=target.strip() or None, alpha=alpha, colormap=colormap,
                         overwrite=True, workers=0, replicas=1, format="png" if kind.batched else "jpg")  # fmt: skip
    try:
        refuse_unsupported(kind, _asked(options))
        if kind.name == "video":
            _check_video(source)
            from ..pipeline.video import video_target

            video_target(options, bundle.labels)
        else:
            parse_target(options.target, bundle.labels, len(bundle.labels) if bundle.labels is not None else None)
    except UsageError as error:
        raise AppError(str(error)) from None
    found = FoundImages([source], [source.parent], [], 0)
    if kind.batched:
        from ..pipeline.local import Runner

        result = Runner(bundle, found, options, kind=kind.name).run()
        entries, manifest = result.entries, result.manifest_path
    else:
        from ..pipeline.file_runs import FileRunner

        ran = FileRunner(bundle, found, kind, options).run()
        entries, manifest = ran.entries, ran.manifest_path
    (record,) = entries
    if not record.ok:
        raise AppError(str(record.error).replace(str(out), "the scratch folder"))
    files = [file for target_record in record.targets for file in target_record.files.values()]
    shown = record.targets[0].files
    picture = next(shown[key] for key in PICTURE_FILES if key in shown)
    what = ("an image array" if kind.name == "image" else f"a {kind.name}") + (
        f" {tuple(record.shape)}" if record.shape else ""
    )
    if record.frames is not None:
        what += f", {record.frames} frames"
    first = record.targets[0]
    named = caption(method, first.label, first.index, score=first.score, score_name="score")
    status = f"{what}: {named}; layer `{record.layer}`"
    return UploadResult(picture, [*files, str(manifest)], status)


def _asked(options: RunOptions) -> RunOptions:
    """The options as the user gave them: the web app's own run settings (no workers, one replica, files
    replaced in the request's scratch folder) are not the user's, so they are not checked against the kind."""
    from dataclasses import replace

    default = RunOptions(out=options.out)
    return replace(options, overwrite=False, workers=default.workers, replicas=None, format=default.format)


def _check_video(path: Path) -> None:
    from ..io.video import VideoReadError, video_info

    try:
        frames = video_info(path).frames
    except VideoReadError as error:
        raise UsageError(str(error)) from None
    if frames > MAX_VIDEO_FRAMES:
        raise UsageError(
            f"{path.name}: {frames} frames; the web app explains videos of at most {MAX_VIDEO_FRAMES} frames "
            "(use gradcam explain for longer ones)"
        )


PACKAGE_EXAMPLES = Path(__file__).parents[1] / "examples"
KIND_GUESSED = "guessed from the file"  # the page's choices: the kind of an uploaded file, the frame
FRAMES_SHOWN = {
    "crop": "the model's crop (rest dimmed)",
    "full": "the whole photo",
    "squash": "the whole photo, squashed",
}


def example_photos(folder: Path | None) -> list[str]:
    """The photos offered as examples: ``folder``'s, else those shipped inside the package."""
    if folder is None or not folder.is_dir():
        folder = PACKAGE_EXAMPLES
    return sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def colour_scale_html() -> str:
    """The colour scale under the overlays (jet; the colormap menu changes the overlays' colours)."""
    from ..render.report import colour_scale_css

    bar = f'<i style="display:inline-block;width:220px;height:10px;background:{colour_scale_css("jet")}"></i>'
    return f"<div>heat: low {bar} high &mdash; each map scaled to its own maximum (jet shown)</div>"
