"""The run manifest, in one place: its one constructor (:func:`run_manifest`, for every kind and engine),
reading and writing ``results.json``, and the "same run?" check that ``--resume`` makes.

Example:
    >>> manifest = run_manifest("local", "efficientnet_lite0", None, RunOptions(out=Path("out")), records,
    ...                         kind="photo", layer="bn2", started=now(), finished=now())  # doctest: +SKIP
    >>> write_json_atomic(manifest.to_json(), Path("out/results.json"))                  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io.files import write_atomic
from ..io.models import Preprocessing
from .options import RunOptions, UsageError, given_options
from .records import PhotoRecord, RunManifest

MANIFEST = "results.json"
# options the manifest keeps as fields of their own; every other option given goes into its ``options``
_OWN_FIELDS = frozenset({"method", "layer", "target", "prompts", "frame", "colormap", "format", "save",
                         "counterfactual", "eigen_smooth", "aug_smooth", "kind", "engine"})  # fmt: skip


def now() -> str:
    """A manifest's time stamp: local time with its UTC offset."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def run_manifest(
    engine: str,
    model: str,
    model_source: str | None,
    options: RunOptions,
    images: Sequence[PhotoRecord],
    *,
    kind: str,
    layer: str | None,
    started: str | None,
    finished: str | None,
    format: str | None = None,
    save: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    preprocessing: Preprocessing | None = None,
) -> RunManifest:
    """The manifest of a run of ``options`` (any engine, any kind): the options that decide what a map
    means as fields, every other option given in ``options`` (by name), and one record per input.
    ``format`` and ``save`` default to the photo runs' (``options.format``, ``options.save``);
    ``preprocessing`` is what the inputs went through (photos, videos: the model's own or ``--resize`` ...)."""
    recorded = {name: _jsonable(_value(options, name)) for name in given_options(options) if name not in _OWN_FIELDS}
    return RunManifest(
        engine=engine,  # type: ignore[arg-type]
        model=model,
        model_source=model_source,
        methods=list(methods or [options.method]),
        layer=layer,
        target=options.target,
        prompts=list(options.prompts) or None,
        frame=options.frame,
        colormap=options.colormap,
        format=format or options.format,
        save=sorted(save if save is not None else options.save),
        counterfactual=options.counterfactual,
        eigen_smooth=options.eigen_smooth,
        aug_smooth=options.aug_smooth,
        started=started,
        finished=finished,
        kind=kind,
        options=recorded,
        preprocessing=None if preprocessing is None else preprocessing.to_json(),
        images=list(images),
    )


def _value(options: RunOptions, name: str) -> Any:
    owner, _, leaf = name.rpartition(".")
    return getattr(getattr(options, owner), leaf) if owner else getattr(options, name)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(item) for item in value]
    return value


def write_json_atomic(data: Any, path: Path) -> None:
    """``data`` as strict JSON (NaN and infinities as null: ``NaN`` is not JSON), written atomically."""
    try:
        text = json.dumps(data, indent=1, allow_nan=False)
    except ValueError:  # a NaN somewhere: rare, so the walk that replaces it is paid only then
        text = json.dumps(strict_json(data), indent=1, allow_nan=False)
    write_atomic(path, lambda temporary: temporary.write_text(text))


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(item) for item in value]
    return value


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


@dataclass
class RunResult:
    """What a run did (any engine run here: photos, image arrays, or files one at a time): its manifest,
    one record per input, and whether it was interrupted."""

    manifest_path: Path
    entries: list[PhotoRecord] = field(default_factory=list)
    interrupted: bool = False

    @property
    def failed(self) -> int:
        return sum(1 for entry in self.entries if not entry.ok)


class OutputError(RuntimeError):
    """The run's own files (the manifest) cannot be written: a full disk, a removed folder. Exit code 1."""


# The options that decide what a map means: a --resume must use the same ones as the run it continues.
RESUME_KEYS = ("model", "methods", "target", "prompts", "frame", "counterfactual", "eigen_smooth", "aug_smooth")


def check_same_run(earlier: RunManifest, current: RunManifest, layer: str | None, out: Path) -> None:
    """A UsageError naming the first option (``RESUME_KEYS``, or the requested ``layer``) in which the run in
    ``out`` that --resume continues differs from this one: its maps would mean something else."""
    if earlier.kind not in (None, current.kind) and current.kind is not None:
        raise UsageError(
            f"--resume: the earlier run in {out} explained {earlier.kind} files, this one {current.kind} files; "
            "run with the same --kind, or choose another --out"
        )
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
    if None not in (earlier.preprocessing, current.preprocessing) and earlier.preprocessing != current.preprocessing:
        raise UsageError(
            f"--resume: the earlier run in {out} preprocessed its inputs otherwise ({earlier.preprocessing}); run "
            "with the same --resize/--crop/--mean/--std/--interpolation, or choose another --out"
        )
    if layer is not None and earlier.layer not in (None, layer):
        raise UsageError(
            f"--resume: the earlier run in {out} explained layer {earlier.layer!r}, this one asks for "
            f"{layer!r}; run with the same --layer, or choose another --out"
        )


def _shown(value: Any) -> str:
    return repr(value[0]) if isinstance(value, list) and len(value) == 1 else repr(value)
