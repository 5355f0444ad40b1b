"""Three lines from Python: a photo in, pictures out.

:func:`explain_image` takes a photo (a path, a PIL image or a (3, H, W) tensor) and a model (a name, the
embedded default, a :class:`~gradcam.LoadedModel`, or any module with ``preprocess=``), runs the model's own
preprocessing, and returns a :class:`PhotoExplanation` that draws itself on the photo at the photo's own
resolution: ``ex.overlay()``, ``ex.show()``, ``ex.save(folder)``, and inline in notebooks.

Example:
    >>> import gradcam
    >>> ex = gradcam.explain_image("examples/coffee.jpg")           # the embedded model, offline
    >>> ex.overlay().size, ex.names
    ((600, 400), ['espresso'])
"""

from __future__ import annotations

import html
import io
import json
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from ..explain import explain
from ..io.grey import grey_if_one_channel
from ..io.images import Geometry, framed, image_tensor, preprocess, read_image, to_rgb
from ..io.models import DEFAULT_MODEL, LoadedModel, Preprocessing, load_bundle
from ..render.viz import data_uri, enlarged_for_drawing, overlay_image, to_pil
from ..result import Explanation
from ..targets import Similarity, TargetSpec, TextPrompt

_LOADED: dict[tuple[str, str | None, str], LoadedModel] = {}
_LOADED_LOCK = threading.Lock()
IMAGENET = Preprocessing(resize=256, crop=(224, 224))


def explain_image(
    photo: str | Path | Image.Image | torch.Tensor,
    model: str | LoadedModel | nn.Module | None = None,
    method: str = "gradcam",
    layer: str | None = None,
    targets: TargetSpec = None,
    *,
    weights: str | None = None,
    preprocess_with: Preprocessing | None = None,
    labels: list[str] | None = None,
    frame: str = "crop",
    device: str | torch.device | None = None,
    **options: Any,
) -> PhotoExplanation:
    """Explain one photo with its model's own preprocessing; the result draws on the whole photo.

    Args:
        photo: a file path, a PIL image, or a (3, H, W) tensor (uint8, or float in [0, 1]).
        model: None (the embedded ImageNet model, offline), a name as for ``gradcam explain --model``
            (loaded once per process), a :class:`LoadedModel`, or an ``nn.Module`` (its preprocessing is
            ``preprocess_with``, by default ImageNet's: resize 256, crop 224, ImageNet mean/std; the photo's
            luminance for a model whose first convolution takes one channel).
        method, layer, targets: as for :func:`gradcam.explain` (``gradcam.TextPrompt`` on an image-text model).
        weights: a weights file for a model given by name (``"none"``: random weights).
        labels: class names (default: the model's own).
        frame: ``"crop"`` (the model's own view; the rest of the photo dimmed), ``"full"`` or ``"squash"``
            (see :func:`gradcam.io.images.framed`).
        options: more keyword arguments of :func:`gradcam.explain` (``counterfactual=True``, ...).

    Example:
        >>> ex = gradcam.explain_image("cat.jpg", "resnet50", targets="top-3")      # doctest: +SKIP
        >>> ex.save("out/")                        # overlays at the photo's resolution, maps, JSON
    """
    bundle = _bundle(model, weights, preprocess_with, device)
    image = _photo(photo)
    spec = framed(bundle.preprocessing, frame, image.size)
    pixels, geometry = preprocess(image, spec)
    parameter = next(bundle.model.parameters(), None)
    x = pixels[None].to(
        device=parameter.device if parameter is not None else "cpu",
        dtype=parameter.dtype if parameter is not None else torch.float32,
    )
    names = labels if labels is not None else bundle.labels
    targets = _for_one_photo(targets, names)
    if isinstance(targets, TextPrompt):
        names = list(targets.prompts)
    elif isinstance(targets, Similarity):
        names = list(targets.labels())
    ex = explain(bundle.model, x, method, bundle.layer_for(layer), targets, labels=names, **options)
    source = str(photo) if isinstance(photo, (str, Path)) else None
    return PhotoExplanation(ex, image_tensor(image), geometry, tuple(names) if names else None, bundle.name, frame,
                            source, bundle.preprocessing)  # fmt: skip


def _for_one_photo(targets: Any, labels: Any) -> Any:
    """``targets`` as K targets of the one photo: a list of classes (``["tiger cat", "tabby"]``, ``[282, 281]``)
    and the command line's ``"tiger cat,tabby"`` are several targets of this photo, not one per image of a
    batch ("2 targets for a batch of 1")."""
    if isinstance(targets, str) and "," in targets:
        from .options import parse_target

        return [parse_target(targets, labels)]
    classes = isinstance(targets, (list, tuple)) and len(targets) > 1
    if classes and all(isinstance(t, (int, str)) and not isinstance(t, bool) for t in targets):
        return [list(targets)]
    return targets


def _bundle(
    model: str | LoadedModel | nn.Module | None,
    weights: str | None,
    spec: Preprocessing | None,
    device: str | torch.device | None,
) -> LoadedModel:
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, nn.Module):
        bundle = LoadedModel(type(model).__name__, model, spec or IMAGENET)
        return bundle if spec is not None else grey_if_one_channel(bundle)  # an MNIST model: one channel
    name = model or DEFAULT_MODEL
    key = (name, weights, str(device or "cpu"))
    with _LOADED_LOCK:
        if key not in _LOADED:
            _LOADED[key] = load_bundle(name, weights, str(device or "cpu"))
        bundle = _LOADED[key]
    return bundle if spec is None else replace(bundle, preprocessing=spec)


def _photo(photo: str | Path | Image.Image | torch.Tensor) -> Image.Image:
    if isinstance(photo, (str, Path)):
        return read_image(Path(photo))
    if isinstance(photo, Image.Image):
        return to_rgb(photo)
    if isinstance(photo, torch.Tensor) and photo.dim() == 3 and photo.shape[0] in (1, 3):
        pixels = photo.detach().cpu()
        if pixels.is_floating_point():
            pixels = (pixels.clamp(0, 1) * 255).round().to(torch.uint8)
        return to_pil(pixels.expand(3, -1, -1).contiguous())
    raise TypeError(f"photo: a path, a PIL image or a (3, H, W) tensor, got {type(photo).__name__}")


@dataclass(frozen=True, repr=False)
class PhotoExplanation:
    """One photo's :class:`~gradcam.Explanation` with the photo, so that it can draw itself.

    ``maps``, ``targets``, ``scores``, ``layer`` are the explanation's (batch of 1); ``names`` the targets'
    class names (or prompts); ``overlay(k)`` the k-th target's map on the photo at its own resolution.
    """

    explanation: Explanation
    photo: torch.Tensor
    geometry: Geometry
    labels: tuple[str, ...] | None
    model: str
    frame: str = "crop"
    source: str | None = None  # the photo's path, when it was given by one
    preprocessing: Preprocessing | None = None  # what the photo went through (recorded by save())

    @property
    def maps(self) -> torch.Tensor:
        return self.explanation.maps

    @property
    def scores(self) -> torch.Tensor:
        return self.explanation.scores

    @property
    def targets(self) -> torch.Tensor | None:
        return self.explanation.targets

    @property
    def layer(self) -> str:
        return self.explanation.layer

    @property
    def names(self) -> list[str]:
        """The name of each target: its class name (or prompt), else its index."""
        count = self.maps.shape[1]
        indices = self.targets[0].tolist() if self.targets is not None else list(range(count))
        return [self.labels[i] if self.labels is not None and i < len(self.labels) else str(i) for i in indices]

    def overlay(
        self, k: int = 0, alpha: float = 0.5, colormap: str = "jet", tint: str = "flat", enlarge: bool = False
    ) -> Image.Image:
        """Target ``k``'s map over the photo, at the photo's own resolution (PIL image); ``enlarge=True``: a
        photo under 320 px wide drawn larger by a whole factor, each pixel a block, as the saved files and the
        notebook view show it (:func:`gradcam.render.viz.enlarged_for_drawing`)."""
        heat = self.maps[0, k].detach().cpu()
        photo, geometry = to_pil(self.photo), self.geometry
        if enlarge:
            photo, geometry = enlarged_for_drawing(photo, geometry)
        return overlay_image(photo, heat, geometry, alpha, colormap, tint)

    def show(self, **kwargs: Any) -> None:
        """Show every target's overlay, captioned, with matplotlib."""
        import matplotlib.pyplot as plt

        kwargs.setdefault("enlarge", True)  # a 32 px photo shown in blocks, not blurred by matplotlib
        count = self.maps.shape[1]
        figure, axes = plt.subplots(1, count, figsize=(5 * count, 5), squeeze=False)
        for k, axis in enumerate(axes[0]):
            axis.imshow(self.overlay(k, **kwargs))
            axis.set_title(self.caption(k))
            axis.axis("off")
        figure.tight_layout()
        plt.show()

    def caption(self, k: int) -> str:
        kind = "against " if self.explanation.counterfactual else ""
        return f"{self.explanation.method}: {kind}{self.names[k]} (score {float(self.scores[0, k]):.3g})"

    def save(
        self, folder: str | Path, stem: str | None = None, overwrite: bool = False, legend: bool = True
    ) -> list[Path]:
        """Write ``{stem}.{method}.{index}-{name}.png`` (overlay, with ``legend`` a footer saying what it
        shows, as ``gradcam explain`` draws it) and ``.npy`` (map) per target and
        ``{stem}.json`` (the manifest, as ``gradcam explain`` writes it) through the same writer as the
        command line; ``stem`` is the photo's file name without its suffix (``"photo"`` for a photo given
        as an image), so several photos saved into one folder keep their own files. An existing file is an
        error unless ``overwrite``. Returns the paths written."""
        stem = stem or (Path(self.source).stem if self.source else "photo")
        from ..io.files import write_atomic
        from .decode import DecodedPhoto
        from .manifest import now, run_manifest
        from .options import RunOptions
        from .writer import PhotoWriter, WriteOptions, top_predictions

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        options = WriteOptions(out=folder, method=self.explanation.method, save=frozenset({"overlay", "map"}),
                               format="png", counterfactual=self.explanation.counterfactual, thumbnail=False,
                               overwrite=overwrite, legend=legend)  # fmt: skip
        writer = PhotoWriter(options, self.labels)
        files, _ = writer.plan(stem, self.explanation, 0)
        manifest_path = folder / f"{stem}.json"
        existing = [p for planned in files for p in planned.values() if p.exists()]
        existing += [manifest_path] if manifest_path.exists() else []
        if existing and not overwrite:
            raise FileExistsError(f"{existing[0]}: exists; pass overwrite=True to replace it")
        size = (int(self.photo.shape[2]), int(self.photo.shape[1]))
        decoded = DecodedPhoto(geometry=self.geometry, photo=self.photo, size=size)
        logits = self.explanation.logits
        predictions = top_predictions(logits, self.labels, similarity=False)[0] if logits is not None else None
        record = writer.write(self.source or stem, stem, decoded, self.explanation, 0, predictions)
        if not record.ok:
            raise OSError(record.error)
        asked = RunOptions(
            out=folder,
            method=self.explanation.method,
            frame=self.frame,
            format="png",
            save=("map", "overlay"),
            counterfactual=self.explanation.counterfactual,
        )
        manifest = run_manifest("python", self.model, None, asked, [record], kind="photo", layer=self.layer,
                                started=None, finished=now(), preprocessing=self.preprocessing)  # fmt: skip
        text = json.dumps(manifest.to_json(), indent=1)
        write_atomic(manifest_path, lambda temporary: temporary.write_text(text, encoding="utf-8"))
        return [Path(p) for target in record.targets for p in target.files.values()] + [manifest_path]

    def _strip(self, height: int = 320) -> Image.Image:
        tiles = []
        for k in range(self.maps.shape[1]):
            tile = self.overlay(k, enlarge=True)
            tiles.append(tile.resize((max(1, round(tile.width * height / tile.height)), height)))
        strip = Image.new("RGB", (sum(t.width for t in tiles) + 8 * (len(tiles) - 1), height), "white")
        x = 0
        for tile in tiles:
            strip.paste(tile, (x, 0))
            x += tile.width + 8
        return strip

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self._strip().save(buffer, format="PNG")
        return buffer.getvalue()

    def _repr_html_(self) -> str:
        figures = []
        for k in range(self.maps.shape[1]):
            tile = self.overlay(k, enlarge=True)
            tile.thumbnail((480, 480))
            figures.append(
                f'<figure style="display:inline-block;margin:4px"><img src="{data_uri(tile, "PNG")}">'
                f"<figcaption>{html.escape(self.caption(k))}</figcaption></figure>"
            )
        return "<div>" + "".join(figures) + "</div>"

    def __repr__(self) -> str:
        height, width = self.photo.shape[1:]
        shown = ", ".join(f"{n} {float(s):.3g}" for n, s in zip(self.names, self.scores[0].tolist(), strict=True))
        return (
            f"PhotoExplanation({self.model}, {self.explanation.method} at {self.layer!r}, {width}x{height} photo, "
            f"frame {self.frame}: {shown})"
        )
