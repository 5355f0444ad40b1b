"""The web app's server state: the models it serves (each loaded once, before the server listens) and the
scratch folders of its requests (the newest few kept, all removed when the process ends).

Example:
    >>> shelf = ModelShelf(["efficientnet_lite0"]); shelf.load_all()          # doctest: +SKIP
"""

from __future__ import annotations

import atexit
import shutil
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
