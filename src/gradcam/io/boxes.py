"""Object boxes from a file: COCO-style JSON or CSV, for the pointing game and the audit.

Example:
    >>> read_boxes(Path("boxes.csv"), labels)["chelsea.jpg"]                   # doctest: +SKIP
    [(282, [12.0, 30.0, 410.0, 290.0])]
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

from ..targets import class_index

ANY_CLASS = -1


def read_boxes(path: Path, labels: Sequence[str] | None) -> dict[str, list[tuple[int, list[float]]]]:
    """Boxes per image file name: ``[(class index or -1 for any class, [x1, y1, x2, y2]), ...]``.

    COCO-style JSON (``images``, ``annotations`` with ``bbox`` = [x, y, w, h] and ``category_id``), or a
    CSV with the columns ``image, class, x1, y1, x2, y2`` (class: an index, a class name, or ``*``).
    """
    boxes: dict[str, list[tuple[int, list[float]]]] = {}
    try:
        if path.suffix.lower() == ".csv":
            with open(path, newline="") as handle:
                for row in csv.DictReader(handle):
                    label = row["class"].strip()
                    if label in ("*", "", "-1"):
                        index = ANY_CLASS
                    elif label.lstrip("-").isdigit():
                        index = int(label)
                    else:
                        index = class_index(label, labels or [])
                    box = finite_box([float(row[k]) for k in ("x1", "y1", "x2", "y2")])
                    boxes.setdefault(Path(row["image"]).name, []).append((index, box))
            return boxes
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"a JSON {type(data).__name__}; expected COCO's {{images, annotations}} object")
        names = {image["id"]: Path(image["file_name"]).name for image in data["images"]}
        for annotation in data["annotations"]:
            x, y, w, h = finite_box([float(v) for v in annotation["bbox"]])
            boxes.setdefault(names[annotation["image_id"]], []).append(
                (int(annotation.get("category_id", ANY_CLASS)), [x, y, x + w, y + h])
            )
        return boxes
    except RecursionError:
        raise ValueError(f"--boxes {path}: cannot read boxes (nested too deeply)") from None
    except (OSError, KeyError, ValueError, TypeError, AttributeError, json.JSONDecodeError) as error:
        reason = str(error).splitlines()[0] if str(error) else ""
        raise ValueError(f"--boxes {path}: cannot read boxes ({type(error).__name__}: {reason[:120]})") from None


def finite_box(box: list[float]) -> list[float]:
    """``box`` when it is four finite numbers; a ValueError otherwise (NaN or Infinity in a box file)."""
    if len(box) != 4 or not all(math.isfinite(v) for v in box):
        raise ValueError(f"box {box}: expected four finite numbers x1, y1, x2, y2")
    return box
