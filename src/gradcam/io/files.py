"""Atomic writes: a file appears whole or not at all (a temporary file in the same folder, then a rename),
so an interrupted run never leaves a half-written PNG, map or manifest behind."""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path

TEMPORARY = re.compile(r"^\..+\.\d+-\d+\.tmp(\.[A-Za-z0-9.]+)?$")  # what write_atomic names them


def remove_stale_temporaries(folder: Path) -> int:
    """Remove the temporary files that :func:`write_atomic` left in ``folder`` (recursively) when its process
    was killed (SIGKILL, a power cut: no ``finally`` ran); returns how many. Only for a folder no other
    process is writing to: ``--resume`` calls it before it starts."""
    removed = 0
    for candidate in folder.rglob(".*.tmp*"):
        if candidate.is_file() and TEMPORARY.match(candidate.name):
            with contextlib.suppress(OSError):
                candidate.unlink()
                removed += 1
    return removed


def write_atomic(path: Path, write: Callable[[Path], object], suffix: str = "") -> None:
    """Call ``write(temporary_path)``, then move the result to ``path``. ``suffix`` ends the temporary
    name, for writers that choose the format by it (``.nii.gz``).

    The temporary name is unique to the process and thread, so two writers never share one; when
    ``write`` fails (a full disk, Ctrl-C), the temporary file is removed and the error goes on.

    Example:
        >>> write_atomic(Path("out/results.json"), lambda tmp: tmp.write_text("{}"))   # doctest: +SKIP
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp{suffix}")
    try:
        write(temporary)
        temporary.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise
