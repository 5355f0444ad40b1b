"""The audit's Ray engine: the photos become a Ray Dataset, actors (each holding the models once) run the
same :class:`~gradcam.audits.engine.AuditExplainer` as the local engine, and the small per-photo views
stream back to the driver, which computes the same findings."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..io.images import DEFAULT_MAX_MEGAPIXELS
from ..io.models import LoadedModel
from .engine import AuditExplainer, AuditItem, ModelView, PhotoAudit, audit_batch, decode_for_audit


def view_to_json(view: ModelView) -> dict[str, Any]:
    data = dict(view.__dict__)
    data["grid"] = view.grid.astype(np.float16).tobytes().hex()
    data["predicted_grid"] = (
        None if view.predicted_grid is None else view.predicted_grid.astype(np.float16).tobytes().hex()
    )
    data["shape"] = list(view.grid.shape)
    return data


def view_from_json(data: dict[str, Any]) -> ModelView:
    shape = tuple(data.pop("shape"))
    grid = np.frombuffer(bytes.fromhex(data.pop("grid")), dtype=np.float16).reshape(shape)
    hexed = data.pop("predicted_grid")
    predicted = None if hexed is None else np.frombuffer(bytes.fromhex(hexed), dtype=np.float16).reshape(shape)
    data["corners"], data["peak"] = tuple(data["corners"]), tuple(data["peak"])
    return ModelView(grid=grid, predicted_grid=predicted, **data)


class AuditActor:
    """A Ray Data actor: holds the models, audits batches of rows ``{"index", "path", "key", "truth", "boxes"}``."""

    def __init__(
        self, bundles: Sequence[LoadedModel], method: Any, layer: str | None, threads: int, max_megapixels: float
    ) -> None:
        import torch

        torch.set_num_threads(threads)
        self.explainers = [AuditExplainer(b, method, layer if i == 0 else None) for i, b in enumerate(bundles)]
        self.max_megapixels = max_megapixels

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        columns = zip(batch["path"], batch["key"], batch["truth"], batch["boxes"], strict=True)
        items = [
            AuditItem(str(path), str(key), None if int(truth) < 0 else int(truth),
                      tuple(tuple(box) for box in json.loads(str(boxes))))
            for path, key, truth, boxes in columns
        ]  # fmt: skip
        decoded = [[decode_for_audit(item.path, e.bundle.preprocessing, self.max_megapixels) for item in items]
                   for e in self.explainers]  # fmt: skip
        results = audit_batch(self.explainers, items, decoded)
        rows = [json.dumps({"error": r.error, "views": [view_to_json(v) for v in r.views],
                            "layers": [e.layer for e in self.explainers]}) for r in results]  # fmt: skip
        return {"index": np.asarray(batch["index"]), "result": np.array(rows, dtype=object)}


def run_ray(
    items: Sequence[AuditItem],
    explainers: Sequence[AuditExplainer],
    batch_size: int = 16,
    actors: int = 2,
    address: str | None = None,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    progress: Callable[[int], None] | None = None,
    cpus_per_actor: float = 1.0,
    threads_per_actor: int = 1,
) -> tuple[list[PhotoAudit], list[str | None]]:
    """Audit ``items`` on Ray with the explainers' models; returns the photos in order and the layers used."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    rows = ray.data.from_items([
        {"index": i, "path": item.path, "key": item.key, "truth": -1 if item.truth is None else item.truth,
         "boxes": json.dumps([list(b) for b in item.boxes])}
        for i, item in enumerate(items)
    ])  # fmt: skip
    first = explainers[0]
    results = rows.map_batches(
        AuditActor,
        fn_constructor_kwargs={
            "bundles": [e.bundle for e in explainers], "method": first.method, "layer": first.requested_layer,
            "threads": threads_per_actor, "max_megapixels": max_megapixels,
        },  # fmt: skip
        batch_size=batch_size, batch_format="numpy", concurrency=actors, num_cpus=cpus_per_actor,
        max_restarts=-1, max_task_retries=-1,
    )  # fmt: skip
    photos: list[PhotoAudit | None] = [None] * len(items)
    layers: list[str | None] = [e.layer for e in explainers]
    for row in results.iter_rows():
        data = json.loads(str(row["result"]))
        index = int(row["index"])
        photos[index] = PhotoAudit(items[index], [view_from_json(v) for v in data["views"]], data["error"])
        if data["views"]:
            layers = data["layers"]
        if progress is not None:
            progress(1)
    missing = [items[i].path for i, p in enumerate(photos) if p is None]
    if missing:
        raise RuntimeError(f"the Ray engine lost {len(missing)} photos (first: {missing[0]})")
    return [p for p in photos if p is not None], layers
