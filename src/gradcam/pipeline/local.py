"""Explain many photos: background decoding, batches, outputs written atomically, a run manifest.

This is the engine behind ``gradcam explain``; the CLI only parses options into :class:`RunOptions`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ..all_classes import explain_all
from ..explain import explain
from ..hooks import is_out_of_memory, preserved_state, run_model
from ..io.files import write_atomic
from ..io.images import (
    DEFAULT_MAX_MEGAPIXELS,
    FoundImages,
    ImageReadError,
    framed,
    image_tensor,
    preprocess,
    read_image,
)
from ..io.models import LoadedModel, Preprocessing
from ..methods import CAMMethod, get_method
from ..render.report import write_explain_page
from ..targets import TextPrompt, class_index
from .records import PhotoRecord, RunManifest
from .replicas import batch_ranges, explain_side_by_side, replica_count, replicate, torch_threads
from .writer import DecodedPhoto, PhotoWriter, WriteOptions, top_predictions

MANIFEST = "results.json"
MANIFEST_INTERVAL_S = 20.0
MANIFEST_SHARE = 0.02  # a large run's manifest is rewritten less often: at most this share of the time
WRITER_THREADS = 2  # at least; more where cores are left over (see writer_threads)
MAX_WRITER_THREADS = 16
SIDE_WORK_NICENESS = 10  # decoding and writing yield to the model's forward pass, the run's critical path


def lower_priority(*_: object) -> None:
    """Lower the calling thread's scheduling priority (Linux: each thread has its own niceness; elsewhere
    nothing happens). Decoding workers and writer threads call it, so that on a machine whose every core
    the model's threads use, they take the gaps the model leaves instead of stalling its threads, which
    wait for each other at every layer (1,000 photos on 2 cores, median of 4 turns: 0.69 -> 0.76 of plain
    inference)."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), SIDE_WORK_NICENESS)


def writer_threads(workers: int, replicas: int) -> int:
    """Threads that draw and encode the pictures: ``WRITER_THREADS`` where the model's replicas use every
    core (a CPU run), else also the cores neither the decoding workers nor the main thread use, up to
    ``MAX_WRITER_THREADS``: with the model on a GPU, the pictures (about 12 CPU-ms a photo) are what the
    CPU has to keep up with, and PIL draws and encodes without holding the GIL."""
    if replicas > 1:
        return WRITER_THREADS
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(WRITER_THREADS, min(MAX_WRITER_THREADS, cores - workers - 1))


def _resolved(value: Any) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


class UsageError(ValueError):
    """A bad option: exit code 2."""


@dataclass
class RunOptions:
    out: Path
    method: str = "gradcam"
    layer: str | None = None
    target: str | None = None
    prompts: tuple[str, ...] = ()
    per_channel: int = 0
    alpha: float = 0.5
    colormap: str = "jet"
    batch_size: int = 8
    workers: int = 2
    device: str = "cpu"
    overwrite: bool = False
    resume: bool = False
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
    max_side: int | None = None
    frame: str = "crop"
    tint: str = "flat"
    legend: bool = False
    counterfactual: bool = False
    eigen_smooth: bool = False
    aug_smooth: bool = False
    guided: bool = False
    perturbation_batch: int = 32
    method_options: tuple[tuple[str, str], ...] = ()
    top_channels: int | None = None
    prefix_tokens: int | None = None
    token_grid: tuple[int, int] | None = None
    save: tuple[str, ...] = ("overlay",)
    format: str = "jpg"
    replicas: int | None = None  # model copies side by side (None: one per thread on a CPU up to 512 MB, else 1)

    def cam_method(self) -> CAMMethod | str:
        """The method, with its options where it takes some (``--method-option KEY=VALUE`` too)."""
        method = type(get_method(self.method))
        options = list(self.method_options)
        if method.needs_model and method.accepts("batch_size"):
            options.append(("batch_size", str(self.perturbation_batch)))
        if method.accepts("top_channels"):
            options.append(("top_channels", str(self.top_channels)))
        return method_with_options(self.method, options) if options else self.method


def layer_spec(text: str | None) -> str | list[str] | None:
    """``--layer``: one name, or several comma-separated (their maps fused: averaged, or multiplied by
    refinecam)."""
    if text is None or "," not in text:
        return text
    return [part.strip() for part in text.split(",") if part.strip()]


def method_with_options(name: str, options: Sequence[tuple[str, str]]) -> CAMMethod:
    """``name``'s method built with ``options`` (``("k", "1.5")``, ...): each value is read as an int, a
    float, true/false/none, or else kept as text; an option the method does not take is a UsageError
    that lists the ones it does."""
    import inspect

    from ..methods import get_method

    cls = type(get_method(name))
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    values: dict[str, Any] = {}
    for key, text in options:
        if key not in accepted:
            takes = ", ".join(accepted) if accepted else "no options"
            raise UsageError(f"--method-option {key}: {name} takes {takes}")
        values[key] = _option_value(text)
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        raise UsageError(f"--method-option: {error}") from None


def methods_with_options(chosen: list[str], items: Sequence[str]) -> list[str | CAMMethod]:
    """Several methods (evaluate's, the web app's), each built with its option items: ``METHOD:KEY=VALUE``
    for that method, ``KEY=VALUE`` for every chosen method that takes KEY (a UsageError when none does)."""
    options: dict[str, list[tuple[str, str]]] = {name: [] for name in chosen}
    for item in items:
        key, equals, value = item.partition("=")
        owner, _, key = key.strip().rpartition(":")
        if not equals or not key:
            raise UsageError(f"method option {item!r}: write it as KEY=VALUE or METHOD:KEY=VALUE, e.g. dff:k=3")
        if owner:
            name = get_method(owner).name
            if name not in options:
                raise UsageError(f"method option {item!r}: {name} is not among the chosen methods")
            options[name].append((key.strip(), value.strip()))
            continue
        takers = [name for name in chosen if type(get_method(name)).accepts(key.strip())]
        if not takers:
            raise UsageError(f"method option {item!r}: no chosen method takes {key.strip()!r}")
        for name in takers:
            options[name].append((key.strip(), value.strip()))
    return [method_with_options(name, pairs) if pairs else name for name, pairs in options.items()]


def _option_value(text: str) -> Any:
    if "," in text:  # a list: finercam ranks=1,2,3
        return tuple(_option_value(part) for part in text.split(",") if part.strip())
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


@dataclass
class RunResult:
    manifest_path: Path
    entries: list[PhotoRecord] = field(default_factory=list)
    interrupted: bool = False

    @property
    def failed(self) -> int:
        return sum(1 for entry in self.entries if not entry.ok)


def decode(
    source: Path | bytes,
    spec: Preprocessing,
    max_megapixels: float,
    name: str = "",
    max_side: int | None = None,
    frame: str = "crop",
    index: int = 0,
) -> DecodedPhoto:
    """One photo (a path, or the bytes of a file called ``name``) as the model's input in ``frame`` (see
    :func:`gradcam.io.images.framed`), the photo to draw on (its own resolution, or at most ``max_side``
    pixels long), its :class:`Geometry` onto that photo and the photo's own (width, height); a bad file
    gives a :class:`DecodedPhoto` with only ``error`` (one line), never an exception."""
    label = name or str(source)
    try:
        draft = spec.resize if max_side else None  # with --max-side the decoder may shrink a JPEG
        image = read_image(source, draft_size=draft, max_megapixels=max_megapixels, name=name, max_side=max_side)
        pixels, geometry = preprocess(image, framed(spec, frame, image.size))
        photo = image
        if max_side and max(image.size) > max_side:
            photo = image.copy()
            photo.thumbnail((max_side, max_side), Image.Resampling.BILINEAR, reducing_gap=3.0)
            geometry = replace(geometry, original=(photo.height, photo.width))
        size = tuple(image.info.get("original_size", image.size))
        return DecodedPhoto(pixels, geometry, image_tensor(photo), (int(size[0]), int(size[1])), index=index)
    except ImageReadError as error:
        return DecodedPhoto(error=str(error), index=index)
    except Exception as error:  # a decoder crash must not end the run
        return DecodedPhoto(error=f"{label}: cannot decode ({type(error).__name__}: {error})", index=index)


class PhotoDataset(Dataset):
    """Decodes and preprocesses one photo per item, in DataLoader workers; a bad file becomes an error item."""

    def __init__(self, paths: Sequence[Path], spec: Preprocessing, options: RunOptions) -> None:
        self.paths, self.spec, self.options = list(paths), spec, options

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> DecodedPhoto:
        options = self.options
        return decode(self.paths[index], self.spec, options.max_megapixels, "", options.max_side, options.frame, index)


def _collate(items: list[DecodedPhoto]) -> list[DecodedPhoto]:
    return items


def parse_target(target: str | None, labels: Sequence[str] | None, num_classes: int | None = None) -> Any:
    """``--target`` to a target spec: None (top-1), ``top3``, or comma-separated indices / class names."""
    if target is None or not target.strip():
        return None
    text = target.strip()
    if re.fullmatch(r"top-?\d+", text, re.IGNORECASE):
        return text
    row: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part.lstrip("-").isdigit():
            index = int(part)
        elif labels is None:
            raise UsageError(f"--target {part!r}: this model's class names are unknown; give a class index")
        else:
            try:
                index = class_index(part, labels)
            except ValueError as error:
                raise UsageError(f"--target: {error}") from None
        if num_classes is not None and not 0 <= index < num_classes:
            raise UsageError(f"--target {index}: out of range for a model with {num_classes} classes")
        if index not in row:
            row.append(index)
    if not row:
        raise UsageError(f"--target {target!r}: no class given")
    return row


def output_keys(found: FoundImages) -> list[str]:
    """A unique output name per photo: its path relative to the folder that holds all the inputs' roots,
    without the suffix. One folder keeps its own layout (``photos/a/x.jpg`` -> ``a/x``); ``a/x.jpg`` and
    ``b/x.jpg`` given together become ``a/x`` and ``b/x``; where two photos differ only in their suffix
    (``x.jpg``, ``x.png``) the suffix stays in the name (``x.jpg``, ``x.png``)."""
    absolute = [Path(os.path.abspath(path)) for path in found.paths]
    roots = [Path(os.path.abspath(root)) for root in found.roots]
    if not absolute:
        return []
    common = Path(os.path.commonpath(roots))
    relative = [path.relative_to(common) for path in absolute]
    stems = [str(path.with_suffix("")) for path in relative]
    counts = Counter(stems)
    keys = [stem if counts[stem] == 1 else str(path) for stem, path in zip(stems, relative, strict=True)]
    taken: set[str] = set()
    unique = []
    for key in keys:  # a photo named like another's key (``x.jpg.png`` beside ``x.jpg``, ``x.png``)
        candidate, number = key, 2
        while candidate in taken:
            candidate, number = f"{key}~{number}", number + 1
        taken.add(candidate)
        unique.append(candidate)
    return unique


def write_json_atomic(data: Any, path: Path) -> None:
    write_atomic(path, lambda temporary: temporary.write_text(json.dumps(data, indent=1)))


ALL_CLASSES_DRAWN = 3  # with --target all: the raw maps of every class are saved, the top ones drawn


def read_manifest(path: Path) -> RunManifest:
    """An earlier run's ``results.json`` (either engine's, any version), to continue it; one line when it
    cannot be read."""
    try:
        return RunManifest.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise UsageError(
            f"--resume: {path} cannot be read ({type(error).__name__}: {str(error)[:80]}); "
            "move it away, or pass --overwrite instead of --resume"
        ) from None


class OutputError(RuntimeError):
    """The run's own files (the manifest) cannot be written: a full disk, a removed folder. Exit code 1."""


# The options that decide what a map means: a --resume must use the same ones as the run it continues.
RESUME_KEYS = ("model", "methods", "target", "prompts", "frame", "counterfactual", "eigen_smooth", "aug_smooth")


def resolve_frame(bundle: LoadedModel, options: RunOptions) -> RunOptions:
    """``options`` with ``frame="full"`` turned into ``"squash"`` (said in one line) for a model that takes
    one input size only (a ViT with fixed position embeddings): one forward pass on a wider input."""
    if options.frame != "full":
        return options
    height, width = bundle.preprocessing.crop
    model = bundle.model
    probe = torch.zeros(1, 3, height, width + 96, device=next(model.parameters()).device)
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

    def __init__(self, bundle: LoadedModel, found: FoundImages, options: RunOptions) -> None:
        options = resolve_frame(bundle, options)
        self.bundle, self.found, self.options = bundle, found, options
        self.keys = output_keys(found)
        self.entries: dict[int, PhotoRecord] = {}
        self.previous: dict[str, PhotoRecord] = {}
        self.in_flight: list[tuple[int, Future]] = []
        self.in_flight_lock = threading.Lock()
        self.manifest_path = options.out / MANIFEST
        self.explainer = BatchExplainer(bundle, options)
        self.explainers = [self.explainer]  # with the replicas of the model, once the run starts
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
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
        return RunManifest(
            engine="local",
            model=self.bundle.name,
            model_source=self.bundle.source,
            methods=[options.method],
            layer=next((e.layer for e in self.explainers if e.layer is not None), None),
            target=options.target,
            prompts=list(options.prompts) or None,
            frame=options.frame,
            colormap=options.colormap,
            format=options.format,
            save=sorted(BatchExplainer.saved(options)),
            counterfactual=options.counterfactual,
            eigen_smooth=options.eigen_smooth,
            aug_smooth=options.aug_smooth,
            started=self.started,
            finished=time.strftime("%Y-%m-%dT%H:%M:%S%z") if finished else None,
            images=[self.entries[i] for i in sorted(self.entries)],
        )

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
        """Explain every photo. The manifest says ``finished`` only when every photo was seen; a run
        stopped by a usage error before any photo was explained leaves no manifest behind."""
        self.prepare_output()
        todo = []
        for index, path in enumerate(self.found.paths):
            if str(path) in self.previous:
                self.entries[index] = self.previous[str(path)]
            else:
                todo.append(index)
        if progress and len(todo) < len(self.found.paths):
            progress(len(self.found.paths) - len(todo))
        dataset = PhotoDataset([self.found.paths[i] for i in todo], self.bundle.preprocessing, self.options)
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
            collate_fn=_collate,
            prefetch_factor=2 if workers > 0 else None,
            worker_init_fn=lower_priority,
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

    @staticmethod
    def saved(options: RunOptions) -> frozenset[str]:
        """The outputs written: ``--save``, with ``channels`` for ``--per-channel`` and ``guided`` for ``--guided``."""
        extra = ({"channels"} if options.per_channel else set()) | ({"guided"} if options.guided else set())
        return frozenset(set(options.save) | extra)

    def write_options(self) -> WriteOptions:
        options = self.options
        return WriteOptions(
            out=options.out, method=options.method, save=self.saved(options), format=options.format,
            alpha=options.alpha,
            colormap=options.colormap, tint=options.tint, legend=options.legend, per_channel=options.per_channel,
            counterfactual=options.counterfactual, prompts=bool(options.prompts),
            replace=options.overwrite or self.replace_unrecorded, preprocessing=self.bundle.preprocessing,
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
        if self.layer is None:
            self.layer = self.bundle.layer_for(None, inputs)
        layer = layer_spec(self.layer)
        every = None
        targets: Any = None if self.options.target == "all" else parse_target(self.options.target, self.bundle.labels)
        if self.options.prompts:
            targets = TextPrompt(self.options.prompts)
        elif isinstance(targets, list):
            targets = [targets] * len(good)
        try:
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
        jobs: list[tuple[int, Callable[[], PhotoRecord]]] = []
        for row, (position, path, key, item) in enumerate(good):
            job = partial(
                writer.write, path, key, item, ex, row, predictions[row], contributions, every_raw, prepared=prepared
            )
            jobs.append((position, job))
        return jobs


def _input(photo: DecodedPhoto) -> torch.Tensor:
    assert photo.input is not None
    return photo.input


def check_same_run(earlier: RunManifest, current: RunManifest, layer: str | None, out: Path) -> None:
    """A UsageError naming the first option (``RESUME_KEYS``, or the requested ``layer``) in which the run in
    ``out`` that --resume continues differs from this one: its maps would mean something else."""
    for key in RESUME_KEYS:
        if getattr(earlier, key) != getattr(current, key):
            flag = (
                "--" + key.replace("_", "-").rstrip("s")
                if key in ("methods", "prompts")
                else "--" + key.replace("_", "-")
            )
            raise UsageError(
                f"--resume: the earlier run in {out} used {flag} {_shown(getattr(earlier, key))}, "
                f"this one {_shown(getattr(current, key))}; run with the same options, or choose another --out"
            )
    if layer is not None and earlier.layer not in (None, layer):
        raise UsageError(
            f"--resume: the earlier run in {out} explained layer {earlier.layer!r}, this one asks for "
            f"{layer!r}; run with the same --layer, or choose another --out"
        )


def _shown(value: Any) -> str:
    return repr(value[0]) if isinstance(value, list) and len(value) == 1 else repr(value)
