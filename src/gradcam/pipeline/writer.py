"""The one writer: (decoded photo, explanation, options) -> the files people look at and a :class:`PhotoRecord`.

The local engine, the Ray actors and the web app all call :meth:`PhotoWriter.write`, so a field or a file
name cannot drift between them. Files are written atomically; a photo's existing files are never replaced
unless the options allow it.

Outputs (``save``): ``overlay`` (the map on the photo at its own resolution, JPEG quality 90 by default,
or PNG/WebP), ``map`` (the map at the model's input size, float32 ``.npy``), ``channels`` (the per-feature-map
grid, with ``per_channel``), ``guided`` (Guided Grad-CAM). Every record also keeps each map at the layer's
resolution in float16 with its geometry (:func:`gradcam.pipeline.records.full_map`), and a photo
thumbnail for ``index.html``.

Example:
    >>> writer = PhotoWriter(WriteOptions(out=Path("out"), method="gradcam"), labels)      # doctest: +SKIP
    >>> record = writer.write("photos/cat.jpg", "cat", decoded, ex, row=0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..guided import gradient_picture
from ..io.files import write_atomic
from ..io.images import model_view
from ..io.models import Preprocessing
from ..render.captions import caption
from ..render.viz import (
    channel_grid,
    enlarged_for_drawing,
    heat_plane,
    overlay_image,
    smooth_for_drawing,
    stamp_untrained,
    to_pil,
    with_legend,
)
from ..result import ChannelContributions, Explanation
from .decode import DecodedPhoto
from .naming import label_of, target_stem
from .records import PhotoRecord, Prediction, StoredMap, TargetRecord

OUTPUTS = ("overlay", "map", "channels", "guided")
FORMATS = {"jpg": ("JPEG", {"quality": 90}), "png": ("PNG", {"compress_level": 1}), "webp": ("WEBP", {"quality": 90})}
THUMBNAIL_SIDE = 512


@dataclass(frozen=True)
class PreparedMaps:
    """What the writer needs of a batch's maps, made once per batch by :meth:`PhotoWriter.prepare` (torch,
    in the caller's thread): each map as stored in the record, as the 8-bit plane drawn, and its raw maximum
    before scaling (0: an empty map)."""

    stored: list[list[StoredMap]]
    planes: np.ndarray  # (B, K, H, W) uint8
    peaks: np.ndarray  # (B, K) float


@dataclass(frozen=True)
class WriteOptions:
    """How a photo's outputs look and which are written (``save``, a subset of :data:`OUTPUTS`)."""

    out: Path
    method: str
    save: frozenset[str] = frozenset({"overlay"})
    format: str = "jpg"
    alpha: float = 0.5
    colormap: str = "jet"
    tint: str = "flat"
    legend: bool = False
    per_channel: int = 0
    counterfactual: bool = False
    prompts: bool = False  # the targets are text prompts: scores are cosine similarities
    thumbnail: bool = True
    scale: str = "own"  # "own": each map scaled to its own maximum; "shared": a photo's maps to its strongest
    overwrite: bool = False  # replace a photo's existing files (--overwrite, or a resumed run's leftovers)
    preprocessing: Preprocessing | None = field(default=None, compare=False)
    untrained: bool = False  # the model has random weights: every picture says so (stamp_untrained)
    max_side: int | None = None  # --max-side: a small photo is not drawn enlarged beyond it


def save_picture(picture: Image.Image | torch.Tensor, path: Path, format: str = "png") -> None:
    """Write a picture atomically in ``format`` (:data:`FORMATS`)."""
    image = to_pil(picture) if isinstance(picture, torch.Tensor) else picture
    kind, options = FORMATS[format]
    write_atomic(path, lambda temporary: image.save(temporary, format=kind, **options))


def save_npy_atomic(array: np.ndarray, path: Path) -> None:
    def save(temporary: Path) -> None:
        with open(temporary, "wb") as handle:
            np.save(handle, array)

    write_atomic(path, save)


def save_thumbnail(photo: Image.Image, path: Path) -> None:
    """The photo ``THUMBNAIL_SIDE`` to twice that long (a smaller photo as it is), as a JPEG (atomic): a
    box reduction by the largest whole factor that keeps it at least ``THUMBNAIL_SIDE``, which costs a
    tenth of an exact resize (3.5 ms for a 610 px photo) and stays sharp where index.html shows it."""
    factor = max(1, max(photo.size) // THUMBNAIL_SIDE)
    picture = photo.reduce(factor) if factor > 1 else photo
    write_atomic(path, lambda temporary: picture.save(temporary, format="JPEG", quality=85))


def top_predictions(logits: torch.Tensor, labels: Any, similarity: bool, k: int = 5) -> list[list[Prediction]]:
    """The top ``k`` (at most the number of classes) of each row: probabilities, or cosine similarities."""
    ranked = logits if similarity else logits.softmax(dim=-1)
    top = ranked.topk(min(k, ranked.shape[-1]), dim=-1)
    kind = "similarity" if similarity else "probability"
    rows = zip(top.values.cpu(), top.indices.cpu(), strict=True)
    return [
        [Prediction(int(i), label_of(labels, int(i)), **{kind: round(float(v), 6)}) for v, i in zip(*row, strict=True)]
        for row in rows
    ]


BROKEN_SCORES = "the model's scores are NaN or infinite (are its weights broken?)"


def non_finite_rows(logits: torch.Tensor | None, scores: torch.Tensor) -> set[int]:
    """The rows of an explanation whose class scores (``logits``, if any) or explained scores are NaN or
    infinite: a model with a NaN in its weights explains every input with probability NaN, and such a
    record would make results.json invalid JSON. Every engine and kind asks this."""
    bad = ~torch.isfinite(scores.detach()).all(dim=-1)
    if logits is not None:
        bad |= ~torch.isfinite(logits.detach()).all(dim=-1)
    return {int(i) for i in torch.nonzero(bad.cpu()).flatten()}


class PhotoWriter:
    """Turns one photo's explanation into files and its :class:`PhotoRecord`."""

    def __init__(self, options: WriteOptions, labels: Any = None) -> None:
        unknown = set(options.save) - set(OUTPUTS)
        if unknown:
            raise ValueError(f"save: unknown output {sorted(unknown)[0]!r}; choose from {', '.join(OUTPUTS)}")
        if options.format not in FORMATS:
            raise ValueError(f"format: {options.format!r} is not one of {', '.join(FORMATS)}")
        self.options, self.labels = options, labels

    def label(self, index: int) -> str:
        return label_of(self.labels, index)

    def prepare(self, ex: Explanation) -> PreparedMaps:
        """The batch's stored maps and 8-bit planes, for :meth:`write` (whose threads then draw and encode
        only, with PIL: a torch operation in each of them would start threads of its own). With
        ``scale="shared"`` a photo's maps are drawn on one scale, its strongest map's maximum: a map with a
        tenth of that evidence is drawn a tenth as hot (the stored maps stay each normalised)."""
        drawn = ex.maps
        peaks = ex.raw.flatten(2).amax(dim=2).float() if ex.raw.numel() else torch.zeros(ex.maps.shape[:2])  # (B, K)
        if self.options.scale == "shared" and ex.raw.numel():
            strongest = peaks.amax(dim=1, keepdim=True)
            ratio = torch.where(strongest > 0, peaks / strongest.clamp(min=1e-30), torch.zeros_like(peaks))
            drawn = ex.maps * ratio[..., None, None].to(ex.maps)
        if ex.raw.dim() == 4 and drawn.dim() == 4:
            drawn = smooth_for_drawing(drawn, (int(ex.raw.shape[-2]), int(ex.raw.shape[-1])))
        return PreparedMaps(StoredMap.best_of_batch(ex.raw, ex.maps), heat_plane(drawn), peaks.cpu().numpy())

    def caption(self, ex: Explanation, row: int, k: int) -> str:
        """What target ``k`` of image ``row`` is, with its score and what the score is."""
        class_id = int(ex.targets[row, k]) if ex.targets is not None else None
        label = self.label(class_id) if class_id is not None else None
        probability = None
        if class_id is not None and ex.logits is not None and not self.options.prompts:
            probability = float(ex.logits[row].softmax(-1)[class_id])
        return caption(self.options.method, label, class_id if class_id is not None else k,
                       counterfactual=self.options.counterfactual, score=float(ex.scores[row, k]),
                       probability=probability, similarity=self.options.prompts)  # fmt: skip

    def plan(
        self, key: str, ex: Explanation, row: int, every: bool = False
    ) -> tuple[list[dict[str, Path]], list[Path]]:
        """The files of each target of image ``row``, and the photo's own (thumbnail, every class's maps)."""
        options = self.options
        base = options.out / key
        planned = []
        for k in range(ex.maps.shape[1]):
            class_id = int(ex.targets[row, k]) if ex.targets is not None else None
            label = self.label(class_id) if class_id is not None else None
            name = target_stem(base.name, options.method, class_id, label, k, options.counterfactual)
            files = {}
            if "overlay" in options.save:
                files["overlay"] = base.with_name(f"{name}.{options.format}")
            if "map" in options.save:
                files["map"] = base.with_name(f"{name}.npy")
            if "channels" in options.save and options.per_channel and ex.layer_results[0].weights is not None:
                files["channels"] = base.with_name(f"{name}.channels.png")
            if "guided" in options.save and ex.guided is not None:
                files["guided"] = base.with_name(f"{name}.guided-gradcam.png")
            planned.append(files)
        own = [base.with_name(f"{base.name}.photo.jpg")] if options.thumbnail else []
        if every:
            own.append(base.with_name(f"{base.name}.{options.method}.all-classes.npy"))
        return planned, own

    def write(
        self,
        path: str,
        key: str,
        photo: DecodedPhoto,
        ex: Explanation,
        row: int,
        predictions: list[Prediction] | None = None,
        contributions: ChannelContributions | None = None,
        every: torch.Tensor | None = None,
        pictures: list[Image.Image] | None = None,
        prepared: PreparedMaps | None = None,
    ) -> PhotoRecord:
        """Write image ``row`` of ``ex`` (the photo ``path``, named ``key`` under ``out``) and return its
        record; whatever fails fails this photo only, as an error record with one line. ``every``: (B, C,
        h, w) every class's maps (``--target all``); ``pictures`` receives the overlays drawn; ``prepared``:
        :meth:`prepare` of ``ex`` (made here when None)."""
        try:
            prepared = prepared if prepared is not None else self.prepare(ex)
            return self._write(path, key, photo, ex, row, predictions, contributions, every, pictures, prepared)
        except OSError as error:
            return PhotoRecord.failed(path, f"{path}: cannot write outputs ({error})")
        except Exception as error:  # a picture that cannot be drawn must not end the run either
            reason = str(error).splitlines()[0] if str(error) else ""
            return PhotoRecord.failed(path, f"{path}: cannot draw outputs ({type(error).__name__}: {reason})")

    def _write(
        self,
        path: str,
        key: str,
        photo: DecodedPhoto,
        ex: Explanation,
        row: int,
        predictions: list[Prediction] | None,
        contributions: ChannelContributions | None,
        every: torch.Tensor | None,
        pictures: list[Image.Image] | None,
        prepared: PreparedMaps,
    ) -> PhotoRecord:
        options = self.options
        assert photo.geometry is not None and photo.photo is not None
        geometry = photo.geometry
        planned, own = self.plan(key, ex, row, every is not None)
        if not options.overwrite:
            existing = [p for files in planned for p in files.values() if p.exists()] + [p for p in own if p.exists()]
            if existing:
                return PhotoRecord.failed(path, f"{existing[0]}: exists; pass --overwrite to replace it")
        (options.out / key).parent.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(photo.photo.permute(1, 2, 0).cpu().numpy())
        image, geometry = enlarged_for_drawing(image, geometry, options.max_side)  # a 32 px photo, legible
        thumbnail = own[0] if options.thumbnail else None
        if thumbnail is not None:
            save_thumbnail(image, thumbnail)
        every_file = own[-1] if every is not None else None
        if every is not None and every_file is not None:  # (C, h, w) float16: every class at the layer's grid
            save_npy_atomic(every[row].cpu().numpy(), every_file)
        view = None
        if contributions is not None and photo.input is not None and options.preprocessing is not None:
            view = model_view(photo.input, options.preprocessing)
        targets = []
        for k, files in enumerate(planned):
            class_id = int(ex.targets[row, k]) if ex.targets is not None else None
            peak = float(prepared.peaks[row, k])
            if "overlay" in files or pictures is not None:
                plane = prepared.planes[row, k]
                # an empty map (no evidence at this layer) is not drawn as a flat blue tint: the photo only
                alpha = options.alpha if peak > 0 else 0.0
                drawn = overlay_image(image, plane, geometry, alpha, options.colormap, options.tint)
                if options.untrained:
                    stamp_untrained(drawn)
                if options.legend:
                    empty = None
                    if peak <= 0:
                        against = "against " if options.counterfactual else "for "
                        what = self.label(class_id) if class_id is not None else "the target"
                        empty = f"empty map: no evidence {against}{what} at this layer"
                    shared = float(prepared.peaks[row].max()) if options.scale == "shared" else None
                    drawn = to_pil(with_legend(_tensor(drawn), self.caption(ex, row, k), options.colormap,
                                               peak=peak, empty=empty, shared=shared))  # fmt: skip
                if "overlay" in files:
                    save_picture(drawn, files["overlay"], options.format)
                if pictures is not None:
                    pictures.append(drawn)
            if "map" in files:
                save_npy_atomic(ex.maps[row, k].detach().float().cpu().numpy(), files["map"])
            if "guided" in files:
                save_picture(gradient_picture(ex.guided_gradcam[row, k].cpu()), files["guided"])
            if "channels" in files and contributions is not None and view is not None:
                grid = channel_grid(
                    view,
                    contributions.maps[row, k],
                    contributions.channels[row, k].tolist(),
                    contributions.totals[row, k].tolist(),
                    ex.maps[row, k].detach().float().cpu(),
                    float(contributions.grand_total[row, k]),
                    colormap=options.colormap,
                    alpha=options.alpha,
                )
                save_picture(grid, files["channels"])
            targets.append(
                TargetRecord(
                    index=class_id,
                    label=self.label(class_id) if class_id is not None else None,
                    score=float(ex.scores[row, k]),
                    files={kind: str(p) for kind, p in files.items()},
                    map=prepared.stored[row][k],
                    raw_max=round(peak, 6),
                )
            )
        return PhotoRecord(
            path=path,
            status="ok",
            method=options.method,
            layer=ex.layer,
            size=photo.size or (geometry.original[1], geometry.original[0]),
            overlay_size=(geometry.original[1], geometry.original[0]),
            geometry=geometry,
            thumbnail=str(thumbnail) if thumbnail is not None else None,
            all_classes=str(every_file) if every_file is not None else None,
            predictions=tuple(predictions or ()),
            targets=tuple(targets),
            kind=photo.kind,
            shape=photo.shape,
        )


def _tensor(picture: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1)
