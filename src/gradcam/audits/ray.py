"""The audit's Ray engine: the photos become a Ray Dataset, actors (each holding the models once) run the
same :class:`~gradcam.audits.engine.AuditExplainer` as the local engine, and each batch's columns of
numbers stream back to the driver as numpy arrays, which computes the same findings."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from ..io.images import DEFAULT_MAX_MEGAPIXELS
from ..io.models import LoadedModel
from ..io.quiet import start_ray
from .engine import (
    ROW_FIELDS,
    AuditExplainer,
    AuditItem,
    BatchAudit,
    Columns,
    Measured,
    audit_batch,
    collect,
    decode_for_models,
)
from .measure import GRID


def batch_to_rows(batch: BatchAudit, positions: Sequence[int], grid: int) -> dict[str, np.ndarray]:
    """One row per photo of the batch (measured or not), as Ray Data columns: ``position``, ``error`` ('' when
    measured) and, per model m, ``m{m}.FIELD`` (the predicted class's map in ``m{m}.predicted_grid``)."""
    count = len(positions)
    measured = {int(p): row for row, p in enumerate(batch.positions)}
    rows: dict[str, np.ndarray] = {
        "position": np.asarray(positions, dtype=np.int64),
        "error": np.array([batch.errors.get(int(p), "") for p in positions], dtype=object),
    }
    where = np.array([measured.get(int(p), -1) for p in positions])
    for number, columns in enumerate(batch.columns):
        for name in ROW_FIELDS:
            values = getattr(columns, name)
            if values.ndim > 1 and values.shape[1] == 0:  # no followed classes: no column (Ray keeps no 0-wide one)
                continue
            full = np.zeros((count, *values.shape[1:]), dtype=values.dtype)
            full[where >= 0] = values[where[where >= 0]]
            rows[f"m{number}.{name}"] = full
        predicted = np.zeros((count, grid, grid), dtype=np.float16)
        has = np.zeros(count, dtype=bool)
        for row, source in enumerate(where):
            if source >= 0 and columns.predicted_rows[source] >= 0:
                predicted[row], has[row] = columns.predicted_grids[columns.predicted_rows[source]], True
        rows[f"m{number}.predicted_grid"], rows[f"m{number}.has_predicted"] = predicted, has
    return rows


def rows_to_batch(rows: dict[str, np.ndarray], models: int, grid: int) -> BatchAudit:
    errors = {int(p): str(e) for p, e in zip(rows["position"], rows["error"], strict=True) if str(e)}
    good = np.array([not str(e) for e in rows["error"]], dtype=bool)
    columns = []
    for number in range(models if good.any() else 0):
        count = int(good.sum())
        absent: dict[str, np.ndarray] = {
            "followed_grids": np.zeros((count, 0, grid, grid), np.float16),
            "followed_probability": np.zeros((count, 0), np.float32),
        }
        values: dict[str, np.ndarray] = {
            name: rows[f"m{number}.{name}"][good] if f"m{number}.{name}" in rows else absent[name]
            for name in ROW_FIELDS
        }
        has = rows[f"m{number}.has_predicted"][good]
        predicted_rows = np.full(count, -1, dtype=np.int32)
        predicted_rows[has] = np.arange(int(has.sum()), dtype=np.int32)
        columns.append(Columns(**values, predicted_rows=predicted_rows,
                               predicted_grids=rows[f"m{number}.predicted_grid"][good][has]))  # fmt: skip
    return BatchAudit(rows["position"][good], columns, errors)


class AuditActor:
    """A Ray Data actor: holds the models, audits batches of rows ``{"position", "path", "key", "truth", "boxes"}``."""

    def __init__(
        self,
        bundles: Sequence[LoadedModel],
        method: Any,
        layer: str | None,
        threads: int,
        max_megapixels: float,
        frame: str = "crop",
        followed: Sequence[int] = (),
    ) -> None:
        import torch

        torch.set_num_threads(threads)
        if torch.cuda.is_available() and os.environ.get("CUDA_VISIBLE_DEVICES"):  # Ray gave this actor a GPU
            bundles = [replace(b, model=b.model.to("cuda")) for b in bundles]
        self.explainers = [
            AuditExplainer(b, method, layer if i == 0 else None, frame, followed if i == 0 else ())
            for i, b in enumerate(bundles)
        ]
        self.max_megapixels, self.frame = max_megapixels, frame

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        columns = zip(batch["path"], batch["key"], batch["truth"], batch["boxes"], strict=True)
        items = [
            AuditItem(str(path), str(key), None if int(truth) < 0 else int(truth),
                      tuple(tuple(box) for box in json.loads(str(boxes))))
            for path, key, truth, boxes in columns
        ]  # fmt: skip
        specs = [e.bundle.preprocessing for e in self.explainers]
        per_photo = [decode_for_models(item.path, specs, self.max_megapixels, self.frame) for item in items]
        decoded = [[photo[m] for photo in per_photo] for m in range(len(specs))]
        positions = [int(p) for p in batch["position"]]
        result = audit_batch(self.explainers, items, decoded, positions)
        rows = batch_to_rows(result, positions, _grid(result))
        rows["layers"] = np.array([json.dumps([e.layer for e in self.explainers])] * len(positions), dtype=object)
        return rows


def _grid(batch: BatchAudit) -> int:
    return batch.columns[0].grids.shape[-1] if batch.columns else GRID


def run_ray(
    items: Sequence[AuditItem],
    explainers: Sequence[AuditExplainer],
    batch_size: int = 16,
    actors: int = 2,
    address: str | None = None,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    progress: Callable[[int], None] | None = None,
    cpus_per_actor: float = 1.0,
    gpus_per_actor: float = 0.0,
    threads_per_actor: int = 1,
) -> tuple[Measured, list[str | None]]:
    """Audit ``items`` on Ray with the explainers' models; returns what was measured and the layers used."""
    import ray

    start_ray(address)
    rows = ray.data.from_items([
        {"position": i, "path": item.path, "key": item.key, "truth": -1 if item.truth is None else item.truth,
         "boxes": json.dumps([list(b) for b in item.boxes])}
        for i, item in enumerate(items)
    ])  # fmt: skip
    first = explainers[0]
    results = rows.map_batches(
        AuditActor,
        fn_constructor_kwargs={
            "bundles": [e.bundle for e in explainers], "method": first.method, "layer": first.requested_layer,
            "threads": threads_per_actor, "max_megapixels": max_megapixels, "frame": first.frame,
            "followed": first.followed,
        },  # fmt: skip
        batch_size=batch_size, batch_format="numpy", concurrency=actors, num_cpus=cpus_per_actor,
        num_gpus=gpus_per_actor, max_restarts=-1, max_task_retries=-1,
    )  # fmt: skip
    layers: list[str | None] = [e.layer for e in explainers]
    seen: set[int] = set()

    def batches() -> Iterator[BatchAudit]:
        nonlocal layers
        for rows_out in results.iter_batches(batch_format="numpy", batch_size=None):
            grid = int(rows_out["m0.grids"].shape[-1]) if "m0.grids" in rows_out else GRID
            batch = rows_to_batch(rows_out, len(explainers), grid)
            seen.update(int(p) for p in rows_out["position"])
            if len(batch.positions):
                layers = json.loads(str(rows_out["layers"][0]))
            if progress is not None:
                progress(len(rows_out["position"]))
            yield batch

    measured = collect(batches(), items, len(explainers), len(first.followed))
    if len(seen) != len(items):
        missing = next(item.path for i, item in enumerate(items) if i not in seen)
        raise RuntimeError(f"the Ray engine lost {len(items) - len(seen)} photos (first: {missing})")
    return measured, layers
