"""Run the photos of an audit through one or two models and keep what the statistics need.

Each photo costs one forward pass per model and, where the true class is known, two backward passes
from the layer (the true class's map and the predicted class's): nothing is drawn or written per photo,
so an audit runs at about the speed of ``gradcam explain``. What is kept is columns of numbers per model
(:class:`Columns`: the prediction, the map on a :data:`~gradcam.audits.measure.GRID`-square grid and its
energy shares, see :mod:`gradcam.audits.measure`), about 600 bytes a photo, never Python objects per
photo. The local engine decodes in DataLoader workers; the Ray engine runs the same
:class:`AuditExplainer` in actors and streams the columns back.
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
from ..io.images import DEFAULT_MAX_MEGAPIXELS
from ..io.models import LoadedModel, Preprocessing
from ..methods import get_method
from ..pipeline.decode import DecodedPhoto, decode
from ..pipeline.replicas import decoding_worker
from ..targets import select_logits
from .measure import GRID, box_mask, energy_shares, grid_maps


@dataclass(frozen=True)
class AuditItem:
    """One photo to audit: its path, output key, true class (None: unknown) and object boxes."""

    path: str
    key: str
    truth: int | None = None
    boxes: tuple[tuple[float, float, float, float], ...] = ()


@dataclass
class Columns:
    """What one model says of N photos, one row each. ``explained``: the class of ``grids`` (the true class
    when known, else the predicted one); ``predicted_grids``: the predicted class's maps, only for the
    rows where that is another class (``predicted_rows`` gives each row's, -1 for none). NaN: no boxes."""

    predicted: np.ndarray  # (N,) int32
    probability: np.ndarray  # (N,) float32
    explained: np.ndarray  # (N,) int32
    explained_probability: np.ndarray  # (N,) float32
    border: np.ndarray  # (N,) float32
    corners: np.ndarray  # (N, 4) float32, in CORNERS order
    in_boxes: np.ndarray  # (N,) float32
    box_area: np.ndarray  # (N,) float32
    peak: np.ndarray  # (N, 2) float32
    empty: np.ndarray  # (N,) bool
    grids: np.ndarray  # (N, G, G) float16, each summing to 1 (0 for an empty map)
    control: np.ndarray  # (N,) int32: the runner-up class (the model's highest score but the explained class's)
    control_grids: np.ndarray  # (N, G, G) float16: its map on the same photo, the control for the agreement
    followed_grids: np.ndarray  # (N, K, G, G) float16: the maps of the K followed classes (``--classes``)
    followed_probability: np.ndarray  # (N, K) float32: their probabilities
    predicted_rows: np.ndarray  # (N,) int32
    predicted_grids: np.ndarray  # (M, G, G) float16

    def __len__(self) -> int:
        return len(self.predicted)

    def take(self, rows: np.ndarray) -> Columns:
        """These rows, in this order (their predicted-class maps renumbered)."""
        rows = np.asarray(rows, dtype=np.int64)
        kept = self.predicted_rows[rows]
        has = kept >= 0
        renumbered = np.full(len(rows), -1, dtype=np.int32)
        renumbered[has] = np.arange(int(has.sum()), dtype=np.int32)
        values = {name: getattr(self, name)[rows] for name in ROW_FIELDS}
        return Columns(**values, predicted_rows=renumbered, predicted_grids=self.predicted_grids[kept[has]])

    @staticmethod
    def concatenate(parts: Sequence[Columns], grid: int, followed: int = 0) -> Columns:
        if not parts:
            empty = {name: np.zeros((0,), np.float32) for name in ROW_FIELDS}
            empty.update(corners=np.zeros((0, 4), np.float32), peak=np.zeros((0, 2), np.float32),
                         grids=np.zeros((0, grid, grid), np.float16), control=np.zeros((0,), np.int32),
                         control_grids=np.zeros((0, grid, grid), np.float16),
                         followed_grids=np.zeros((0, followed, grid, grid), np.float16),
                         followed_probability=np.zeros((0, followed), np.float32))  # fmt: skip
            return Columns(**empty, predicted_rows=np.zeros((0,), np.int32),
                           predicted_grids=np.zeros((0, grid, grid), np.float16))  # fmt: skip
        values = {name: np.concatenate([getattr(p, name) for p in parts]) for name in ROW_FIELDS}
        offsets = np.cumsum([0] + [len(p.predicted_grids) for p in parts])
        rows = np.concatenate(
            [np.where(p.predicted_rows >= 0, p.predicted_rows + o, -1) for p, o in zip(parts, offsets, strict=False)]
        )
        return Columns(**values, predicted_rows=rows.astype(np.int32),
                       predicted_grids=np.concatenate([p.predicted_grids for p in parts]))  # fmt: skip


ROW_FIELDS = ("predicted", "probability", "explained", "explained_probability", "border", "corners", "in_boxes",
              "box_area", "peak", "empty", "grids", "control", "control_grids", "followed_grids",
              "followed_probability")  # fmt: skip


@dataclass
class BatchAudit:
    """A batch's result: the positions (in the whole audit) of the photos measured, one :class:`Columns` per
    model for them, and the photos that could not be read (position -> one-line error)."""

    positions: np.ndarray
    columns: list[Columns]
    errors: dict[int, str]


def decode_for_models(
    path: str, specs: Sequence[Preprocessing], max_megapixels: float, frame: str = "crop"
) -> list[DecodedPhoto]:
    """The photo decoded for each model's preprocessing in ``frame`` (crop, full, squash), once per distinct
    one (a model compared with another of the same family reads the same decode)."""
    done: dict[Preprocessing, DecodedPhoto] = {}
    for spec in specs:
        if spec not in done:
            done[spec] = decode(Path(path), spec, max_megapixels, frame=frame, picture=False)
    return [done[spec] for spec in specs]


class _ChosenClass:
    """The score of one class per image; -1 picks the image's top class."""

    def __init__(self, classes: torch.Tensor) -> None:
        self.classes = classes

    def __call__(self, output: Any) -> torch.Tensor:
        logits = select_logits(output)
        classes = self.classes.to(logits.device)
        chosen = torch.where((classes >= 0) & (classes < logits.shape[1]), classes, logits.argmax(dim=1))
        return logits.gather(1, chosen[:, None])[:, 0]


class _OneClass:
    """The score of class ``index`` for every image (a followed class, ``--classes``)."""

    def __init__(self, index: int) -> None:
        self.index = index

    def __call__(self, output: Any) -> torch.Tensor:
        return select_logits(output)[:, self.index]


def _top_class(output: Any) -> torch.Tensor:
    return select_logits(output).max(dim=1).values


class _RunnerUp:
    """The score of the highest class other than the one explained (``classes``, -1: the top class)."""

    def __init__(self, classes: torch.Tensor) -> None:
        self.classes = classes

    def __call__(self, output: Any) -> torch.Tensor:
        return select_logits(output).gather(1, runner_up(select_logits(output), self.classes)[:, None])[:, 0]


def runner_up(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Per row, the class of the highest logit other than ``classes`` (-1 or out of range: the top class)."""
    classes = classes.to(logits.device)
    explained = torch.where((classes >= 0) & (classes < logits.shape[1]), classes, logits.argmax(dim=1))
    others = logits.detach().scatter(1, explained[:, None], float("-inf"))
    return others.argmax(dim=1)


class AuditExplainer:
    """Explains batches of decoded photos with one model and measures the maps; ``followed``: classes
    (indices) whose maps are also taken on every photo (``--classes``: one more target each, in the same
    batched pass)."""

    def __init__(
        self,
        bundle: LoadedModel,
        method: Any = "gradcam",
        layer: str | None = None,
        frame: str = "crop",
        followed: Sequence[int] = (),
    ) -> None:
        self.bundle, self.method, self.requested_layer, self.frame = bundle, method, layer, frame
        self.followed = [int(c) for c in followed]
        self.layer: str | None = bundle.layer_for(layer)

    def _true_predicted_runner_up(self, inputs: torch.Tensor, known: list[int | None]) -> list[list[int]]:
        """``[true, predicted, runner-up]`` class indices per photo (the predicted as true without a true
        class, or with one the model's head does not have): one forward pass without gradients."""
        from ..hooks import preserved_state, run_model

        with preserved_state(self.bundle.model), torch.inference_mode():
            scores = select_logits(run_model(self.bundle.model, inputs)).float()
        top, classes = scores.argmax(dim=1).tolist(), scores.shape[1]
        explained = [t if t is not None and 0 <= t < classes else p for t, p in zip(known, top, strict=True)]
        second = runner_up(scores, torch.tensor(explained)).tolist()
        return [[e, p, r, *self.followed] for e, p, r in zip(explained, top, second, strict=True)]

    def measure(self, items: Sequence[AuditItem], decoded: Sequence[DecodedPhoto]) -> Columns:
        """The columns of these photos; photos of different input sizes (``frame="full"``) are explained in
        groups of one size each."""
        sizes = [tuple(d.input.shape) for d in decoded if d.input is not None]
        if len(set(sizes)) <= 1:
            return self._measure(items, decoded)
        order = sorted(range(len(sizes)), key=lambda i: sizes[i])
        groups: dict[tuple[int, ...], list[int]] = {}
        for i in order:
            groups.setdefault(sizes[i], []).append(i)
        parts = [self._measure([items[i] for i in rows], [decoded[i] for i in rows]) for rows in groups.values()]
        placed = [i for rows in groups.values() for i in rows]
        joined = Columns.concatenate(parts, parts[0].grids.shape[-1], len(self.followed))
        return joined.take(np.argsort(np.asarray(placed), kind="stable"))

    def _measure(self, items: Sequence[AuditItem], decoded: Sequence[DecodedPhoto]) -> Columns:
        model = self.bundle.model
        parameter = next(model.parameters())
        inputs = torch.stack([d.input for d in decoded if d.input is not None]).to(parameter.device, parameter.dtype)
        if self.layer is None:
            self.layer = self.bundle.layer_for(None, inputs)
        known = [item.truth for item in items]
        chosen = torch.tensor([-1 if t is None else t for t in known])
        # the explained class's map (the true class where known), the predicted one's (kept where it differs)
        # and the runner-up's on the same photo (the control of the agreement, findings.py)
        targets: Any
        if get_method(self.method).wraps_explain:  # SESS, FullGrad, LeGrad take class indices, not callables
            targets = self._true_predicted_runner_up(inputs, known)
        else:
            targets = [_ChosenClass(chosen), _top_class, _RunnerUp(chosen), *map(_OneClass, self.followed)]
        ex = explain(model, inputs, self.method, self.layer, targets, labels=self.bundle.labels)
        if ex.logits is None:
            raise ValueError(f"{self.bundle.name}: the model's output is not (B, num_classes) class scores")
        logits = ex.logits.detach().float()
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
        every = ex.maps.detach().float().cpu()  # [explained, predicted, runner-up, followed classes...]
        shares = energy_shares(every[:, 0], masks)
        # every target's map on the grid at once
        all_grids = grid_maps(every.flatten(0, 1)).reshape(*every.shape[:2], GRID, GRID).to(torch.float16).numpy()
        grids, predicted_grids, control_grids = all_grids[:, 0], all_grids[:, 1], all_grids[:, 2]
        count = all_grids.shape[1] - 3
        box_area = masks.flatten(1).mean(dim=1)
        differs = (predicted != explained).numpy()
        predicted_rows = np.full(len(items), -1, dtype=np.int32)
        predicted_rows[differs] = np.arange(int(differs.sum()), dtype=np.int32)
        has_boxes = (box_area > 0) & ~shares.empty
        nan = torch.full_like(box_area, float("nan"))
        return Columns(
            predicted=predicted.numpy().astype(np.int32),
            probability=probabilities.gather(1, predicted[:, None])[:, 0].numpy().astype(np.float32),
            explained=explained.numpy().astype(np.int32),
            explained_probability=probabilities.gather(1, explained[:, None])[:, 0].numpy().astype(np.float32),
            border=shares.border.numpy().astype(np.float32), corners=shares.corners.numpy().astype(np.float32),
            in_boxes=torch.where(has_boxes, shares.in_boxes, nan).numpy().astype(np.float32),
            box_area=torch.where(box_area > 0, box_area, nan).numpy().astype(np.float32),
            peak=shares.peak.numpy().astype(np.float32), empty=shares.empty.numpy(), grids=grids,
            control=runner_up(logits, explained).cpu().numpy().astype(np.int32), control_grids=control_grids,
            followed_grids=all_grids[:, 3:],
            followed_probability=probabilities[:, self.followed].numpy().astype(np.float32).reshape(len(items), count),
            predicted_rows=predicted_rows, predicted_grids=predicted_grids[differs],
        )  # fmt: skip


def audit_batch(
    explainers: Sequence[AuditExplainer],
    items: Sequence[AuditItem],
    decoded: Sequence[Sequence[DecodedPhoto]],
    positions: Sequence[int],
) -> BatchAudit:
    """``decoded[m][i]``: photo i decoded for model m; ``positions[i]``: its place in the whole audit. A
    photo that any model could not read is an error."""
    errors: dict[int, str] = {}
    for row, position in enumerate(positions):
        for per_model in decoded:
            error = per_model[row].error
            if error is not None:
                errors[position] = error
                break
    good = [row for row, position in enumerate(positions) if position not in errors]
    columns: list[Columns] = []
    for number, (explainer, per_model) in enumerate(zip(explainers, decoded, strict=True)):
        if not good:
            break
        chosen = [items[r] for r in good]
        if number > 0:  # a compared model explains the class the audited model's map is of
            chosen = [replace(item, truth=int(c)) for item, c in zip(chosen, columns[0].explained, strict=True)]
        columns.append(explainer.measure(chosen, [per_model[r] for r in good]))
    return BatchAudit(np.asarray([positions[r] for r in good], dtype=np.int64), columns, errors)


class _AuditPhotos(Dataset):
    def __init__(
        self, items: Sequence[AuditItem], specs: Sequence[Preprocessing], max_megapixels: float, frame: str = "crop"
    ) -> None:
        self.items, self.specs, self.max_megapixels, self.frame = list(items), list(specs), max_megapixels, frame

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, list[DecodedPhoto]]:
        return index, decode_for_models(self.items[index].path, self.specs, self.max_megapixels, self.frame)


def _collate(batch: list[tuple[int, list[DecodedPhoto]]]) -> list[tuple[int, list[DecodedPhoto]]]:
    return batch


def run_local(
    items: Sequence[AuditItem],
    explainers: Sequence[AuditExplainer],
    batch_size: int = 16,
    workers: int = 2,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    progress: Callable[[int], None] | None = None,
) -> Iterator[BatchAudit]:
    """Audit ``items`` with each explainer's model (the first is the audited model), batch by batch."""
    specs = [explainer.bundle.preprocessing for explainer in explainers]
    loader = DataLoader(
        _AuditPhotos(items, specs, max_megapixels, explainers[0].frame), batch_size=batch_size, num_workers=workers,
        collate_fn=_collate, persistent_workers=False, worker_init_fn=decoding_worker,
    )  # fmt: skip
    for batch in loader:
        positions = [index for index, _ in batch]
        decoded = [[photo[m] for _, photo in batch] for m in range(len(explainers))]
        result = audit_batch(explainers, [items[i] for i in positions], decoded, positions)
        if progress is not None:
            progress(len(positions))
        yield result


@dataclass
class Measured:
    """Every photo of an audit: ``items`` (all, in order), ``positions`` (ascending) of those measured, one
    :class:`Columns` per model whose row r is the photo at ``positions[r]``, and the unreadable photos."""

    items: Sequence[AuditItem]
    positions: np.ndarray
    models: list[Columns]
    errors: dict[int, str]

    def item(self, row: int) -> AuditItem:
        return self.items[int(self.positions[row])]


def collect(
    batches: Iterator[BatchAudit] | Sequence[BatchAudit], items: Sequence[AuditItem], models: int, followed: int = 0
) -> Measured:
    """The batches (in any order, as Ray returns them) as one :class:`Measured`, rows by position;
    ``followed``: how many classes the first model follows (``--classes``)."""
    positions: list[np.ndarray] = []
    parts: list[list[Columns]] = [[] for _ in range(models)]
    errors: dict[int, str] = {}
    for batch in batches:
        errors.update(batch.errors)
        if len(batch.positions):
            positions.append(batch.positions)
            for number, columns in enumerate(batch.columns):
                parts[number].append(columns)
    where = np.concatenate(positions) if positions else np.zeros((0,), np.int64)
    order = np.argsort(where, kind="stable")
    grid = parts[0][0].grids.shape[-1] if parts[0] else GRID
    joined = [Columns.concatenate(p, grid, followed if n == 0 else 0).take(order) for n, p in enumerate(parts)]
    return Measured(items, where[order], joined, errors)
