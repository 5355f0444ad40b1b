"""The local engine for inputs explained as images (photos, image arrays): decoding in the background or
in the model replicas' threads, batches, outputs written atomically by writer threads, a run manifest.

:class:`Runner` runs one ``gradcam explain`` over a folder; :class:`BatchExplainer` explains one batch and
hands each input to the :class:`~gradcam.pipeline.writer.PhotoWriter` (the Ray actors run it too).
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from dataclasses import replace
from functools import partial
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..all_classes import explain_all
from ..explain import explain
from ..hooks import is_out_of_memory, preserved_state, run_model
from ..io.files import remove_stale_temporaries
from ..io.images import FoundImages
from ..io.models import LoadedModel
from ..render.report import untrained_warning, write_explain_page
from ..targets import TextPrompt
from .decode import DecodedPhoto, PhotoDataset, collate
from .kinds import KINDS, manifest_outputs
from .manifest import (
    MANIFEST,
    OutputError,
    RunResult,
    check_same_run,
    now,
    read_manifest,
    run_manifest,
    write_json_atomic,
)
from .naming import output_keys
from .options import RunOptions, UsageError, layer_spec, parse_target, saved_outputs
from .records import PhotoRecord, RunManifest
from .replicas import (  # noqa: F401 (WRITER_THREADS, MAX_WRITER_THREADS: this engine's, read by tests)
    MAX_WRITER_THREADS,
    WRITER_THREADS,
    batch_ranges,
    decoding_worker,
    explain_side_by_side,
    lower_priority,
    replica_count,
    replicate,
    torch_threads,
    writer_threads,
)
from .writer import BROKEN_SCORES, PhotoWriter, WriteOptions, non_finite_rows, top_predictions

ALL_CLASSES_DRAWN = 3  # with --target all: the raw maps of every class are saved, the top ones drawn
MANIFEST_INTERVAL_S = 20.0
MANIFEST_SHARE = 0.02  # a large run's manifest is rewritten less often: at most this share of the time


def _resolved(value: Any) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


def resolve_frame(bundle: LoadedModel, options: RunOptions) -> RunOptions:
    """``options`` with ``frame="full"`` turned into ``"squash"`` (said in one line) for a model that takes
    one input size only (a ViT with fixed position embeddings): one forward pass on a wider input."""
    if options.frame != "full":
        return options
    height, width = bundle.preprocessing.crop
    model = bundle.model
    probe = bundle.black_image(wider=96)
    try:
        with preserved_state(model), torch.inference_mode():
            run_model(model, probe)
    except (ValueError, RuntimeError, AssertionError, TypeError):
        warnings.warn(
            f"--frame full: {bundle.name} takes only {height}x{width} inputs; the whole photo is resized to it "
            "(--frame squash)",
            stacklevel=2,
        )
        return replace(options, frame="squash")
    return options


class Runner:
    """Runs one ``gradcam explain`` over the photos found; see :func:`run`."""

    def __init__(self, bundle: LoadedModel, found: FoundImages, options: RunOptions, kind: str = "photo") -> None:
        options = resolve_frame(bundle, options)
        self.kind = kind  # "photo" or "image" (image arrays)
        self.bundle, self.found, self.options = bundle, found, options
        self.keys = output_keys(found)
        self.entries: dict[int, PhotoRecord] = {}
        self.previous: dict[str, PhotoRecord] = {}
        self.in_flight: list[tuple[int, Future]] = []
        self.in_flight_lock = threading.Lock()
        self.manifest_path = options.out / MANIFEST
        self.explainer = BatchExplainer(bundle, options)
        self.explainers = [self.explainer]  # with the replicas of the model, once the run starts
        self.started = now()
        self.last_manifest = time.monotonic()
        self.manifest_interval = MANIFEST_INTERVAL_S

    def prepare_output(self) -> None:
        out = self.options.out
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / ".gradcam-write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as error:
            raise UsageError(f"--out {out}: cannot write there ({error.strerror}); choose another folder") from None
        if self.options.resume:  # a run killed outright (SIGKILL: no clean-up ran) leaves its temporaries
            remove_stale_temporaries(out)
        if self.manifest_path.exists():
            if self.options.resume:
                self._continue(read_manifest(self.manifest_path))
            elif not self.options.overwrite:
                raise UsageError(
                    f"--out {out}: already holds {MANIFEST} from an earlier run; pass --resume to continue it, "
                    "--overwrite to replace its files, or another --out"
                )

    def _continue(self, earlier: RunManifest) -> None:
        """Take over an earlier run's successful photos, if it explained them the same way."""
        check_same_run(earlier, self.manifest(finished=False), self.options.layer, self.options.out)
        layer = earlier.layer
        if layer is not None:
            self.explainer.layer = layer
        self.explainer.replace_unrecorded = True
        self.previous = {record.path: record for record in earlier.images if record.ok}

    def manifest(self, finished: bool) -> RunManifest:
        options = self.options
        layer = next((e.layer for e in self.explainers if e.layer is not None), None)
        return run_manifest("local", self.bundle.name, self.bundle.source, options,
                            [self.entries[i] for i in sorted(self.entries)], kind=self.kind, layer=layer,
                            started=self.started, finished=now() if finished else None,
                            preprocessing=self.bundle.preprocessing,
                            **manifest_outputs(KINDS[self.kind], options))  # fmt: skip

    def write_manifest(self, finished: bool) -> None:
        """``results.json`` and the ``index.html`` page that shows it, both written atomically."""
        started = time.monotonic()
        manifest = self.manifest(finished).to_json()
        try:
            write_json_atomic(manifest, self.manifest_path)
            write_explain_page(manifest, self.options.out)
        except OSError as error:
            raise OutputError(f"{self.manifest_path}: cannot write the manifest ({error.strerror or error})") from None
        self.last_manifest = time.monotonic()
        # 10,000 photos make a 10 MB manifest and page: rewriting it every 20 s would cost ~3% of the run
        self.manifest_interval = max(MANIFEST_INTERVAL_S, (self.last_manifest - started) / MANIFEST_SHARE)

    def run(self, progress: Callable[[int], None] | None = None) -> RunResult:
        """Explain every photo. The manifest is written before the first photo (so a run killed at any
        point leaves one, and ``--resume`` knows the outputs it finds are the run's, not the user's) and says
        ``finished`` only when every photo was seen; a run stopped by a usage error before any photo was
        explained leaves no manifest behind."""
        self.prepare_output()
        todo = []
        for index, path in enumerate(self.found.paths):
            if str(path) in self.previous:
                self.entries[index] = self.previous[str(path)]
            else:
                todo.append(index)
        fresh = not self.manifest_path.exists()
        self.write_manifest(finished=False)
        try:
            return self._run(todo, progress)
        except UsageError:
            if fresh and not self.entries:  # nothing was explained: the corrected command must not be refused
                for written in (self.manifest_path, self.options.out / "index.html"):
                    written.unlink(missing_ok=True)
            raise

    def _run(self, todo: list[int], progress: Callable[[int], None] | None) -> RunResult:
        if progress and len(todo) < len(self.found.paths):
            progress(len(self.found.paths) - len(todo))
        options = self.options
        dataset = PhotoDataset([self.found.paths[i] for i in todo], self.bundle.preprocessing, options.max_megapixels,
                               options.max_side, options.frame, self.kind)  # fmt: skip
        batches = batch_ranges(len(todo), self.options.batch_size)
        count = replica_count(self.bundle.model, self.options.device, self.options.replicas, len(batches))
        self.explainers = self._replicas(count)
        interrupted = completed = False
        # the pictures of one batch are written by threads while the model explains the next
        threads = writer_threads(self.options.workers, len(self.explainers))
        with ThreadPoolExecutor(threads, "gradcam-writer", initializer=lower_priority) as writers:
            try:
                if len(self.explainers) > 1:
                    self._explain_side_by_side(dataset, iter(batches), todo, writers, progress)
                else:
                    self._explain_in_turn(dataset, todo, writers, progress)
                completed = True
            except KeyboardInterrupt:
                interrupted = True
            finally:
                while True:  # what was explained is written and recorded, also on a Ctrl-C in here
                    try:
                        self._collect(progress)
                        break
                    except KeyboardInterrupt:
                        interrupted, completed = True, False
                if completed or interrupted or self.entries:
                    self.write_manifest(finished=completed)
        return RunResult(self.manifest_path, [self.entries[i] for i in sorted(self.entries)], interrupted)

    def _replicas(self, count: int) -> list[BatchExplainer]:
        """This run's explainer and ``count - 1`` more, each with its own copy of the model and the
        explainer's state (the layer, a resumed run's replacing of leftovers)."""
        explainers = [self.explainer]
        for model in replicate(self.bundle.model, count)[1:]:
            explainer = BatchExplainer(replace(self.bundle, model=model), self.options)
            explainer.layer, explainer.replace_unrecorded = self.explainer.layer, self.explainer.replace_unrecorded
            explainer.warned = self.explainer.warned
            explainers.append(explainer)
        return explainers

    def _explain_in_turn(
        self, dataset: PhotoDataset, todo: list[int], writers: Executor, progress: Callable[[int], None] | None
    ) -> None:
        """One model: photos decoded by background processes (``--workers``), one batch after another."""
        workers = self.options.workers
        loader = DataLoader(
            dataset,
            batch_size=self.options.batch_size,
            num_workers=workers,
            collate_fn=collate,
            prefetch_factor=2 if workers > 0 else None,
            worker_init_fn=decoding_worker,
        )
        for items in loader:
            written_before = len(self.in_flight)
            self.explain_batch([(todo[item.index], item) for item in items], writers)
            self._collect(progress, keep_last=len(self.in_flight) - written_before)
            self._write_manifest_when_due()

    def _explain_side_by_side(
        self,
        dataset: PhotoDataset,
        batches: Iterator[range],
        todo: list[int],
        writers: Executor,
        progress: Callable[[int], None] | None,
    ) -> None:
        """Every replica at once, each on its share of PyTorch's threads, decoding its own batches: the
        decoding fills the gaps of the other replicas' layers, without a process of its own and without
        handing photos over between processes (1,000 photos on 2 cores: 86-88 CPU-ms a photo, against
        113-115 with decoding processes and one model on both threads; docs/benchmarks.md)."""

        def replica(explainer: BatchExplainer) -> Callable[[range], Callable[[], object]]:
            def explain_batch(batch: range) -> Callable[[], object]:
                items = [dataset[i] for i in batch]
                futures = self.explain_batch([(todo[item.index], item) for item in items], writers, explainer)
                return partial(wait, futures)

            return explain_batch

        def tick() -> None:
            self._collect(progress, only_done=True)
            self._write_manifest_when_due()

        with torch_threads(max(1, torch.get_num_threads() // len(self.explainers))):
            explain_side_by_side(lambda: next(batches, None), [replica(e) for e in self.explainers], tick)

    def _write_manifest_when_due(self) -> None:
        if time.monotonic() - self.last_manifest > self.manifest_interval:
            self.write_manifest(finished=False)

    def explain_batch(
        self,
        items: list[tuple[int, DecodedPhoto]],
        writers: Executor | None = None,
        explainer: BatchExplainer | None = None,
    ) -> list[Future]:
        """Explain a batch now (with ``explainer``, else this run's own); its outputs are written by
        ``writers`` (or here). Each photo's future is in :attr:`in_flight` as soon as it exists, so an
        interrupt cannot lose a photo being written."""
        photos = [(str(self.found.paths[index]), self.keys[index], item) for index, item in items]
        indices = [index for index, _ in items]

        def in_flight(position: int, future: Future) -> None:
            with self.in_flight_lock:
                self.in_flight.append((indices[position], future))

        return (explainer or self.explainer).submit(photos, writers, in_flight)

    def _collect(self, progress: Callable[[int], None] | None, keep_last: int = 0, only_done: bool = False) -> None:
        """Record the manifest entries of the photos in flight: all but the ``keep_last`` newest, or
        (``only_done``) those already written."""
        with self.in_flight_lock:
            flying = self.in_flight[: len(self.in_flight) - keep_last]
        if only_done:
            flying = [(index, future) for index, future in flying if future.done()]
        for index, future in flying:  # an interrupt in here leaves the photo in flight, for the final collect
            self.entries[index] = future.result()
        taken = {id(future) for _, future in flying}
        with self.in_flight_lock:
            self.in_flight = [pair for pair in self.in_flight if id(pair[1]) not in taken]
        if progress and flying:
            progress(len(flying))


class BatchExplainer:
    """Explains batches of decoded photos and hands each to the :class:`PhotoWriter`: the part of a run
    that the local engine and the Ray actors share, so both give the same maps, files and records."""

    def __init__(self, bundle: LoadedModel, options: RunOptions) -> None:
        if options.prompts:  # the prompts are the classes: targets, labels and the ranking of predictions
            bundle = replace(bundle, labels=options.prompts)
        self.bundle, self.options = bundle, options
        self.layer: str | None = bundle.layer_for(options.layer)
        # set when continuing an earlier run: files of photos its manifest does not list are its leftovers
        self.replace_unrecorded = False
        self.warned = threading.Event()  # a run says once that the model's scores are not finite

    def write_options(self) -> WriteOptions:
        options = self.options
        return WriteOptions(
            out=options.out, method=options.method, save=saved_outputs(options), format=options.format,
            alpha=options.alpha, colormap=options.colormap, tint=options.tint, legend=options.legend is not False,
            per_channel=options.per_channel,
            counterfactual=options.counterfactual, prompts=bool(options.prompts),
            overwrite=options.overwrite or self.replace_unrecorded, preprocessing=self.bundle.preprocessing,
            scale=options.scale, untrained=untrained_warning(self.bundle.name, self.bundle.source) is not None,
            max_side=options.max_side,
        )  # fmt: skip

    def explain(self, photos: list[tuple[str, str, DecodedPhoto]]) -> list[PhotoRecord]:
        """``photos``: (path, output key, decoded photo) each; returns one record per photo."""
        return [future.result() for future in self.submit(photos)]

    def submit(
        self,
        photos: list[tuple[str, str, DecodedPhoto]],
        writers: Executor | None = None,
        on_future: Callable[[int, Future], object] | None = None,
    ) -> list[Future]:
        """Explain the photos now; write each one's outputs on ``writers`` (or here, when None). One future
        per photo, resolving to its record; ``on_future(position, future)`` hears of each one as soon as
        it exists."""
        futures: list[Future | None] = [None] * len(photos)

        def settle(position: int, future: Future) -> None:
            futures[position] = future
            if on_future is not None:
                on_future(position, future)

        good = []
        for position, (path, key, item) in enumerate(photos):
            if item.error is not None:
                settle(position, _resolved(PhotoRecord.failed(path, item.error)))
            else:
                good.append((position, path, key, item))
        for position, job in self._explain_in_memory(good):
            settle(position, writers.submit(job) if writers is not None else _resolved(job()))
        return [future for future in futures if future is not None]

    def _explain_in_memory(
        self, good: list[tuple[int, str, str, DecodedPhoto]]
    ) -> list[tuple[int, Callable[[], PhotoRecord]]]:
        """:meth:`_explain_good`, halving the batch while it runs out of memory; a single photo that
        still does not fit becomes an error record."""
        if not good:
            return []
        try:
            return self._explain_good(good)
        except (MemoryError, RuntimeError) as error:
            if not is_out_of_memory(error):
                raise
        if len(good) > 1:
            half = len(good) // 2
            return self._explain_in_memory(good[:half]) + self._explain_in_memory(good[half:])
        position, path = good[0][0], good[0][1]
        record = PhotoRecord.failed(path, f"{path}: out of memory explaining this photo alone")
        return [(position, partial(lambda r: r, record))]

    def _explain_good(
        self, good: list[tuple[int, str, str, DecodedPhoto]]
    ) -> list[tuple[int, Callable[[], PhotoRecord]]]:
        shapes = list(dict.fromkeys(tuple(_input(item).shape) for *_, item in good))
        if len(shapes) > 1:  # --frame full: photos of other aspect ratios are other input sizes
            return [
                job
                for shape in shapes
                for job in self._explain_good([g for g in good if tuple(_input(g[3]).shape) == shape])
            ]
        model = self.bundle.model
        device = next(model.parameters()).device
        dtype = next(model.parameters()).dtype
        inputs = torch.stack([_input(item) for _, _, _, item in good]).to(device=device, dtype=dtype)
        every = None
        targets: Any = None if self.options.target == "all" else parse_target(self.options.target, self.bundle.labels)
        if self.options.prompts:
            targets = TextPrompt(self.options.prompts)
        elif isinstance(targets, list):
            targets = [targets] * len(good)
        try:
            if self.layer is None:  # its probe runs the model: a model that fails on the photos is one line
                self.layer = self.bundle.layer_for(None, inputs)
            layer = layer_spec(self.layer)
            if self.options.target == "all":  # every class: the raw maps kept, the top classes drawn
                every = explain_all(
                    model, inputs, self.options.cam_method(), layer, labels=self.bundle.labels,
                    dtype=torch.float16, counterfactual=self.options.counterfactual,
                    prefix_tokens=self.options.prefix_tokens, grid=self.options.token_grid,
                )  # fmt: skip
            ex = (
                every.top_explanation(ALL_CLASSES_DRAWN)
                if every is not None
                else explain(
                    model,
                    inputs,
                    self.options.cam_method(),
                    layer,
                    targets,
                    labels=self.bundle.labels,
                    counterfactual=self.options.counterfactual,
                    eigen_smooth=self.options.eigen_smooth,
                    aug_smooth=self.options.aug_smooth,
                    guided=self.options.guided,
                    prefix_tokens=self.options.prefix_tokens,
                    grid=self.options.token_grid,
                )
            )
        except (ValueError, TypeError) as error:
            raise UsageError(str(error)) from None
        if ex.logits is None:
            raise UsageError("the model's output is not (B, num_classes) class scores")
        predictions = top_predictions(ex.logits, self.bundle.labels, similarity=bool(self.options.prompts))
        contributions = (
            ex.channel_contributions(self.options.per_channel) if self.options.per_channel and every is None else None
        )
        every_raw = every.raw.cpu() if every is not None else None
        writer = PhotoWriter(self.write_options(), self.bundle.labels)
        prepared = writer.prepare(ex)  # here, for the whole batch: the writers' threads then run PIL only
        broken = _broken_rows(ex.logits, ex.scores, self.warned)
        jobs: list[tuple[int, Callable[[], PhotoRecord]]] = []
        for row, (position, path, key, item) in enumerate(good):
            if row in broken:
                failed = PhotoRecord.failed(path, f"{path}: {NON_FINITE}")
                jobs.append((position, partial(lambda r: r, failed)))
                continue
            job = partial(
                writer.write, path, key, item, ex, row, predictions[row], contributions, every_raw, prepared=prepared
            )
            jobs.append((position, job))
        return jobs


NON_FINITE = f"{BROKEN_SCORES}; nothing was drawn"


def _broken_rows(logits: torch.Tensor, scores: torch.Tensor, warned: threading.Event) -> set[int]:
    """:func:`non_finite_rows` of a batch, said once per run (``warned``)."""
    rows = non_finite_rows(logits, scores)
    if rows and not warned.is_set():
        warned.set()
        warnings.warn(f"{NON_FINITE}; those photos are recorded as failed", stacklevel=3)
    return rows


def _input(photo: DecodedPhoto) -> torch.Tensor:
    assert photo.input is not None
    return photo.input
