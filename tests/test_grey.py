"""Models whose images have one channel (MNIST's digits, X-ray models): photos went in as three channels and
the model's first convolution failed, with a traceback when the layer was chosen automatically."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import gradcam
from by_hand import leaf_gradcam
from gradcam.apps.cli import main
from gradcam.io.images import preprocess
from gradcam.io.models import load_model

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

NETS = """
import torch
from torch import nn


class Grey(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        grey = nn.Conv2d(1, 8, 3, padding=1)  # one input channel
        self.features = nn.Sequential(grey, nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

    def forward(self, x):
        return self.head(self.features(x))


class Four(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))

    def forward(self, x):
        return self.head(self.features(x))
"""


@pytest.fixture
def nets(tmp_path, monkeypatch):
    module = f"grey_nets_{abs(hash(str(tmp_path))) % 10**8}"
    (tmp_path / f"{module}.py").write_text(NETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    return module


@pytest.fixture
def digit(tmp_path) -> Path:
    path = tmp_path / "digit.png"
    Image.open(EXAMPLES / "chelsea.jpg").convert("RGB").resize((28, 28)).save(path)
    return path


def test_a_grey_model_is_given_the_photo_s_luminance(nets):
    bundle = load_model(f"py:{nets}:Grey")
    assert len(bundle.preprocessing.mean) == 1 and len(bundle.preprocessing.std) == 1
    assert "grey (one channel)" in bundle.preprocessing.describe()
    photo = Image.open(EXAMPLES / "coffee.jpg")
    x, _ = preprocess(photo, bundle.preprocessing)
    assert x.shape == (1, 224, 224)
    (mean,), (std,) = bundle.preprocessing.mean, bundle.preprocessing.std
    resized = photo.resize((384, 256), Image.Resampling.BILINEAR).convert("L")  # shorter side 256, then crop 224
    expected = (torch.from_numpy(np.asarray(resized))[16:240, 80:304].float() / 255 - mean) / std
    torch.testing.assert_close(x[0], expected)
    assert load_model("efficientnet_lite0").preprocessing.mean == (0.5, 0.5, 0.5)  # colour models as they were


def test_the_command_line_explains_a_grey_model_and_its_map_is_gradcam_by_hand(nets, digit, tmp_path, capsys):
    out = tmp_path / "out"
    code = main([str(digit), "--model", f"py:{nets}:Grey", "--resize", "28", "--crop", "28", "--mean", "0.13",
                 "--std", "0.31", "--save", "overlay,map", "--per-channel", "4", "--out", str(out), "--quiet",
                 "--workers", "0"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    manifest = json.loads((out / "results.json").read_text())
    assert manifest["preprocessing"]["mean"] == [0.13] and manifest["preprocessing"]["std"] == [0.31]
    (target,) = manifest["images"][0]["targets"]
    bundle = load_model(f"py:{nets}:Grey")
    pixels = torch.from_numpy(np.asarray(Image.open(digit).convert("L"), dtype=np.float32)) / 255
    x = ((pixels - 0.13) / 0.31)[None, None]
    expected = leaf_gradcam(bundle.model, ["features.3"], lambda: bundle.model(x)[0, target["index"]], (28, 28))
    torch.testing.assert_close(torch.from_numpy(np.load(target["files"]["map"])), expected, atol=1e-5, rtol=1e-4)
    assert Image.open(target["files"]["channels"]).width > 0


def test_a_model_of_other_channels_fails_in_one_line(nets, digit, tmp_path, capsys):
    """The automatic layer's probe ran the model outside the run's error handling: a traceback."""
    code = main([str(digit), "--model", f"py:{nets}:Four", "--out", str(tmp_path / "out"), "--quiet"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and "to have 4 channels" in error and len(error.splitlines()) == 1
    code = main([str(digit), "--model", f"py:{nets}:Grey", "--mean", "0.1,0.2,0.3", "--out", str(tmp_path / "b")])
    assert code == 2 and "--mean: 3 values for a model of one channel (grey); give 1" in capsys.readouterr().err


def test_the_python_api_and_labels_take_a_grey_model(nets, digit):
    bundle = load_model(f"py:{nets}:Grey")
    named = gradcam.io.models.with_labels(bundle, [str(i) for i in range(10)])  # its probe has one channel
    ex = gradcam.explain_image(digit, model=named.model, preprocess_with=named.preprocessing)
    assert ex.maps.shape[-2:] == (224, 224) and ex.overlay(0).size == (28, 28)
    plain = gradcam.explain_image(digit, model=bundle.model)  # a bare module: its one channel is seen
    assert plain.maps.shape[-2:] == (224, 224)


def test_gradcam_layers_and_frame_full_probe_a_grey_model_with_one_channel(nets, digit, tmp_path, capsys):
    """Their probes were black three-channel images: `gradcam layers` failed on a grey model."""
    assert main(["layers", f"py:{nets}:Grey"]) == 0
    listed = capsys.readouterr().out
    assert "features.0  (8, 224, 224)" in listed and "<- default" in listed
    code = main([str(digit), "--model", f"py:{nets}:Grey", "--frame", "full", "--out", str(tmp_path / "o"), "--quiet",
                 "--workers", "0"])  # fmt: skip
    assert code == 0, capsys.readouterr().err


def test_evaluate_skips_a_method_that_refuses_the_layer_and_measures_the_others(nets, digit, tmp_path, capsys):
    """This net keeps a 111 x 111 map at 224 px: kpcacam's kernel would be 1.1 GB a photo, and `gradcam evaluate`
    (kpcacam is in its default list) was killed for memory. kpcacam now refuses in one line; the rest is measured."""
    code = main(["evaluate", str(digit), "--model", f"py:{nets}:Grey", "--methods", "gradcam,kpcacam", "--steps", "4",
                 "--out", str(tmp_path / "eval")])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1 and "kpcacam: the layer's map has 111 x 111" in captured.err
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert {row["method"] for row in results["summary"]} == {"gradcam"}


def test_evaluate_and_concepts_take_the_model_s_preprocessing(nets, digit, tmp_path, capsys):
    """explain and audit took --resize/--crop/--mean/--std; evaluate and concepts refused them, so a 28 px model
    was measured at 224 px. At 28 px this net's map is 27 x 27, within kpcacam's bound: every method measured."""
    sized = ["--resize", "28", "--crop", "28", "--mean", "0.13", "--std", "0.31"]
    code = main(["evaluate", str(digit), "--model", f"py:{nets}:Grey", "--methods", "gradcam,kpcacam", "--steps", "4",
                 "--out", str(tmp_path / "eval"), *sized])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert {row["method"] for row in results["summary"]} == {"gradcam", "kpcacam"}
    code = main(["concepts", str(digit), "--model", f"py:{nets}:Grey", "--k", "2", "--out", str(tmp_path / "c"),
                 "--quiet", *sized])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert main(["evaluate", str(digit), "--crop", "7", "--out", str(tmp_path / "bad")]) == 2
    assert "--crop '7': give N or HxW, at least 16 pixels" in capsys.readouterr().err
