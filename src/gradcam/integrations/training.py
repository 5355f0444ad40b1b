"""Maps during training: explain a fixed set of photos with the model being trained and log the overlays
(and the maps' insertion/deletion scores) to the trainer's experiment trackers, without changing training.

What "without changing training" means here, and holds (tests train twice, with and without logging, and
compare the weights bit for bit): the model's mode, ``requires_grad`` and parameter ``.grad`` are restored
(:func:`gradcam.explain` does that), no optimizer or gradient scaler is touched, and the random state that
data order, dropout and augmentation draw from (torch's CPU and CUDA generators, NumPy's, Python's) is
saved before and put back after, so nothing this module does consumes a random number.

Example (a hand-written loop):
    >>> writer = SummaryWriter("runs/exp1")                                        # doctest: +SKIP
    >>> photos = fixed_photos(["cat.jpg", "dog.jpg"], preprocessing)
    >>> for epoch in range(10):
    ...     train_one_epoch(model)
    ...     log_explanations(model, photos, writer, step=epoch, epoch=epoch)
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..explain import explain
from ..hooks import preserved_state
from ..io.images import preprocess, read_image
from ..io.models import Preprocessing
from ..methods import CAMMethod
from ..metrics import deletion_insertion
from ..render.training import TILE_SIDE, display_pixels, history_strip, logged_picture, shown
from .sinks import Sink, sink_for

CURVE_STEPS = 8  # points on the insertion/deletion curves logged each time (each costs 2 forward passes)


@dataclass(frozen=True)
class Photos:
    """A fixed set of inputs to explain at every logged epoch: ``inputs`` (B, C, H, W) as the model takes
    them (on the CPU; moved to the model's device when used), ``pixels`` (B, 3, H, W) uint8 to draw on,
    ``names`` for the tags, and ``labels`` (the true classes) when they came with the data."""

    inputs: torch.Tensor
    pixels: torch.Tensor
    names: tuple[str, ...]
    labels: torch.Tensor | None = None


def fixed_photos(
    photos: Any,
    preprocessing: Preprocessing | None = None,
    max_photos: int = 8,
) -> Photos:
    """Photos from image paths (read and preprocessed with ``preprocessing``, ImageNet's 256/224 by
    default), a preprocessed tensor batch (B, C, H, W) or a DataLoader (its first ``max_photos`` inputs,
    with their labels; taken with the random state put back, so a shuffling loader's order is unchanged)."""
    if isinstance(photos, Photos):
        return photos
    mean = preprocessing.mean if preprocessing is not None else None
    std = preprocessing.std if preprocessing is not None else None
    if isinstance(photos, torch.Tensor):
        if photos.dim() != 4 or not photos.is_floating_point():
            raise ValueError(f"photos: expected a float tensor (B, C, H, W), got {tuple(photos.shape)}")
        inputs = photos[:max_photos].detach().cpu().clone()
        return Photos(inputs, display_pixels(inputs, mean, std), tuple(f"photo_{i}" for i in range(len(inputs))))
    if isinstance(photos, (str, Path)) or (
        isinstance(photos, Sequence) and photos and all(isinstance(p, (str, Path)) for p in photos)
    ):
        paths = [Path(photos)] if isinstance(photos, (str, Path)) else [Path(p) for p in photos[:max_photos]]
        spec = preprocessing or Preprocessing(resize=256, crop=(224, 224))
        inputs = torch.stack([preprocess(read_image(path, name=str(path)), spec)[0] for path in paths])
        return Photos(inputs, display_pixels(inputs, spec.mean, spec.std), _unique([p.stem for p in paths]))
    if hasattr(photos, "__iter__"):
        return _from_loader(photos, mean, std, max_photos)
    raise TypeError(f"photos: expected image paths, a tensor batch or a DataLoader, got {type(photos).__name__}")


def _from_loader(loader: Any, mean: Any, std: Any, max_photos: int) -> Photos:
    inputs, labels = [], []
    with untouched_random_state():
        for batch in loader:
            x, y = _split_batch(batch)
            inputs.append(x.detach().cpu())
            if y is not None:
                labels.append(torch.as_tensor(y).detach().cpu().view(-1))
            if sum(len(i) for i in inputs) >= max_photos:
                break
    if not inputs:
        raise ValueError("photos: the DataLoader gave no batch")
    x = torch.cat(inputs)[:max_photos].clone()
    y = torch.cat(labels)[:max_photos].long() if len(labels) == len(inputs) else None
    return Photos(x, display_pixels(x, mean, std), tuple(f"photo_{i}" for i in range(len(x))), y)


def _split_batch(batch: Any) -> tuple[torch.Tensor, Any]:
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, dict):
        for key in ("image", "images", "pixel_values", "x", "input"):
            if key in batch:
                return batch[key], batch.get("label", batch.get("labels", batch.get("y")))
        raise ValueError(f"photos: a DataLoader batch dict without an image key ({', '.join(batch)})")
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0], batch[1] if len(batch) > 1 else None
    raise ValueError(f"photos: cannot find the images in a DataLoader batch of type {type(batch).__name__}")


def _unique(names: list[str]) -> tuple[str, ...]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return tuple(out)


@contextlib.contextmanager
def untouched_random_state() -> Iterator[None]:
    """Put back every random generator training draws from (torch CPU and CUDA, NumPy, Python) afterwards,
    also when the block raises."""
    python, numpy = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(python)
            np.random.set_state(numpy)


@dataclass
class History:
    """Each logged step's small overlay per photo, to draw how its map changed over training."""

    tiles: dict[str, list[tuple[torch.Tensor, str, str]]] = field(default_factory=dict)

    def add(self, name: str, tile: torch.Tensor, when: str, what: str) -> None:
        self.tiles.setdefault(name, []).append((tile, when, what))

    def strips(self) -> dict[str, Image.Image]:
        return {name: history_strip(tiles) for name, tiles in self.tiles.items()}


@dataclass(frozen=True)
class Logged:
    """What one call logged: the explanation, the pictures by tag, and the scalars."""

    explanation: Any
    pictures: dict[str, Image.Image]
    scalars: dict[str, float]


def log_explanations(
    model: nn.Module,
    photos: Any,
    logger: Any,
    step: int,
    *,
    method: str | CAMMethod = "gradcam",
    layer: Any = None,
    targets: Any = None,
    labels: Sequence[str] | None = None,
    preprocessing: Preprocessing | None = None,
    metrics: bool = True,
    epoch: int | None = None,
    tag: str = "gradcam",
    history: History | None = None,
) -> Logged:
    """Explain ``photos`` with ``model`` as it is now and log one overlay per photo (``TAG/NAME``) and the
    maps' mean insertion and deletion areas (``TAG/insertion_auc``, ``TAG/deletion_auc``: RISE, Petsiuk et
    al. 2018; higher insertion and lower deletion mean a map that points at what the score needs) to
    ``logger``: one tracker, folder or Lightning logger, or a list of them (see :func:`sink_for`).

    Args:
        photos: image paths, a preprocessed batch (B, C, H, W), a DataLoader or :func:`fixed_photos`' result.
        targets: as in :func:`gradcam.explain` (None: each photo's top class now); ``"labels"``: the true
            classes that came with a DataLoader's photos.
        history: collects a small tile per photo, for :meth:`History.strips` at the end of training.

    Training is not changed: see the module's docstring.
    """
    fixed = fixed_photos(photos, preprocessing)
    sinks = [sink_for(one) for one in (logger if isinstance(logger, (list, tuple)) else [logger])]
    if isinstance(targets, str) and targets == "labels":
        if fixed.labels is None:
            raise ValueError("targets='labels': these photos came without labels (pass a DataLoader of (x, y))")
        targets = fixed.labels.tolist()
    with untouched_random_state(), preserved_state(model):
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        inputs = fixed.inputs.to(device)
        ex = explain(model, inputs, method, layer, targets, labels=labels)
        chosen = ex.targets[:, 0] if ex.targets is not None else None
        probability = (
            ex.logits.softmax(-1).gather(1, chosen[:, None].to(ex.logits.device))[:, 0].cpu()
            if ex.logits is not None and chosen is not None
            else None
        )
        scalars: dict[str, float] = {}
        if metrics and chosen is not None:
            curves = deletion_insertion(model, inputs, ex.maps[:, 0], chosen, steps=CURVE_STEPS)
            scalars = {
                f"{tag}/insertion_auc": float(curves.insertion_auc.mean()),
                f"{tag}/deletion_auc": float(curves.deletion_auc.mean()),
            }
    maps = ex.maps[:, 0].detach().cpu()
    pictures = {}
    for i, name in enumerate(fixed.names):
        what = _what(chosen, probability, labels, i)
        when = f"epoch {epoch}" if epoch is not None else f"step {step}"
        pictures[f"{tag}/{name}"] = logged_picture(fixed.pixels[i], maps[i], f"{ex.method} for {what} · {when}")
        if history is not None:
            history.add(name, shown(fixed.pixels[i], maps[i], TILE_SIDE), when, what)
    for sink in sinks:
        for key, picture in pictures.items():
            sink.image(key, picture, step)
        if scalars:
            sink.scalars(scalars, step)
    return Logged(ex, pictures, scalars)


def log_history(history: History, logger: Any, step: int, tag: str = "gradcam") -> dict[str, Image.Image]:
    """Log each photo's strip of maps over the logged epochs (``TAG/history/NAME``); returns the strips."""
    strips = {f"{tag}/history/{name}": strip for name, strip in history.strips().items()}
    for sink in [sink_for(one) for one in (logger if isinstance(logger, (list, tuple)) else [logger])]:
        for key, strip in strips.items():
            sink.image(key, strip, step)
    return strips


def _what(chosen: torch.Tensor | None, probability: torch.Tensor | None, labels: Any, i: int) -> str:
    if chosen is None:
        return "the target"
    index = int(chosen[i])
    name = labels[index] if labels is not None and 0 <= index < len(labels) else f"class {index}"
    return f"{name} (p = {float(probability[i]):.2f})" if probability is not None else name


__all__ = ["History", "Logged", "Photos", "Sink", "fixed_photos", "log_explanations", "log_history"]
