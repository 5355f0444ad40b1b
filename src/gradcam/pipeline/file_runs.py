"""The local run of the kinds explained one file at a time (videos, volumes, signals): each file through its
kind's ``explain_file``, a record per file, ``results.json`` rewritten after every file (what ``--resume``
continues from after an interruption) and ``index.html`` at the end.

Example:
    >>> found = find_inputs(["scans/"])                                                   # doctest: +SKIP
    >>> result = FileRunner(bundle, found.found, found.kind, RunOptions(out=Path("out"))).run()
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..io.arrays import ArrayReadError
from ..io.files import remove_stale_temporaries
from ..io.images import FoundImages
from ..io.models import LoadedModel
from ..io.video import VideoReadError
from ..render.report import write_explain_page
from .kinds import InputKind, manifest_outputs
from .manifest import MANIFEST, RunResult, check_same_run, now, read_manifest, run_manifest, write_json_atomic
from .naming import array_keys
from .options import RunOptions, UsageError
from .records import PhotoRecord

FILE_ERRORS = (ArrayReadError, VideoReadError, ValueError, TypeError, FileExistsError, OSError)

Progress = Callable[[Path], contextlib.AbstractContextManager[Callable[[int], object] | None]]


@contextlib.contextmanager
def _no_progress(_: Path) -> Iterator[None]:
    yield None


def file_error(path: Path | str, error: BaseException) -> str:
    """One line naming the file and what went wrong with it."""
    lines = str(error).splitlines()
    message = lines[0] if lines else type(error).__name__
    return message if str(path) in message else f"{path}: {message}"


class FileRunner:
    """One ``gradcam explain`` over files of a kind run one at a time (see the module's docstring)."""

    def __init__(self, bundle: LoadedModel, found: FoundImages, kind: InputKind, options: RunOptions) -> None:
        self.bundle, self.found, self.kind, self.options = bundle, found, kind, options
        self.manifest_path = options.out / MANIFEST
        self.started = now()

    def prepare_output(self) -> dict[str, PhotoRecord]:
        """Check ``--out`` (an earlier run is refused unless ``--overwrite`` or, for arrays, ``--resume``) and
        return the records of the files an earlier run explained the same way (by path)."""
        out, options = self.options.out, self.options
        if self.manifest_path.exists() and not (options.overwrite or options.resume):
            raise UsageError(
                f"--out {out}: already holds {MANIFEST} from an earlier run; pass --overwrite or another --out"
            )
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UsageError(f"--out {out}: cannot write there ({error.strerror})") from None
        if options.resume:
            remove_stale_temporaries(out)  # a killed run's; its unlisted outputs are replaced (overwrite below)
        if not (options.resume and self.manifest_path.exists()):
            return {}
        earlier = read_manifest(self.manifest_path)
        check_same_run(earlier, self.manifest([], finished=None), options.layer, out)
        kinds = ("volume", "signal") if self.kind.name in ("volume", "signal") else (self.kind.name,)
        return {record.path: record for record in earlier.images if record.ok and (record.kind or "video") in kinds}

    def manifest(self, records: list[PhotoRecord], finished: str | None) -> Any:
        layer = next((r.layer for r in records if r.ok), self.options.layer)
        return run_manifest("local", self.bundle.name, self.bundle.source, self.options, records,
                            kind=self.kind.name, layer=layer, started=self.started, finished=finished,
                            preprocessing=self.kind.preprocessing_of(self.bundle),
                            **manifest_outputs(self.kind, self.options))  # fmt: skip

    def run(self, progress: Progress = _no_progress) -> RunResult:
        """Explain every file; a file that fails is recorded with its error and the run goes on."""
        previous = self.prepare_output()
        options = self.options
        if options.resume:  # a resumed run may find the files of the one it was writing: replace those
            options = replace(options, overwrite=True)
        explain_file = self.kind.explain_file()
        paths = self.found.paths
        keys = array_keys(paths, self.found.roots)
        records: list[PhotoRecord] = []
        self._write(records, finished=None)  # from the start: a run killed at any point leaves its manifest
        for path, key in zip(paths, keys, strict=True):
            earlier = previous.get(str(path))
            if earlier is not None and all(Path(f).exists() for t in earlier.targets for f in t.files.values()):
                records.append(earlier)  # explained by the run this one resumes
                continue
            try:
                with progress(path) as update:
                    records.append(explain_file(self.bundle, path, key, options, update))
            except UsageError:
                raise
            except FILE_ERRORS as error:
                records.append(PhotoRecord.failed(str(path), file_error(path, error)))
            self._write(records, finished=None)  # after every file: an interrupted run leaves what it did
        self._write(records, finished=now(), page=True)
        return RunResult(self.manifest_path, records)

    def _write(self, records: list[PhotoRecord], finished: str | None, page: bool = False) -> None:
        data = self.manifest(records, finished).to_json()
        write_json_atomic(data, self.manifest_path)
        if page:
            write_explain_page(data, self.manifest_path.parent)
