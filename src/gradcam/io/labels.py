"""Class names from a file (``--labels``): one per line, a JSON list, or a JSON ``{"index": "name"}`` object,
bounded before it is read (a 23-byte JSON object can name a trillion classes).

Example:
    >>> read_labels("names.txt")          # doctest: +SKIP
    ['cat', 'dog', 'horse']
"""

from __future__ import annotations

from pathlib import Path

from .weights import MAX_CLASSES, ModelLoadError

MAX_LABELS_BYTES = 64_000_000


def read_labels(path: str | Path) -> list[str]:
    """Class names from a file: one name per line (line i names class i), a JSON list, or a JSON object
    ``{"index": "name"}`` (classes it leaves out are named by their index).

    Example:
        >>> read_labels("names.txt")          # doctest: +SKIP
        ['cat', 'dog', 'horse']
    """
    import json

    path = Path(path)
    try:
        if path.stat().st_size > MAX_LABELS_BYTES:
            raise ModelLoadError(f"--labels {path}: over {MAX_LABELS_BYTES // 1_000_000} MB; not a class-names file")
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise ModelLoadError(f"--labels {path}: cannot read it ({type(error).__name__})") from None
    if path.suffix.lower() == ".json" or text.lstrip().startswith(("{", "[")):
        try:
            data = json.loads(text)
            if isinstance(data, list):
                names = [str(name) for name in data]
            else:
                indexed = {int(index): str(name) for index, name in data.items()}
                if min(indexed, default=0) < 0:
                    raise ValueError("a negative class index")
                if max(indexed, default=0) >= MAX_CLASSES:  # {"1000000000000": "x"}: 23 bytes, a trillion names
                    raise ValueError(f"class index {max(indexed)}; a model has at most {MAX_CLASSES:,} classes")
                names = [indexed.get(i, str(i)) for i in range(max(indexed, default=-1) + 1)]
        except (ValueError, AttributeError, TypeError, RecursionError) as error:
            reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)[:80]
            raise ModelLoadError(f"--labels {path}: not a JSON list or {{index: name}} object ({reason})") from None
    else:
        names = [line.strip() for line in text.splitlines()]
        while names and not names[-1]:
            names.pop()
    if len(names) > MAX_CLASSES:
        raise ModelLoadError(f"--labels {path}: {len(names):,} names; a model has at most {MAX_CLASSES:,} classes")
    if not names:
        raise ModelLoadError(f"--labels {path}: no class names in it")
    return names
