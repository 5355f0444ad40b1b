"""Model replicas that explain batches side by side on a CPU, each on its own share of the cores.

A small model's layers are too short to keep several threads busy: with PyTorch's threads on every core,
each layer ends with the threads waiting for the slowest of them, and the decoding and writing that share the
cores stretch every wait. Two copies of the model, each run by its own Python thread with one PyTorch thread
(PyTorch releases the GIL inside its operators), keep both cores busy instead: on 2 cores a folder of
10,000 photos goes through the embedded EfficientNet-Lite0 at 25.1 img/s instead of 20.2, and a run spends
86-88 CPU-ms a photo instead of 113-115 (docs/benchmarks.md, session 8).

Example:
    >>> models = replicate(model, replica_count(model, "cpu", None))          # doctest: +SKIP
    >>> with torch_threads(max(1, torch.get_num_threads() // len(models))):
    ...     explain_side_by_side(next_batch, [explainer_for(m) for m in models], tick=collect)
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

REPLICA_BYTES = 512 * 2**20  # a larger model is not copied: its layers keep the threads busy on their own
TICK_S = 0.2

Batch = TypeVar("Batch")


def batch_ranges(count: int, size: int) -> list[range]:
    """The positions ``0 .. count - 1`` in batches of ``size`` (the last one shorter)."""
    return [range(start, min(start + size, count)) for start in range(0, count, size)]


def model_bytes(model: nn.Module) -> int:
    """The bytes of ``model``'s parameters and buffers."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def replica_count(model: nn.Module, device: str, requested: int | None, batches: int = 2) -> int:
    """How many copies of ``model`` explain side by side: ``requested`` when given, else, on a CPU, one per
    PyTorch thread (at most ``batches``, the number of batches to explain) for a model of at most
    ``REPLICA_BYTES``; on a GPU one."""
    if requested is not None:
        return max(1, requested)
    if not str(device).startswith("cpu") or model_bytes(model) > REPLICA_BYTES:
        return 1
    return max(1, min(torch.get_num_threads(), batches))


def replicate(model: nn.Module, count: int) -> list[nn.Module]:
    """``model`` and ``count - 1`` deep copies of it (fewer when a model cannot be copied: a copy that
    fails leaves the run with the replicas it has)."""
    models = [model]
    for _ in range(count - 1):
        try:
            models.append(copy.deepcopy(model))
        except Exception:  # a module holding an uncopyable object (a lock, a file): run with fewer copies
            break
    return models


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run a block with ``count`` PyTorch threads per operator (process-wide: a thread started in the block
    takes the number at its first operator); restore the number after, also on an exception."""
    before = torch.get_num_threads()
    if count != before:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def explain_side_by_side(
    next_batch: Callable[[], Batch | None],
    explainers: list[Callable[[Batch], Callable[[], object]]],
    tick: Callable[[], object],
) -> None:
    """Each of ``explainers`` runs in its own thread, taking batches from ``next_batch`` (called under a lock;
    None when there are no more) until they run out. ``explainers[i](batch)`` explains a batch and returns
    a wait for its outputs: a replica waits for its previous batch's outputs before it explains the one
    after the next, so at most two batches per replica are in memory. ``tick`` runs in the calling thread
    every ``TICK_S`` seconds meanwhile (collecting records, progress, the manifest).

    The first exception in a replica stops the others after their current batch and is raised here; an
    exception in ``tick`` or a KeyboardInterrupt here does the same (each replica finishes the batch it is
    explaining before this returns)."""
    lock = threading.Lock()
    stop = threading.Event()
    failures: list[BaseException] = []

    def take() -> Batch | None:
        with lock:
            return None if stop.is_set() else next_batch()

    # each replica's own "done", set as its last act: Thread.join/is_alive cannot be trusted after a
    # KeyboardInterrupt lands inside join() (CPython marks the thread stopped while it still runs: it was
    # then still inside a torch operation at exit, and the process aborted, exit 134, in 4 of 13 Ctrl-Cs)
    finished = [threading.Event() for _ in explainers]

    def work(explain_batch: Callable[[Batch], Callable[[], object]], done: threading.Event) -> None:
        waiting: Callable[[], object] | None = None
        try:
            while (batch := take()) is not None:
                written = explain_batch(batch)
                if waiting is not None:
                    waiting()
                waiting = written
        except BaseException as error:  # raised again in the calling thread
            failures.append(error)
            stop.set()
        finally:
            done.set()

    threads = [
        threading.Thread(target=work, args=(explain, done), name=f"gradcam-replica-{i}", daemon=True)
        for i, (explain, done) in enumerate(zip(explainers, finished, strict=True))
    ]
    try:
        for thread in threads:
            thread.start()
        while running := [done for done in finished if not done.is_set()]:
            running[0].wait(TICK_S)
            tick()
    finally:
        stop.set()
        for thread, done in zip(threads, finished, strict=True):  # each finishes the batch in hand, also on a
            while thread.ident is not None and not done.is_set():  # second Ctrl-C or a SIGTERM
                try:
                    done.wait()
                except KeyboardInterrupt:
                    continue
    if failures:
        raise failures[0]


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


def decoding_worker(*_: object) -> None:
    """What each decoding worker process (a DataLoader's ``worker_init_fn``) does first: lower its priority
    (:func:`lower_priority`) and keep quiet when the main process abandons a tensor it was sending.

    A worker hands each decoded batch's tensors over through ``multiprocessing``'s resource sharer; when
    Ctrl-C or SIGTERM stops the main process while it is fetching one, the sharer's thread in the worker
    finds the connection gone and printed a ``BrokenPipeError`` traceback under the run's own one-line
    "interrupted" message. Only that error, from that thread, is silenced; every other goes to the hook
    that was there before."""
    lower_priority()
    previous = sys.excepthook

    def hook(kind: type[BaseException], error: BaseException, trace: object) -> None:
        if not abandoned_sharing(kind, trace):
            previous(kind, error, trace)  # type: ignore[arg-type]

    sys.excepthook = hook


def abandoned_sharing(kind: type[BaseException], trace: object) -> bool:
    """Whether an uncaught error is the resource sharer finding its peer gone (a broken connection raised
    inside ``multiprocessing/resource_sharer.py``)."""
    if not issubclass(kind, (BrokenPipeError, ConnectionResetError, EOFError)) or trace is None:
        return False
    frames = traceback.extract_tb(trace)  # type: ignore[arg-type]
    return any(Path(frame.filename).name == "resource_sharer.py" and "multiprocessing" in frame.filename
               for frame in frames)  # fmt: skip


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
