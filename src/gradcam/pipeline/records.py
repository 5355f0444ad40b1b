"""The per-photo record and the run manifest: one typed form, one JSON form, versioned.

Every engine (the local one, the Ray actors, the web app) builds these through
:class:`gradcam.pipeline.writer.PhotoWriter` and writes them with :meth:`RunManifest.to_json`; the JSON
form is described in ``docs/manifest.md`` and checked against ``manifest.schema.json`` (shipped beside
this module) in the tests.

A record keeps each map once, at the layer's resolution, in float16 (a few hundred bytes), with the
geometry that places it on the photo; :func:`full_map` gives it back at the model's input size or on
the whole photo.

Example:
    >>> manifest = read_manifest_file("gradcam-out/results.json")           # doctest: +SKIP
    >>> photo = manifest.images[0]
    >>> heat = full_map(photo, target=0, on="photo")        # (H, W) in [0, 1], the photo's own pixels
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ..io.images import Geometry, to_original
from ..result import normalise, upsample

MANIFEST_VERSION = 2
SCHEMA = Path(__file__).with_name("manifest.schema.json")


@dataclass(frozen=True)
class StoredMap:
    """One map, float16, little-endian, base64: at the layer's grid (``grid="layer"``: the final map is
    ``normalise(upsample(map))``, as :func:`gradcam.explain` makes it) or, where the final map is not that
    (several layers fused, smoothing), the final map itself at the input's size (``grid="input"``)."""

    shape: tuple[int, int]
    grid: Literal["layer", "input"]
    float16: str

    @classmethod
    def of(cls, values: torch.Tensor, grid: Literal["layer", "input"]) -> StoredMap:
        array = values.detach().float().cpu().numpy().astype("<f2")
        shape = (int(array.shape[0]), int(array.shape[1]))
        return cls(shape, grid, base64.b64encode(array.tobytes()).decode("ascii"))

    @classmethod
    def best(cls, raw: torch.Tensor, final: torch.Tensor, tolerance: float = 2e-3) -> StoredMap:
        """``raw`` (h, w) at the layer's grid where it gives back ``final`` (H, W) within ``tolerance``
        after float16 storage, else ``final`` itself."""
        return cls.best_of_batch(raw[None, None], final[None, None], tolerance)[0][0]

    @classmethod
    def best_of_batch(cls, raw: torch.Tensor, final: torch.Tensor, tolerance: float = 2e-3) -> list[list[StoredMap]]:
        """:meth:`best` of every (B, K) map at once: one upsampling of the batch instead of one per map
        (the writer's threads then run no torch operation of their own)."""
        half = raw.detach().float().cpu().to(torch.float16)
        final = final.detach().float().cpu()
        rebuilt = normalise(upsample(half.float(), tuple(final.shape[2:])))
        close = ((rebuilt - final).abs() <= tolerance + 1e-5 * final.abs()).flatten(2).all(dim=-1).tolist()  # allclose
        return [
            [cls.of(half[b, k], "layer") if close[b][k] else cls.of(final[b, k], "input") for k in range(raw.shape[1])]
            for b in range(raw.shape[0])
        ]

    def tensor(self) -> torch.Tensor:
        """The stored values, (h, w) float32."""
        array = np.frombuffer(base64.b64decode(self.float16), dtype="<f2").reshape(self.shape)
        return torch.from_numpy(array.astype(np.float32))


@dataclass(frozen=True)
class TargetRecord:
    """One explained target of a photo: the class (``index``/``label``, None for a callable target), the
    explained ``score``, the files written for it (``overlay``, ``map``, ``channels``, ``guided``; for a
    video ``video`` and ``contact_sheet``) and the map itself (None for a video: its maps are in the video)."""

    index: int | None
    label: str | None
    score: float
    files: dict[str, str]
    map: StoredMap | None = None
    box: tuple[float, float, float, float] | None = None  # a detector's box (x1, y1, x2, y2) on the photo
    raw_max: float | None = None  # the map's maximum before scaling to [0, 1]; 0: an empty map (photos)
    area: float | None = None  # a segmentation class's (an instance mask's) share of the image


@dataclass(frozen=True)
class Prediction:
    """One of the top-5: a class probability, or an image-text model's cosine ``similarity``."""

    index: int
    label: str
    probability: float | None = None
    similarity: float | None = None


@dataclass(frozen=True)
class PhotoRecord:
    """What happened to one photo. ``status`` is ``"ok"`` or ``"error"`` (then only ``error`` says more).

    ``size`` is the photo's own (width, height); ``overlay_size`` the size drawn (smaller with
    ``--max-side``, a whole multiple for a photo under 320 px wide); ``geometry`` how the photo became the
    model's input (see :class:`gradcam.io.images.Geometry`), which :func:`full_map` uses to place the maps on it."""

    path: str
    status: Literal["ok", "error"]
    error: str | None = None
    method: str | None = None
    layer: str | None = None
    size: tuple[int, int] | None = None
    overlay_size: tuple[int, int] | None = None
    geometry: Geometry | None = None
    thumbnail: str | None = None
    all_classes: str | None = None
    predictions: tuple[Prediction, ...] = ()
    targets: tuple[TargetRecord, ...] = ()
    frames: int | None = None  # a video: the frames explained, and their rate
    fps: float | None = None
    kind: str | None = None  # "volume" or "signal" for an array file (None: a photo or a video)
    shape: tuple[int, ...] | None = None  # an array file's own shape

    @classmethod
    def failed(cls, path: str, error: str) -> PhotoRecord:
        return cls(path=path, status="error", error=error)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict[str, Any]:
        if not self.ok:
            return {"path": self.path, "status": self.status, "error": self.error}
        data = _without_none(asdict(self))
        data.pop("error", None)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PhotoRecord:
        if data.get("status") != "ok":
            return cls.failed(str(data.get("path", "")), str(data.get("error", "")))
        geometry = data.get("geometry")
        return cls(
            path=data["path"],
            status="ok",
            method=data.get("method"),
            layer=data.get("layer"),
            size=_pair(data.get("size")),
            overlay_size=_pair(data.get("overlay_size")),
            geometry=Geometry(**{k: _pair(v) for k, v in geometry.items()}) if geometry else None,  # type: ignore[arg-type]
            thumbnail=data.get("thumbnail"),
            all_classes=data.get("all_classes"),
            frames=data.get("frames"),
            fps=data.get("fps"),
            kind=data.get("kind"),
            shape=tuple(data["shape"]) if data.get("shape") else None,
            predictions=tuple(Prediction(**p) for p in data.get("predictions", [])),
            targets=tuple(
                TargetRecord(
                    index=t.get("index"),
                    label=t.get("label"),
                    score=t["score"],
                    files=dict(t.get("files", {})),
                    map=StoredMap(_pair(t["map"]["shape"]), t["map"]["grid"], t["map"]["float16"])  # type: ignore[arg-type]
                    if t.get("map")
                    else None,
                    box=tuple(t["box"]) if t.get("box") else None,  # type: ignore[arg-type]
                    raw_max=t.get("raw_max"),
                    area=t.get("area"),
                )
                for t in data.get("targets", [])
            ),
        )


@dataclass
class RunManifest:
    """One run: what was asked (model, methods, layer, target, options), when, and one
    :class:`PhotoRecord` per photo. ``engine`` is ``local``, ``ray``, ``web`` or ``python``
    (:meth:`gradcam.PhotoExplanation.save`)."""

    engine: Literal["local", "ray", "web", "python"]
    model: str
    methods: list[str]
    layer: str | None = None
    model_source: str | None = None
    target: str | None = None
    prompts: list[str] | None = None
    frame: str = "crop"
    colormap: str = "jet"
    format: str = "jpg"
    save: list[str] = field(default_factory=lambda: ["overlay"])
    counterfactual: bool = False
    eigen_smooth: bool = False
    aug_smooth: bool = False
    started: str | None = None
    finished: str | None = None
    kind: str | None = None  # the input kind (photo, image, video, volume, signal); None: photos (before 0.9)
    options: dict[str, Any] = field(default_factory=dict)  # every other option given, by name: {"alpha": 0.7}
    preprocessing: dict[str, Any] | None = None  # what the inputs went through (Preprocessing.to_json); None: none
    images: list[PhotoRecord] = field(default_factory=list)
    version: int = MANIFEST_VERSION
    tool: str = "gradcam"

    @property
    def summary(self) -> dict[str, int]:
        ok = sum(1 for record in self.images if record.ok)
        return {"images": len(self.images), "ok": ok, "failed": len(self.images) - ok}

    def to_json(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in _RUN_FIELDS}
        data["summary"] = self.summary
        data["images"] = [record.to_json() for record in self.images]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunManifest:
        """A manifest of this version, or an earlier one's (version 1 named one ``method``)."""
        if not isinstance(data, dict) or not isinstance(data.get("images", []), list):
            raise ValueError("not a gradcam manifest")
        methods = data.get("methods") or ([data["method"]] if data.get("method") else [])
        known = {name: data[name] for name in _RUN_FIELDS if name in data and name not in ("version", "methods")}
        return cls(
            **{**known, "engine": data.get("engine", "local"), "model": data.get("model", ""), "methods": methods},
            images=[PhotoRecord.from_json(e) for e in data.get("images", []) if isinstance(e, dict)],
        )


_RUN_FIELDS = ("version", "tool", "engine", "model", "model_source", "methods", "layer", "target", "prompts",
               "frame", "colormap", "format", "save", "counterfactual", "eigen_smooth", "aug_smooth", "started",
               "finished", "kind", "options", "preprocessing")  # fmt: skip


def read_manifest_file(path: str | Path) -> RunManifest:
    """A ``results.json`` written by any engine."""
    return RunManifest.from_json(json.loads(Path(path).read_text(encoding="utf-8")))


def full_map(record: PhotoRecord, target: int = 0, on: Literal["input", "photo"] = "input") -> torch.Tensor:
    """Target ``target``'s map of ``record`` in [0, 1]: at the model's input size (``on="input"``, what
    ``explain().maps`` held), or carried onto the drawn photo, (height, width) of ``overlay_size``, with 0
    where the model did not look (``on="photo"``)."""
    stored = record.targets[target].map
    if stored is None:
        raise ValueError(f"{record.path}: no map stored for target {target}")
    if record.geometry is None:
        raise ValueError(f"{record.path}: no geometry stored, so the map cannot be placed")
    values = stored.tensor()[None, None]
    heat = normalise(upsample(values, record.geometry.crop)) if stored.grid == "layer" else values
    if on == "input":
        return heat[0, 0]
    placed, coverage = to_original(heat[0], record.geometry)
    return placed[0] * coverage[0]


def _pair(value: Any) -> tuple[int, int] | None:
    return (int(value[0]), int(value[1])) if value is not None else None


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_without_none(v) for v in value]
    return value
