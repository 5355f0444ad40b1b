"""Atomic writes: a file appears whole or not at all (a temporary file in the same folder, then a rename),
so an interrupted run never leaves a half-written PNG, map or manifest behind."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(temporary_path)``, then move the result to ``path``.

    Example:
        >>> write_atomic(Path("out/results.json"), lambda tmp: tmp.write_text("{}"))   # doctest: +SKIP
    """
    temporary = path.with_name(f".{path.name}.tmp")
    write(temporary)
    temporary.replace(path)
