"""Explain a whole dataset on a Ray cluster (optional extra: ``pip install gradcam[ray]``).

Ray Data does the scheduling: the photos become a Dataset, a pool of actors (each loading the model once,
with GPUs where the cluster has them) runs the same :class:`gradcam.pipeline.local.BatchExplainer` as the local
engine, so the maps and files are the same. The manifest is written as Parquet shards with a small
``summary.json`` (and ``results.json`` plus ``index.html`` for runs small enough to read on one machine).

Every photo ends in the manifest exactly once, with outputs or an error: a dead actor's batch is retried
by Ray on another actor, outputs are written atomically under fixed names (a retry rewrites the same
bytes), and only the retried task's rows reach the manifest.

Example:
    >>> from gradcam.pipeline.ray import explain_dataset                      # doctest: +SKIP
    >>> explain_dataset("s3://bucket/photos/", "s3://bucket/gradcam-out/", actors=16, gpus_per_actor=1)
"""

from __future__ import annotations

import bisect
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..io.images import IMAGE_SUFFIXES
from ..io.models import Preprocessing
from ..io.quiet import start_ray
from .decode import decode
from .kinds import KINDS, find_inputs, manifest_outputs
from .local import BatchExplainer
from .manifest import MANIFEST, now, read_manifest, run_manifest, write_json_atomic
from .naming import array_keys, method_prefix, output_keys
from .options import RunOptions, UsageError
from .records import PhotoRecord

PARQUET_FOLDER = "manifest"
SUMMARY = "summary.json"
RESULTS_JSON_LIMIT = 100_000


def _is_uri(location: str) -> bool:
    return "://" in location


class ExplainActor:
    """A Ray Data actor: loads the model once, then explains batches of rows ``{"path", "key"[, "bytes"]}``."""

    def __init__(
        self,
        model: str,
        weights: str | None,
        options: RunOptions,
        out_uri: str | None,
        threads: int,
        trust_weights: bool = False,
        labels: list[str] | None = None,
    ):
        import torch

        from ..io.models import load_bundle

        torch.set_num_threads(threads)
        device = options.device
        if device == "cpu" and torch.cuda.is_available() and os.environ.get("CUDA_VISIBLE_DEVICES"):
            device = "cuda"  # Ray gave this actor a GPU
        self.kind = KINDS[options.kind or "photo"]
        self.bundle = load_bundle(
            model, weights, device, trust_weights=trust_weights, labels=labels, images=self.kind.images
        )
        self.bundle = self.kind.preprocessed(self.bundle, options)
        self.out_uri = out_uri
        self.local_out = Path(tempfile.mkdtemp(prefix="gradcam-actor-")) if out_uri else options.out
        self.options = replace(options, out=self.local_out, overwrite=True, device=device)
        self.explainer = BatchExplainer(self.bundle, self.options) if self.kind.batched else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [str(p) for p in batch["path"]]
        keys = [str(k) for k in batch["key"]]
        records = self._batch(paths, keys, batch.get("bytes")) if self.explainer else self._one_by_one(paths, keys)
        entries = [record.to_json() for record in records]
        if self.out_uri:
            entries = [self._upload(entry) for entry in entries]
        spec = self.kind.preprocessing_of(self.bundle)
        seen = json.dumps(spec.to_json()) if spec is not None else ""
        rows = [_row(entry, self.bundle.source, seen) for entry in entries]
        return {column: np.array([row[column] for row in rows], dtype=object) for column in ROW_COLUMNS}

    def _batch(self, paths: list[str], keys: list[str], contents: Any) -> list[PhotoRecord]:
        """Photos and image arrays: decoded here, explained as one batch by the local engine's explainer."""
        assert self.explainer is not None
        spec, options = self.bundle.preprocessing, self.options
        photos = []
        for i, (path, key) in enumerate(zip(paths, keys, strict=True)):
            source: Path | bytes = bytes(contents[i]) if contents is not None else Path(path)
            decoded = decode(source, spec, options.max_megapixels, path, options.max_side, options.frame,
                             kind=self.kind.name)  # fmt: skip
            photos.append((path, key, decoded))
        return self.explainer.explain(photos)

    def _one_by_one(self, paths: list[str], keys: list[str]) -> list[PhotoRecord]:
        """Videos, volumes and signals: each file through its kind's ``explain_file``, as the local run does."""
        from .file_runs import FILE_ERRORS, file_error

        explain_file = self.kind.explain_file()
        records = []
        for path, key in zip(paths, keys, strict=True):
            try:
                records.append(explain_file(self.bundle, Path(path), key, self.options, None))
            except FILE_ERRORS as error:
                records.append(PhotoRecord.failed(path, file_error(path, error)))
        return records

    def _upload(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Copy a photo's files from the actor's scratch folder to the output URI."""
        import pyarrow.fs as pafs

        assert self.out_uri is not None
        filesystem, root = pafs.FileSystem.from_uri(self.out_uri)
        files = [(entry, "thumbnail")] if entry.get("thumbnail") else []
        files += [(entry, "all_classes")] if entry.get("all_classes") else []
        files += [(target["files"], kind) for target in entry.get("targets", []) for kind in target["files"]]
        for holder, kind in files:
            local = holder[kind]
            relative = Path(local).relative_to(self.local_out).as_posix()
            destination = f"{root.rstrip('/')}/{relative}"
            filesystem.create_dir(destination.rsplit("/", 1)[0], recursive=True)
            with open(local, "rb") as source, filesystem.open_output_stream(destination) as sink:
                shutil.copyfileobj(source, sink)
            os.remove(local)
            holder[kind] = f"{self.out_uri.rstrip('/')}/{relative}"
        return entry


@dataclass
class DistributedResult:
    images: int
    ok: int
    failed: int
    manifest: str
    seconds: float
    entries: list[PhotoRecord] | None


def _rows_from_source(source: Any, exclude: list[Path], kind: str | None = None) -> tuple[Any, str]:
    """A Ray Dataset of ``{"path", "key"[, "bytes"]}`` rows from a folder, files, a URI or a Dataset, and the
    inputs' kind (``kind`` where given; local files are read once to guess it; otherwise photos)."""
    import ray.data

    if isinstance(source, ray.data.Dataset):
        columns = set(source.columns() or [])
        if "path" not in columns:
            raise UsageError("a Ray Dataset to explain needs a 'path' column (and 'bytes' unless paths are readable)")
        if "key" not in columns:
            source = source.map(lambda row: {**row, "key": Path(str(row["path"])).stem})
        return source, kind or "photo"
    locations = [source] if isinstance(source, (str, Path)) else list(source)
    if len(locations) == 1 and _is_uri(str(locations[0])):
        uri = str(locations[0]).rstrip("/")
        files = ray.data.read_binary_files(uri, include_paths=True, file_extensions=[s[1:] for s in IMAGE_SUFFIXES])
        root = uri.split("://", 1)[1]
        keyed = files.map(lambda row: {**row, "key": str(Path(str(row["path"])).relative_to(root).with_suffix(""))})
        return keyed, kind or "photo"
    inputs = find_inputs([str(loc) for loc in locations], exclude, override=kind)
    found = inputs.found
    if found.missing:
        raise UsageError(f"{found.missing[0]}: no such file or folder")
    if not found.paths:
        raise UsageError("no images found in " + ", ".join(map(str, locations)))
    keys = output_keys(found) if inputs.kind.batched else array_keys(found.paths, found.roots)
    rows = ray.data.from_items([{"path": str(p), "key": k} for p, k in zip(found.paths, keys, strict=True)])
    return rows, inputs.kind.name


def explain_dataset(
    source: Any,
    out: str | Path,
    *,
    model: str = "efficientnet_lite0",
    weights: str | None = None,
    trust_weights: bool = False,
    labels: list[str] | None = None,
    options: RunOptions | None = None,
    actors: int = 2,
    cpus_per_actor: float = 1.0,
    gpus_per_actor: float = 0.0,
    address: str | None = None,
    threads_per_actor: int = 1,
    preprocessing: Preprocessing | None = None,
) -> DistributedResult:
    """Explain every photo of ``source`` (a folder, files, a URI ``s3://...``/``gs://...`` read through
    pyarrow's filesystems, or a Ray Dataset with ``path`` and ``bytes`` columns) into ``out`` (a folder or
    a URI), with ``actors`` model replicas. ``options`` are those of the local engine; ``options.kind``
    (or the files' own, as the registry guesses it) decides how each file is read and explained: photos
    and image arrays in batches, videos, volumes and signals one file per task. Each actor applies
    ``options.preprocess`` to its model's preprocessing; ``preprocessing`` (the result, where the caller
    loaded the model too) is recorded in the manifest."""

    out_text = str(out)
    out_uri = out_text if _is_uri(out_text) else None
    local_out = Path(out_text) if out_uri is None else None
    options = replace(options or RunOptions(out=Path(".")), out=local_out or Path("."))
    previous: list[dict[str, Any]] = []
    continuing = False  # a resumed run may redo what the earlier one left unrecorded
    if local_out is not None:
        continuing = options.resume and ((local_out / PARQUET_FOLDER).exists() or (local_out / MANIFEST).exists())
        previous = _check_output_folder(local_out, options)
    else:
        _check_output_uri(out_text, options)
    start_ray(address)
    started = time.perf_counter()
    started_at = now()
    rows, kind = _rows_from_source(source, exclude=[local_out] if local_out is not None else [], kind=options.kind)
    options = replace(options, kind=kind)
    batched = KINDS[kind].batched
    done = {row["path"] for row in previous}
    if local_out is not None and not (options.overwrite or continuing) and not _is_uri(str(source)):
        listed = rows.select_columns(["path", "key"]).take_all()
        keys, paths = [str(r["key"]) for r in listed], [str(r["path"]) for r in listed]
        _refuse_existing_outputs(local_out, keys, options.method, done, paths)
    if done:
        rows = rows.filter(lambda row: str(row["path"]) not in done)
    results = rows.map_batches(
        ExplainActor,
        fn_constructor_kwargs={
            "model": model,
            "weights": weights,
            "options": options,
            "out_uri": out_uri,
            "threads": threads_per_actor,
            "trust_weights": trust_weights,
            "labels": labels,
        },  # fmt: skip
        batch_size=options.batch_size if batched else 1,
        batch_format="numpy",
        concurrency=actors,
        num_cpus=cpus_per_actor,
        num_gpus=gpus_per_actor,
        max_restarts=-1,
        max_task_retries=-1,
    ).materialize()
    manifest_location = f"{out_text.rstrip('/')}/{PARQUET_FOLDER}"
    # a local manifest is written beside the earlier one and swapped in whole: an interrupted run
    # (resumed or not) leaves the earlier manifest as it was
    written_to = manifest_location if local_out is None else f"{manifest_location}.partial"
    if local_out is not None:
        shutil.rmtree(written_to, ignore_errors=True)
    results.write_parquet(written_to)
    counts = {row["status"]: row["count()"] for row in results.groupby("status").count().take_all()}
    if previous:
        import pyarrow as pa
        import pyarrow.parquet as pq

        Path(written_to).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(previous), f"{written_to}/resumed.parquet")
        counts["ok"] = counts.get("ok", 0) + len(previous)
    if local_out is not None:
        _swap_in(Path(written_to), Path(manifest_location))
    total = sum(counts.values())
    entries = None
    if total <= RESULTS_JSON_LIMIT:
        rows_done = [json.loads(row["entry"]) for row in results.take_all()]
        rows_done += [json.loads(row["entry"]) for row in previous]
        entries = [PhotoRecord.from_json(e) for e in sorted(rows_done, key=lambda e: e["path"])]
    seconds = time.perf_counter() - started
    summary = {"images": total, "ok": counts.get("ok", 0), "failed": total - counts.get("ok", 0),
               "seconds": round(seconds, 2), "engine": "ray", "actors": actors, "model": model,
               "method": options.method, "manifest": manifest_location}  # fmt: skip
    layers = {record.layer for record in entries or [] if record.ok}
    layer = options.layer or (layers.pop() if len(layers) == 1 else None)  # the layer used, as the local engine says
    firsts = results.select_columns(["source", "preprocessing"]).take(1) if total else []
    sources = [row["source"] for row in firsts]
    if preprocessing is None and firsts:  # a Python caller: what the actors applied
        preprocessing = _preprocessing_of(str(firsts[0]["preprocessing"] or ""))
    manifest = None
    if entries is not None:
        manifest = run_manifest("ray", model, sources[0] if sources else None, options, entries,
                                kind=kind, layer=layer, started=started_at, finished=now(), preprocessing=preprocessing,
                                **manifest_outputs(KINDS[kind], options)).to_json()  # fmt: skip
    _write_small_outputs(out_text, local_out, summary, manifest)
    return DistributedResult(total, summary["ok"], summary["failed"], manifest_location, seconds, entries)


def _check_output_folder(out: Path, options: RunOptions) -> list[dict[str, Any]]:
    """Refuse to mix with an earlier run unless asked; with ``resume``, return its successful rows, from
    the Parquet manifest of a Ray run or the ``results.json`` of a local one. Nothing is deleted here: an
    interrupted resume leaves the earlier manifest as it was."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"--out {out}: cannot write there ({error.strerror})") from None
    earlier = (out / PARQUET_FOLDER).exists() or (out / MANIFEST).exists()
    if earlier and not (options.overwrite or options.resume):
        raise UsageError(
            f"--out {out}: holds an earlier run; pass --resume to continue it, --overwrite to replace it, "
            "or another --out"
        )
    if not earlier or not options.resume:
        return []
    rows: dict[str, dict[str, Any]] = {}
    if (out / MANIFEST).exists():
        for record in read_manifest(out / MANIFEST).images:
            if record.ok:
                rows[record.path] = _row(record.to_json())
    if (out / PARQUET_FOLDER).exists():
        import pyarrow.parquet as pq

        for row in pq.read_table(out / PARQUET_FOLDER).to_pylist():
            if row["status"] == "ok":
                # manifests before 0.9 had no source column, before 0.11 no preprocessing column
                rows[row["path"]] = {"source": "", "preprocessing": "", **row}
    return list(rows.values())


ROW_COLUMNS = ("path", "status", "error", "entry", "source", "preprocessing")


def _row(entry: dict[str, Any], source: str = "", preprocessing: str = "") -> dict[str, Any]:
    """A manifest entry as a row of the Parquet manifest (``ROW_COLUMNS``); ``source`` is where the actor's
    model came from (the manifest's ``model_source``), ``preprocessing`` what its inputs went through (JSON,
    '' for none)."""
    error = entry.get("error", "")
    return {"path": entry["path"], "status": entry["status"], "error": error, "entry": json.dumps(entry),
            "source": source, "preprocessing": preprocessing}  # fmt: skip


def _preprocessing_of(text: str) -> Preprocessing | None:
    if not text:
        return None
    data = json.loads(text)
    return Preprocessing(resize=int(data["resize"]), crop=(int(data["crop"][0]), int(data["crop"][1])),
                         mean=tuple(data["mean"]), std=tuple(data["std"]), interpolation=data["interpolation"],
                         squash=bool(data["squash"]))  # fmt: skip


def _refuse_existing_outputs(out: Path, keys: list[str], method: str, done: set[str], paths: list[str]) -> None:
    """The local engine's rule for Ray: a photo's files are never replaced without ``--overwrite``
    (``--resume`` may redo the photos an earlier run did not record). One walk of ``out``, not one
    look-up per photo."""
    existing = sorted(str(Path(folder, name).relative_to(out)) for folder, _, names in os.walk(out) for name in names)
    for key, path in zip(keys, paths, strict=True):
        if path in done:
            continue
        prefix = method_prefix(key, method)
        position = bisect.bisect_left(existing, prefix)
        if position < len(existing) and existing[position].startswith(prefix):
            raise UsageError(
                f"--out {out}: {existing[position]} exists; pass --overwrite to replace the outputs there, "
                "or another --out"
            )


def _swap_in(new: Path, current: Path) -> None:
    """Replace the folder ``current`` by ``new`` with renames only."""
    old = current.with_name(current.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if current.exists():
        current.rename(old)
    new.rename(current)
    shutil.rmtree(old, ignore_errors=True)


def _check_output_uri(uri: str, options: RunOptions) -> None:
    import pyarrow.fs as pafs

    filesystem, root = pafs.FileSystem.from_uri(uri)
    manifest = filesystem.get_file_info(f"{root.rstrip('/')}/{PARQUET_FOLDER}")
    if manifest.type != pafs.FileType.NotFound:
        if not options.overwrite:
            raise UsageError(f"--out {uri}: holds an earlier run; pass --overwrite to replace it, or another --out")
        filesystem.delete_dir(manifest.path)


def _write_small_outputs(
    out_text: str, local_out: Path | None, summary: dict[str, Any], manifest: dict[str, Any] | None
) -> None:
    if local_out is not None:
        write_json_atomic(summary, local_out / SUMMARY)
        if manifest is not None:
            from ..render.report import write_explain_page

            write_json_atomic(manifest, local_out / MANIFEST)
            write_explain_page(manifest, local_out)
        return
    import pyarrow.fs as pafs

    filesystem, root = pafs.FileSystem.from_uri(out_text)
    for name, payload in ((SUMMARY, summary), (MANIFEST, manifest)):
        if payload is not None:
            with filesystem.open_output_stream(f"{root.rstrip('/')}/{name}") as sink:
                sink.write(json.dumps(payload, indent=1).encode())
