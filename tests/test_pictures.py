"""The pictures users look at (issue 12): overlays at the photo's own resolution, the crop's margins, the frame."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from gradcam.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def jpeg(folder: Path, name: str, size: tuple[int, int], orientation: int = 1) -> Path:
    path = folder / name
    photo = Image.open(EXAMPLES / "chelsea.jpg").convert("RGB").resize(size)
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    photo.save(path, quality=90, exif=exif.tobytes())
    return path


def explain(*argv: str) -> int:
    return main(["explain", *argv, "--workers", "0", "--quiet"])


@pytest.mark.parametrize("size", [(640, 512), (512, 600), (4032, 3024)])
def test_overlays_are_at_the_photo_own_resolution(tmp_path, size):
    """JPEGs at least twice the model's resize used to be drawn on the decoder's reduced image (320 x 256)."""
    photo = jpeg(tmp_path, "photo.jpg", size)
    out = tmp_path / "out"
    assert explain(str(photo), "--out", str(out)) == 0
    entry = json.loads((out / "results.json").read_text())["images"][0]
    assert entry["size"] == list(size) and entry["overlay_size"] == list(size)
    assert Image.open(entry["targets"][0]["files"]["overlay"]).size == size


def test_an_exif_rotated_photo_is_upright_at_its_own_size(tmp_path):
    photo = jpeg(tmp_path, "turned.jpg", (800, 600), orientation=6)  # stored landscape, shown portrait
    out = tmp_path / "out"
    assert explain(str(photo), "--out", str(out)) == 0
    entry = json.loads((out / "results.json").read_text())["images"][0]
    assert entry["size"] == [600, 800]
    assert Image.open(entry["targets"][0]["files"]["overlay"]).size == (600, 800)


def test_max_side_makes_smaller_overlays_and_keeps_the_real_size(tmp_path, capsys):
    photo = jpeg(tmp_path, "big.jpg", (4032, 3024))
    out = tmp_path / "out"
    assert explain(str(photo), "--out", str(out), "--max-side", "500") == 0
    entry = json.loads((out / "results.json").read_text())["images"][0]
    assert entry["size"] == [4032, 3024] and entry["overlay_size"] == [500, 375]
    assert Image.open(entry["targets"][0]["files"]["overlay"]).size == (500, 375)
    assert explain(str(photo), "--out", str(tmp_path / "o2"), "--max-side", "3") == 2
    assert "--max-side 3: give at least 16 pixels" in capsys.readouterr().err


def test_the_web_app_draws_on_the_photo_at_its_own_size(tmp_path):
    pytest.importorskip("gradio")
    from gradcam.web import explain_photo

    photo = jpeg(tmp_path, "photo.jpg", (640, 512))
    result = explain_photo(str(photo), "efficientnet_lite0", ["gradcam"], None, "", 0.5, "jet", out_dir=tmp_path)
    assert result.overlays[0][0].size == (640, 512)
