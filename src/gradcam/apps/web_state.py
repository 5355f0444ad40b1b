"""The web app's server state: the models it serves (each loaded once, before the server listens), the
scratch folders of its requests (the newest few kept, all removed when the process ends), and how a
failed request is said on the page (one line, the user's text shown as text).

Example:
    >>> shelf = ModelShelf(["efficientnet_lite0"]); shelf.load_all()          # doctest: +SKIP
"""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from ..io.models import DEFAULT_MODEL, LoadedModel, load_bundle

SCRATCH_FOLDERS = 64  # requests whose files stay downloadable


class AppError(ValueError):
    """A message for the page."""


class ModelShelf:
    """The models this server offers, each loaded once. Only names given at start are loadable, and
    :func:`build_app` loads them all before the server listens."""

    def __init__(
        self,
        names: Sequence[str] = (DEFAULT_MODEL,),
        weights: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
    ) -> None:
        """``weights`` and ``labels`` map a served name to a weights file (a fine-tuned checkpoint, read
        without unpickling: there is no ``--trust-weights`` here) and to a class-names file."""
        self.names = list(dict.fromkeys(names)) or [DEFAULT_MODEL]
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
                # weights_only: nothing is unpickled
                self._loaded[name] = load_bundle(name, self.weights.get(name), labels=self.labels.get(name))
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
    if isinstance(error, AppError):
        return lines[0] if lines else "the request failed"
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def failure(error: BaseException) -> str:
    """The status line of a request that failed (its text escaped), and one line in the server's log for an
    error that is not the user's (no traceback: it may carry the user's paths)."""
    if not isinstance(error, AppError):
        print(f"gradcam serve: a request failed: {one_line(error)}", file=sys.stderr)
    return "**Could not explain:** " + as_text(one_line(error))
