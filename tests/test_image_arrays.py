"""Image arrays (#25): 16-bit and float TIFFs, .npy spectrograms and multi-channel images, read at full
precision and explained as images, through the photo engine (batches, writer, pictures, manifest)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import gradcam
from gradcam.apps.cli import main
from gradcam.io.image_arrays import read_image_array
from gradcam.io.images import preprocess_tensor
from gradcam.io.models import Preprocessing
from gradcam.pipeline.decode import decode
from manifest_check import validate

SPEC = Preprocessing(resize=64, crop=(64, 64))


def _tiff16(path: Path, values: np.ndarray) -> Path:
    Image.fromarray(values.astype(np.uint16), mode="I;16").save(path)
    return path


def test_a_16_bit_tiff_keeps_every_level(tmp_path):
    """A photo decoder keeps 256 levels of a 16-bit image; an image array keeps all of them."""
    levels = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)  # 4,096 distinct levels
    path = _tiff16(tmp_path / "a.tif", levels)
    item = read_image_array(path, max_megapixels=1)
    assert item.shape == (64, 64) and item.values.shape == (1, 64, 64)
    assert torch.equal(item.values[0], torch.from_numpy(levels.astype(np.float32) / 65535))
    assert item.values.unique().numel() == 4096
    as_photo = gradcam.io.images.read_image(path)  # the 8-bit photo path, for contrast
    assert len(np.unique(np.asarray(as_photo)[..., 0])) <= 256
    same = {"resize": 64, "crop": (64, 64)}
    array_input = decode(path, Preprocessing(**same), 1.0, kind="image").input
    assert array_input is not None and array_input[0].unique().numel() > 1000


def test_preprocessing_matches_the_photo_path_on_8_bit_values():
    """The same resize, crop and normalisation as a photo (within the two resamplers' difference)."""
    rng = np.random.default_rng(0)
    pixels = (rng.random((3, 120, 90)) * 255).round().astype(np.uint8)
    from_photo, geometry = gradcam.io.images.preprocess(Image.fromarray(pixels.transpose(1, 2, 0)), SPEC)
    from_array, same = preprocess_tensor(torch.from_numpy(pixels.astype(np.float32) / 255), SPEC)
    assert geometry == same and from_array.shape == from_photo.shape == (3, 64, 64)
    assert (from_array - from_photo).abs().mean() < 0.05


def test_one_channel_is_repeated_for_a_three_channel_model():
    values = torch.rand(1, 40, 50)
    pixels, _ = preprocess_tensor(values, SPEC)
    assert pixels.shape == (3, 64, 64) and torch.allclose(pixels[0] * 0.229 + 0.485, pixels[1] * 0.224 + 0.456)


def test_a_spectrogram_npy_is_a_signal_unless_kind_image(tmp_path, capsys):
    """The issue's case: a 2-D .npy was always read as a signal."""
    spectrogram = np.random.default_rng(1).random((80, 120)).astype(np.float32)
    np.save(tmp_path / "spec.npy", spectrogram)
    out = tmp_path / "out"
    code = main(["explain", str(tmp_path / "spec.npy"), "--kind", "image", "--out", str(out), "--quiet",
                 "--save", "overlay,map", "--target", "espresso,tabby", "--no-legend"])  # fmt: skip
    assert code == 0
    manifest = validate(out / "results.json")
    assert manifest["kind"] == "image"
    (record,) = manifest["images"]
    assert record["kind"] == "image" and record["shape"] == [80, 120] and record["size"] == [120, 80]
    assert [t["label"] for t in record["targets"]] == ["espresso", "tabby"]
    overlay = Image.open(record["targets"][0]["files"]["overlay"])
    assert overlay.size == (360, 240)  # drawn on the array itself, each value a 3 x 3 block (a small picture)
    assert np.load(record["targets"][0]["files"]["map"]).shape == (224, 224)
    page = (out / "index.html").read_text()
    assert "spec" in page


def test_the_map_is_explain_on_the_preprocessed_array(tmp_path):
    rng = np.random.default_rng(2)
    image = rng.random((3, 100, 140)).astype(np.float32)
    np.save(tmp_path / "cells.npy", image)
    out = tmp_path / "out"
    assert main(["explain", str(tmp_path / "cells.npy"), "--kind", "image", "--out", str(out), "--quiet",
                 "--save", "map", "--target", "1"]) == 0  # fmt: skip
    record = json.loads((out / "results.json").read_text())["images"][0]
    bundle = gradcam.load_model("efficientnet_lite0")
    pixels, _ = preprocess_tensor(torch.from_numpy(image), bundle.preprocessing)
    expected = gradcam.explain(bundle.model, pixels[None], "gradcam", record["layer"], 1).maps[0, 0]
    saved = np.load(record["targets"][0]["files"]["map"])
    np.testing.assert_allclose(saved, expected.numpy(), atol=1e-4)


@pytest.mark.parametrize(
    "shape, dtype, said",
    [
        ((3, 20000, 20000), np.uint8, "megapixels allowed"),
        ((2, 3, 4, 5), np.float32, "4 dimensions"),
        ((500, 30, 40), np.float32, "channels first"),
    ],
)
def test_bad_arrays_are_one_line_and_the_rest_goes_on(tmp_path, capsys, shape, dtype, said):
    """The size comes from the header: a 1.2-gigavalue array is refused before a byte of it is read."""
    bad = tmp_path / "a_bad.npy"
    with open(bad, "wb") as handle:  # a header claiming the shape, and no data behind it
        np.lib.format.write_array_header_1_0(handle, {"descr": np.dtype(dtype).str, "fortran_order": False,
                                                      "shape": shape})  # fmt: skip
    np.save(tmp_path / "b_good.npy", np.random.default_rng(3).random((40, 60)).astype(np.float32))
    out = tmp_path / "out"
    assert main(["explain", str(tmp_path), "--kind", "image", "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert said in err and "a_bad.npy" in err and len([line for line in err.splitlines() if "a_bad" in line]) == 1
    records = {Path(r["path"]).name: r for r in json.loads((out / "results.json").read_text())["images"]}
    assert records["b_good.npy"]["status"] == "ok" and records["a_bad.npy"]["status"] == "error"


def test_a_float_tiff_is_guessed_as_an_image_array(tmp_path):
    from gradcam.pipeline.kinds import kind_of

    Image.fromarray(np.random.default_rng(4).random((30, 40)).astype(np.float32), mode="F").save(tmp_path / "f.tif")
    Image.new("RGB", (30, 40)).save(tmp_path / "rgb.tif")
    assert kind_of(tmp_path / "f.tif").name == "image" and kind_of(tmp_path / "rgb.tif").name == "photo"
