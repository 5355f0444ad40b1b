"""Run the photos of an audit through one or two models and keep what the statistics need.

Each photo costs one forward pass per model and, where the true class is known, two backward passes
from the layer (the true class's map and the predicted class's): nothing is drawn or written per photo,
so an audit runs at about the speed of ``gradcam explain``. What is kept is a :class:`ModelView` per
model: the prediction, the map on a :data:`~gradcam.audits.measure.GRID`-square grid and its energy
shares (see :mod:`gradcam.audits.measure`). The local engine decodes in DataLoader workers; the Ray
engine runs the same :class:`AuditExplainer` in actors and streams the views back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..explain import explain
from ..io.images import DEFAULT_MAX_MEGAPIXELS, Geometry, ImageReadError, preprocess, read_image
from ..io.models import LoadedModel, Preprocessing
from ..targets import select_logits
from .measure import box_mask, energy_shares, grid_maps


@dataclass(frozen=True)
class AuditItem:
    """One photo to audit: its path, output key, true class (None: unknown) and object boxes."""

    path: str
    key: str
    truth: int | None = None
    boxes: tuple[tuple[float, float, float, float], ...] = ()


@dataclass
class ModelView:
    """What one model says of one photo. ``explained``: the class of ``grid`` (the true class when known,
    else the predicted one); ``predicted_grid``: the predicted class's map where that is another class."""

    predicted: int
    probability: float
    explained: int
    explained_probability: float
    grid: np.ndarray  # (G, G) float16, sums to 1 (0 everywhere for an empty map)
    predicted_grid: np.ndarray | None
    border: float
    corners: tuple[float, float, float, float]
    in_boxes: float | None
    box_area: float | None
    peak: tuple[float, float]
    empty: bool


@dataclass
class PhotoAudit:
    item: AuditItem
    views: list[ModelView]
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Decoded:
    input: torch.Tensor | None = None
    geometry: Geometry | None = None
    size: tuple[int, int] | None = None
    error: str | None = None


def decode_for_audit(path: str, spec: Preprocessing, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS) -> Decoded:
    """The model's input for one photo (a JPEG decoded no larger than the model needs); a bad file gives
    a :class:`Decoded` with only ``error``."""
    try:
        image = read_image(Path(path), draft_size=spec.resize, max_megapixels=max_megapixels)
        pixels, geometry = preprocess(image, spec)
        width, height = image.info.get("original_size", image.size)
        return Decoded(pixels, geometry, (int(width), int(height)))
    except ImageReadError as error:
        return Decoded(error=str(error))
    except Exception as error:  # a decoder crash must not end the audit
        return Decoded(error=f"{path}: cannot decode ({type(error).__name__}: {error})")


class _ChosenClass:
    """The score of one class per image; -1 picks the image's top class."""

    def __init__(self, classes: torch.Tensor) -> None:
        self.classes = classes

    def __call__(self, output: Any) -> torch.Tensor:
        logits = select_logits(output)
        classes = self.classes.to(logits.device)
        chosen = torch.where((classes >= 0) & (classes < logits.shape[1]), classes, logits.argmax(dim=1))
        return logits.gather(1, chosen[:, None])[:, 0]


def _top_class(output: Any) -> torch.Tensor:
    return select_logits(output).max(dim=1).values


class AuditExplainer:
    """Explains batches of decoded photos with one model and measures the maps."""

    def __init__(self, bundle: LoadedModel, method: Any = "gradcam", layer: str | None = None) -> None:
        self.bundle, self.method, self.requested_layer = bundle, method, layer
        self.layer: str | None = bundle.layer_for(layer)

    def measure(self, items: Sequence[AuditItem], decoded: Sequence[Decoded]) -> list[ModelView]:
        model = self.bundle.model
        parameter = next(model.parameters())
        inputs = torch.stack([d.input for d in decoded if d.input is not None]).to(parameter.device, parameter.dtype)
        if self.layer is None:
            self.layer = self.bundle.layer_for(None, inputs)
        known = [item.truth for item in items]
        if any(t is not None for t in known):  # the true class's map and, where it differs, the predicted one's
            classes = torch.tensor([-1 if t is None else t for t in known])
            targets: Any = [_ChosenClass(classes), _top_class]
        else:
            targets = None
        ex = explain(model, inputs, self.method, self.layer, targets, labels=self.bundle.labels)
        logits = select_logits(ex.logits if ex.logits is not None else ex.scores).detach().float()
        probabilities = logits.softmax(dim=1)
        predicted = logits.argmax(dim=1)
        classes_out = logits.shape[1]  # a compared model with another head explains its own top class
        explained = torch.tensor([predicted[i] if t is None or t >= classes_out else t for i, t in enumerate(known)])
        frame = (int(inputs.shape[-2]), int(inputs.shape[-1]))
        masks = torch.stack([
            box_mask([list(b) for b in item.boxes], d.size, d.geometry, frame) if item.boxes and d.geometry and d.size
            else torch.zeros(frame)
            for item, d in zip(items, decoded, strict=True)
        ])  # fmt: skip
        maps = ex.maps[:, 0].detach().float().cpu()
        shares = energy_shares(maps, masks)
        grids = grid_maps(maps).to(torch.float16).numpy()
        predicted_grids = grid_maps(ex.maps[:, 1].detach().float().cpu()).to(torch.float16).numpy() if targets else None
        box_area = masks.flatten(1).mean(dim=1)
        views = []
        for row in range(len(items)):
            differs = bool(predicted[row] != explained[row])
            has_boxes = bool(box_area[row] > 0)
            views.append(ModelView(
                predicted=int(predicted[row]), probability=float(probabilities[row, predicted[row]]),
                explained=int(explained[row]), explained_probability=float(probabilities[row, explained[row]]),
                grid=grids[row],
                predicted_grid=predicted_grids[row] if predicted_grids is not None and differs else None,
                border=float(shares.border[row]), corners=tuple(float(v) for v in shares.corners[row]),  # type: ignore[arg-type]
                in_boxes=float(shares.in_boxes[row]) if has_boxes and not shares.empty[row] else None,
                box_area=float(box_area[row]) if has_boxes else None,
                peak=(float(shares.peak[row, 0]), float(shares.peak[row, 1])), empty=bool(shares.empty[row]),
            ))  # fmt: skip
        return views


def audit_batch(
    explainers: Sequence[AuditExplainer], items: Sequence[AuditItem], decoded: Sequence[Sequence[Decoded]]
) -> list[PhotoAudit]:
    """``decoded[m][i]``: photo i decoded for model m. A photo that any model could not read is an error."""
    results = [PhotoAudit(item, []) for item in items]
    for row in range(len(items)):
        for per_model in decoded:
            if per_model[row].error is not None:
                results[row].error = per_model[row].error
                break
    good = [row for row, result in enumerate(results) if result.ok]
    if not good:
        return results
    for number, (explainer, per_model) in enumerate(zip(explainers, decoded, strict=True)):
        chosen = [items[r] for r in good]
        if number > 0:  # a compared model explains the class the audited model's map is of
            chosen = [replace(item, truth=results[r].views[0].explained) for item, r in zip(chosen, good, strict=True)]
        views = explainer.measure(chosen, [per_model[r] for r in good])
        for row, view in zip(good, views, strict=True):
            results[row].views.append(view)
    return results


class _AuditPhotos(Dataset):
    def __init__(self, items: Sequence[AuditItem], specs: Sequence[Preprocessing], max_megapixels: float) -> None:
        self.items, self.specs, self.max_megapixels = list(items), list(specs), max_megapixels

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, list[Decoded]]:
        path = self.items[index].path
        return index, [decode_for_audit(path, spec, self.max_megapixels) for spec in self.specs]


def _collate(batch: list[tuple[int, list[Decoded]]]) -> list[tuple[int, list[Decoded]]]:
    return batch


def run_local(
    items: Sequence[AuditItem],
    explainers: Sequence[AuditExplainer],
    batch_size: int = 16,
    workers: int = 2,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    progress: Callable[[int], None] | None = None,
) -> Iterator[PhotoAudit]:
    """Audit ``items`` with each explainer's model (the first is the audited model), in order, streaming."""
    specs = [explainer.bundle.preprocessing for explainer in explainers]
    loader = DataLoader(
        _AuditPhotos(items, specs, max_megapixels), batch_size=batch_size, num_workers=workers,
        collate_fn=_collate, persistent_workers=False,
    )  # fmt: skip
    for batch in loader:
        rows = [items[index] for index, _ in batch]
        decoded = [[photo[m] for _, photo in batch] for m in range(len(explainers))]
        results = audit_batch(explainers, rows, decoded)
        if progress is not None:
            progress(len(results))
        yield from results
