"""Every output name in one place: the per-input key (its path below the inputs' common folder), and the
names of a target's files (``KEY.METHOD.INDEX-LABEL.*``), for every input kind and engine.

Example:
    >>> target_stem("cats/chelsea", "gradcam", 282, "tiger cat")
    'cats/chelsea.gradcam.282-tiger_cat'
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..io.images import FoundImages


def slug(text: str) -> str:
    """``text`` as a file-name part: letters and digits, the rest one ``_``, lower case, at most 40 long."""
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()[:40] or "target"


def label_of(labels: Any, index: int) -> str:
    """Class ``index``'s name in ``labels``, else the index itself."""
    return labels[index] if labels is not None and 0 <= index < len(labels) else str(index)


def target_stem(
    key: str, method: str, class_id: int | None, label: str | None, position: int = 0, counterfactual: bool = False
) -> str:
    """The name every file of one target starts with: ``KEY.METHOD.INDEX-LABEL`` (``KEY.METHOD.targetK``
    for a callable target without a class); a counterfactual map, the evidence against the class, is
    ``KEY.METHOD.against-INDEX-LABEL``, so that a file on its own is never read as evidence for it."""
    suffix = f"{class_id}-{slug(label or str(class_id))}" if class_id is not None else f"target{position}"
    return f"{key}.{method}.{'against-' if counterfactual else ''}{suffix}"


def method_prefix(key: str, method: str) -> str:
    """What every target file of ``key`` explained by ``method`` starts with (for "exists already" checks)."""
    return f"{key}.{method}."


def output_keys(found: FoundImages) -> list[str]:
    """A unique output name per photo: its path relative to the folder that holds all the inputs' roots,
    without the suffix. One folder keeps its own layout (``photos/a/x.jpg`` -> ``a/x``); ``a/x.jpg`` and
    ``b/x.jpg`` given together become ``a/x`` and ``b/x``; where two photos differ only in their suffix
    (``x.jpg``, ``x.png``) the suffix stays in the name (``x.jpg``, ``x.png``)."""
    absolute = [Path(os.path.abspath(path)) for path in found.paths]
    roots = [Path(os.path.abspath(root)) for root in found.roots]
    if not absolute:
        return []
    common = Path(os.path.commonpath(roots))
    relative = [path.relative_to(common) for path in absolute]
    stems = [str(path.with_suffix("")) for path in relative]
    counts = Counter(stems)
    keys = [stem if counts[stem] == 1 else str(path) for stem, path in zip(stems, relative, strict=True)]
    taken: set[str] = set()
    unique = []
    for key in keys:  # a photo named like another's key (``x.jpg.png`` beside ``x.jpg``, ``x.png``)
        candidate, number = key, 2
        while candidate in taken:
            candidate, number = f"{key}~{number}", number + 1
        taken.add(candidate)
        unique.append(candidate)
    return unique


def array_keys(paths: Sequence[Path], roots: Sequence[Path]) -> list[str]:
    """A unique output name per file, as photos get theirs (``a/scan``, ``b/scan``), ``.nii.gz`` dropped whole."""
    keys = output_keys(FoundImages(list(paths), list(roots), [], 0))
    return [key.removesuffix(".nii") if str(path).lower().endswith(".nii.gz") else key
            for key, path in zip(keys, paths, strict=True)]  # fmt: skip
