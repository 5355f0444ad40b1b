"""The photos of an audit with what is known about them: the true class (``--truth``) and object boxes
(``--boxes``).

Truth: a CSV with the columns ``image,class`` (paths relative to the CSV's folder or to an input folder,
or a bare file name; the class a name of the model's classes or an index), or a folder laid out as
torchvision's ``ImageFolder`` (``ROOT/CLASS/photo.jpg``): each photo's class is its first folder under
``ROOT``. Folder names are matched to the model's class names; for a model without names they are
numbered in sorted order, as ``ImageFolder`` numbers them.

Boxes (the object, any class): JSON ``{"path or file name": [[x1, y1, x2, y2], ...]}`` in the photo's own
pixels, or the COCO JSON / CSV that ``gradcam evaluate --boxes`` reads.

Example:
    >>> truth = read_truth(Path("truth.csv"), labels, roots=[Path("photos")])      # doctest: +SKIP
    >>> truth.lookup(Path("photos/cat/1.jpg"))
    281
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..targets import class_index


class AuditInputError(ValueError):
    """A bad ``--truth``/``--boxes`` file: one line naming it."""


@dataclass
class PathTable:
    """Values looked up by a photo's absolute path, else by its file name (when that name is unique)."""

    by_path: dict[str, object] = field(default_factory=dict)
    by_name: dict[str, object] = field(default_factory=dict)
    ambiguous: set[str] = field(default_factory=set)

    def add(self, path: Path | None, name: str, value: object) -> None:
        if path is not None:
            self.by_path[os.path.abspath(path)] = value
        if name in self.by_name and self.by_name[name] != value:
            self.ambiguous.add(name)
        self.by_name[name] = value

    def lookup(self, path: Path) -> object | None:
        found = self.by_path.get(os.path.abspath(path))
        if found is not None:
            return found
        name = path.name
        return None if name in self.ambiguous else self.by_name.get(name)

    def __len__(self) -> int:
        return max(len(self.by_path), len(self.by_name))


def _class_of(text: str, labels: Sequence[str] | None, num_classes: int, source: str) -> int:
    text = text.strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        if not 0 <= index < num_classes:
            raise AuditInputError(f"{source}: class {index} is out of range for a model with {num_classes} classes")
        return index
    if labels is None:
        raise AuditInputError(f"{source}: class name {text!r} but the model's class names are unknown; give --labels")
    try:
        return class_index(text, labels)
    except ValueError as error:
        raise AuditInputError(f"{source}: {error}") from None


def read_truth(location: Path, labels: Sequence[str] | None, num_classes: int, roots: Sequence[Path] = ()) -> PathTable:
    """The true class of each photo from a CSV or an ``ImageFolder`` root (see the module's docstring)."""
    table = PathTable()
    if location.is_dir():
        folders = sorted(p.name for p in location.iterdir() if p.is_dir())
        if not folders:
            raise AuditInputError(f"--truth {location}: no class folders in it (expected ROOT/CLASS/photo.jpg)")
        numbered = labels is None
        if numbered and len(folders) > num_classes:
            raise AuditInputError(
                f"--truth {location}: {len(folders)} class folders for a model with {num_classes} classes"
            )
        for number, folder in enumerate(folders):
            index = number if numbered else _class_of(folder, labels, num_classes, f"--truth {location}/{folder}")
            for photo in (location / folder).rglob("*"):
                if photo.is_file():
                    table.by_path[os.path.abspath(photo)] = index
        return table
    try:
        with open(location, newline="") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"image", "class"} <= set(reader.fieldnames):
                raise AuditInputError(f"--truth {location}: expected a CSV with the columns image,class")
            for line, row in enumerate(reader, start=2):
                image = (row["image"] or "").strip()
                index = _class_of(row["class"] or "", labels, num_classes, f"--truth {location}, line {line}")
                candidates = [location.parent / image, *(Path(root) / image for root in roots)]
                path = next((c for c in candidates if c.is_file()), None)
                table.add(path, Path(image).name, index)
    except OSError as error:
        raise AuditInputError(f"--truth {location}: cannot read it ({error.strerror or error})") from None
    except (csv.Error, UnicodeDecodeError) as error:
        raise AuditInputError(f"--truth {location}: not a CSV ({error})") from None
    return table


def read_object_boxes(location: Path, roots: Sequence[Path] = ()) -> PathTable:
    """Boxes (lists of [x1, y1, x2, y2]) per photo, of any class (see the module's docstring)."""
    try:
        data = json.loads(location.read_text()) if location.suffix.lower() == ".json" else None
    except OSError as error:
        raise AuditInputError(f"--boxes {location}: cannot read it ({error.strerror or error})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise AuditInputError(f"--boxes {location}: not JSON ({error})") from None
    except RecursionError:
        raise AuditInputError(f"--boxes {location}: not JSON boxes (nested too deeply)") from None
    table = PathTable()
    if isinstance(data, dict) and "annotations" not in data:
        for image, boxes in data.items():
            checked = _checked_boxes(boxes, f"--boxes {location}: {image}")
            candidates = [location.parent / image, *(Path(root) / image for root in roots)]
            table.add(next((c for c in candidates if c.is_file()), None), Path(image).name, checked)
        return table
    from ..io.boxes import read_boxes

    try:
        by_name = read_boxes(location, None)
    except ValueError as error:
        raise AuditInputError(str(error)) from None
    for name, items in by_name.items():
        table.add(None, name, _checked_boxes([box for _, box in items], f"--boxes {location}: {name}"))
    return table


def _checked_boxes(boxes: object, source: str) -> list[list[float]]:
    if not isinstance(boxes, list) or not all(
        isinstance(b, (list, tuple))
        and len(b) == 4
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in b)
        for b in boxes
    ):
        raise AuditInputError(f"{source}: expected a list of [x1, y1, x2, y2] boxes of finite numbers")
    return [[float(v) for v in box] for box in boxes]  # type: ignore[union-attr]
