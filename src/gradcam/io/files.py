"""Atomic writes: a file appears whole or not at all (a temporary file in the same folder, then a rename),
so an interrupted run never leaves a half-written PNG, map or manifest behind."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path


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
