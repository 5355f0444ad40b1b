"""Make docs/concepts.png: `gradcam concepts` on the three example photos (embedded model, k = 4), side by side.

python scripts/concepts_picture.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from PIL import Image

import gradcam
from gradcam.apps.cli import main

EXAMPLES = Path(gradcam.__file__).parent / "examples"
NAMES = ["chelsea", "coffee", "astronaut"]


def build(target: Path = Path(__file__).parents[1] / "docs" / "concepts.png", height: int = 420) -> Path:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "out"
        photos = [str(EXAMPLES / f"{n}.jpg") for n in NAMES]
        code = main(["concepts", *photos, "--k", "4", "--out", str(out), "--quiet"])
        if code != 0:
            raise SystemExit(f"gradcam concepts failed ({code})")
        pictures = [Image.open(out / f"{n}.concepts.png").convert("RGB") for n in NAMES]
        pictures = [p.resize((round(p.width * height / p.height), height)) for p in pictures]
        sheet = Image.new("RGB", (sum(p.width for p in pictures) + 8 * (len(pictures) - 1), height), "white")
        left = 0
        for picture in pictures:
            sheet.paste(picture, (left, 0))
            left += picture.width + 8
        sheet.save(target)
    return target


if __name__ == "__main__":
    print(build())
