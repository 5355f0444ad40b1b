"""The web app's server state: the models it serves (each loaded once, before the server listens), the
scratch folders of its requests (the newest few kept, all removed when the process ends), and how a
failed request is said on the page (one line, the user's text shown as text).

Example:
    >>> shelf = ModelShelf(["efficientnet_lite0"]); shelf.load_all()          # doctest: +SKIP
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import re
import shutil
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ..io.models import DEFAULT_MODEL, LoadedModel, load_bundle

SCRATCH_FOLDERS = 64  # requests whose files stay downloadable
MAX_UPLOAD_MB = 20


class AppError(ValueError):
    """A message for the page."""


REQUEST_SECONDS = 120.0  # one request's time budget: past it, its next forward pass stops it
_DEADLINE: contextvars.ContextVar[tuple[float, float, threading.Event | None] | None] = contextvars.ContextVar(
    "gradcam_request_deadline", default=None
)  # (the monotonic time it ends, its length in seconds, set when the request is cancelled)
T = TypeVar("T")


class BudgetExceeded(Exception):  # noqa: N818 (what the page says: the request ran past its budget)
    """A request ran past its time budget; raised at its next forward pass (of any module of a served model)."""


@contextlib.contextmanager
def request_budget(seconds: float | None = None, cancelled: threading.Event | None = None) -> Iterator[None]:
    """The calls in this block (this thread) may run the served models for ``seconds`` in all, and stop at
    their next forward pass once ``cancelled`` is set (the request's browser went away): one request cannot
    hold the server (``sscam`` with many samples on a large photo, say), whatever its options."""
    budget = REQUEST_SECONDS if seconds is None else seconds
    token = _DEADLINE.set((time.monotonic() + budget, budget, cancelled))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def _check_budget(module: Any, inputs: Any) -> None:
    budget = _DEADLINE.get()
    if budget is None:
        return
    ends, seconds, cancelled = budget
    if cancelled is not None and cancelled.is_set():
        raise BudgetExceeded("the request was cancelled (its page was closed)")
    if time.monotonic() > ends:
        raise BudgetExceeded(
            f"the request ran past its {seconds:g} s budget; ask for fewer methods, targets or samples, "
            "or use the command line"
        )


def in_background(work: Callable[[], T], idle: Any, poll_s: float = 0.5) -> Generator[Any, None, T]:
    """Run ``work`` (under the request's budget) in a thread while this generator yields ``idle`` every
    ``poll_s`` seconds; Gradio stops an event's generator when its page goes away (it closes it at a
    ``yield``), and that cancels the work at its next forward pass. Returns ``work``'s result, or raises
    its error."""
    cancelled = threading.Event()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            with request_budget(cancelled=cancelled):
                outcome["value"] = work()
        except BaseException as error:  # noqa: BLE001 (handed to the generator's caller)
            outcome["error"] = error

    worker = threading.Thread(target=run, name="gradcam-web-request", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(poll_s)
            if worker.is_alive():
                yield idle
    finally:
        cancelled.set()  # also when the generator is closed at a yield: the page is gone
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def guard(model: Any) -> None:
    """Check the request's budget before every module's forward pass of a model this server owns (a part
    of the network run alone, as the perturbation methods do, is checked too)."""
    for module in model.modules():
        module.register_forward_pre_hook(_check_budget)


class ModelShelf:
    """The models this server offers, each loaded once. Only names given at start are loadable, and
    :func:`build_app` loads them all before the server listens."""

    def __init__(
        self,
        names: Sequence[str] = (DEFAULT_MODEL,),
        weights: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        trust_weights: bool = False,
    ) -> None:
        """``weights`` and ``labels`` map a served name to a weights file (a fine-tuned checkpoint, read
        without unpickling) and to a class-names file. ``trust_weights`` (``gradcam serve --trust-weights``,
        the operator's word for the model files they named) lets files that run code on loading in, such as
        an Ultralytics checkpoint; what users upload is never unpickled."""
        self.names = list(dict.fromkeys(names)) or [DEFAULT_MODEL]
        self.trust_weights = trust_weights
        self.weights, self.labels = dict(weights or {}), dict(labels or {})
        self._loaded: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> LoadedModel:
        if name not in self.names:
            raise AppError(
                f"model {name!r} is not served here (served: {', '.join(self.names)}); "
                f"start the app with gradcam serve --models {name} to offer it"
            )
        with self._lock:
            if name not in self._loaded:
                # weights_only: nothing is unpickled, unless the operator trusts the model files they named
                bundle = load_bundle(name, self.weights.get(name), labels=self.labels.get(name),
                                     trust_weights=self.trust_weights)  # fmt: skip
                guard(bundle.model)  # the server's own copy: every request is held to its budget
                self._loaded[name] = bundle
            return self._loaded[name]

    def load_all(self) -> None:
        for name in self.names:
            self.get(name)


class ScratchSpace:
    """One folder per request under a private root; only the newest ``keep`` folders are kept, and the
    root goes when the process ends."""

    def __init__(self, keep: int = SCRATCH_FOLDERS) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="gradcam-web-"))
        self.keep = keep
        self._folders: deque[Path] = deque()
        self._lock = threading.Lock()
        atexit.register(shutil.rmtree, self.root, ignore_errors=True)

    def new_folder(self) -> Path:
        folder = Path(tempfile.mkdtemp(dir=self.root))
        with self._lock:
            self._folders.append(folder)
            while len(self._folders) > self.keep:
                shutil.rmtree(self._folders.popleft(), ignore_errors=True)
        return folder


MARKDOWN_SPECIAL = "\\`*_{}[]()<>#+-.!|~&"


def as_text(message: str) -> str:
    """``message`` shown as the text it is in the status line (a Markdown field): every character Markdown
    or HTML would act on is escaped, so a target typed as ``![i](http://...)`` is never fetched."""
    return "".join(f"\\{c}" if c in MARKDOWN_SPECIAL else c for c in message)


def one_line(error: BaseException) -> str:
    """What went wrong, in one line: the message of one of ours, else the error's kind and first line."""
    lines = str(error).strip().splitlines()
    if isinstance(error, (AppError, BudgetExceeded)):
        return lines[0] if lines else "the request failed"
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def failure(error: BaseException) -> str:
    """The status line of a request that failed (its text escaped), and one line in the server's log for an
    error that is not the user's (no traceback: it may carry the user's paths)."""
    if not isinstance(error, (AppError, BudgetExceeded)):
        print(f"gradcam serve: a request failed: {one_line(error)}", file=sys.stderr)
    return "**Could not explain:** " + as_text(one_line(error))


def uploaded_photo(path: str | None) -> Path:
    """The uploaded photo's file; :class:`AppError` when there is none or it is over ``MAX_UPLOAD_MB``."""
    if not path:
        raise AppError("Upload, paste or pick a photo first.")
    file = Path(path)
    if file.stat().st_size > MAX_UPLOAD_MB * 1024 * 1024:
        raise AppError(f"{file.name} is over {MAX_UPLOAD_MB} MB; use the command line for large files.")
    return file


def typed_prompts(target: str | None) -> tuple[str, ...]:
    """The prompts (an image-text model's) or text queries (OWL-ViT's) typed in Target, separated by ; or
    new lines."""
    return tuple(p.strip() for p in re.split(r"[;\n]", target or "") if p.strip())
