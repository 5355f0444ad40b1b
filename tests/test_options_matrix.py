"""Every option on every input kind and engine is honoured (it changes the output and the manifest records
it) or refused before anything runs, in one line naming the option and the kind (#25)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from gradcam.apps.cli import main
from gradcam.pipeline.kinds import DETECTION, KINDS, kind_of, refuse_unsupported
from gradcam.pipeline.options import (
    OPTION_FLAGS,
    DetectionSettings,
    PreprocessSettings,
    RunOptions,
    UsageError,
    VideoSettings,
    given_options,
    option_names,
)
from manifest_check import validate

SIGNAL = "py:tiny_models:TinySignal"
VOLUME = "py:tiny_models:TinyVolume"

# a value other than the default for every option (the matrix sets one at a time)
SAMPLES = {
    "method": "gradcam++", "layer": "features", "target": "1", "prompts": ("a cat",), "per_channel": 4,
    "alpha": 0.8, "colormap": "viridis", "batch_size": 4, "workers": 0, "device": "cpu:0", "overwrite": True,
    "resume": True, "max_megapixels": 12.0, "max_side": 640, "frame": "full", "tint": "heat", "legend": True,
    "scale": "shared", "counterfactual": True, "eigen_smooth": True, "aug_smooth": True, "guided": True,
    "perturbation_batch": 8,
    "method_options": (("k", "2"),), "top_channels": 4, "prefix_tokens": 1, "token_grid": (7, 7),
    "save": ("overlay", "map"), "format": "png", "replicas": 2, "kind": "photo", "engine": "ray",
    "video.every": 2, "video.smoothing": 0.5, "detection.conf": 0.5, "detection.max_boxes": 3,
    "preprocess.resize": 300, "preprocess.crop": (240, 240), "preprocess.mean": (0.5,), "preprocess.std": (0.5,),
    "preprocess.interpolation": "bicubic",
}  # fmt: skip
# the kinds of files, and a detector's photos (a kind chosen by the model: kinds.for_model)
EVERY_KIND = {**KINDS, "detection": DETECTION}


def _with(name: str) -> RunOptions:
    options = RunOptions(out=Path("out"))
    owner, _, leaf = name.rpartition(".")
    if owner == "video":
        return replace(options, video=replace(VideoSettings(), **{leaf: SAMPLES[name]}))
    if owner == "detection":
        return replace(options, detection=replace(DetectionSettings(), **{leaf: SAMPLES[name]}))
    if owner == "preprocess":
        return replace(options, preprocess=replace(PreprocessSettings(), **{leaf: SAMPLES[name]}))
    return replace(options, **{name: SAMPLES[name]})


def test_every_option_has_a_flag_and_a_sample():
    assert sorted(option_names()) == sorted(OPTION_FLAGS) == sorted(SAMPLES)
    assert given_options(RunOptions(out=Path("anywhere"))) == []


@pytest.mark.parametrize("kind", sorted(EVERY_KIND))
@pytest.mark.parametrize("name", sorted(OPTION_FLAGS))
def test_each_option_is_honoured_or_refused_in_one_line(kind, name):
    options = _with(name)
    assert given_options(options) == [name]
    if EVERY_KIND[kind].honours(name):
        refuse_unsupported(EVERY_KIND[kind], options)  # nothing said
        return
    with pytest.raises(UsageError) as refused:
        refuse_unsupported(EVERY_KIND[kind], options)
    message = str(refused.value)
    assert message.startswith(f"{OPTION_FLAGS[name]}: not for {EVERY_KIND[kind].plural}") and "\n" not in message


def test_the_kinds_take_what_their_code_reads():
    """The declarations are not wishes: photos take everything but the video settings; videos, volumes and
    signals take the map-changing options their runs pass to explain()."""
    assert not KINDS["photo"].honours("video.every") and KINDS["video"].honours("video.every")
    for kind in ("video", "volume", "signal"):
        assert KINDS[kind].honours("counterfactual") and KINDS[kind].honours("eigen_smooth")
        assert not KINDS[kind].honours("aug_smooth") and not KINDS[kind].honours("per_channel")
    assert KINDS["image"].takes == KINDS["photo"].takes


def _signal(tmp_path: Path) -> Path:
    np.save(tmp_path / "sig.npy", np.random.default_rng(0).normal(size=(2, 64)).astype(np.float32))
    return tmp_path / "sig.npy"


def _volume(tmp_path: Path) -> Path:
    np.save(tmp_path / "vol.npy", np.random.default_rng(1).normal(size=(12, 14, 16)).astype(np.float32))
    return tmp_path / "vol.npy"


def _run(path: Path, model: str, out: Path, *extra: str) -> tuple[int, dict]:
    code = main(["explain", str(path), "--model", model, "--out", str(out), "--quiet", *extra])
    manifest = validate(out / "results.json") if code == 0 else {}
    return code, manifest


def _map(manifest: dict) -> np.ndarray:
    return np.load(manifest["images"][0]["targets"][0]["files"]["map"])


@pytest.mark.parametrize("make, model, kind", [(_signal, SIGNAL, "signal"), (_volume, VOLUME, "volume")])
def test_arrays_honour_counterfactual_and_eigen_smooth(tmp_path, make, model, kind):
    """The issue's case: `sig.npy --counterfactual` exited 0 with the plain map and `counterfactual: false`."""
    path = make(tmp_path)
    code, plain = _run(path, model, tmp_path / "plain")
    assert code == 0 and plain["kind"] == kind and plain["counterfactual"] is False
    for flag, field in (("--counterfactual", "counterfactual"), ("--eigen-smooth", "eigen_smooth")):
        code, changed = _run(path, model, tmp_path / field, flag)
        assert code == 0 and changed[field] is True
        assert not np.allclose(_map(plain), _map(changed)), flag
    code, drawn = _run(path, model, tmp_path / "alpha", "--alpha", "0.8", "--colormap", "viridis")
    assert code == 0 and drawn["colormap"] == "viridis" and drawn["options"] == {"alpha": 0.8}


@pytest.mark.parametrize(
    "extra, said",
    [
        (["--aug-smooth"], "--aug-smooth: not for signals"),
        (["--per-channel", "4"], "--per-channel: not for signals"),
        (["--frame", "full"], "--frame: not for signals"),
        (["--legend"], "--legend: not for signals"),
        (["--every", "2"], "--every: not for signals"),
        (["--target", "all"], "--target all: not for signals"),
    ],
)
def test_arrays_refuse_what_they_cannot_honour_before_running(tmp_path, capsys, extra, said):
    out = tmp_path / "out"
    assert main(["explain", str(_signal(tmp_path)), "--model", SIGNAL, "--out", str(out), *extra]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"gradcam: error: {said}" + lines[0].split(said, 1)[1]] and said in lines[0]
    assert not out.exists()  # refused before anything ran


def test_photos_refuse_the_video_settings(tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (64, 48), "white").save(tmp_path / "p.png")
    assert main(["explain", str(tmp_path / "p.png"), "--out", str(tmp_path / "o"), "--every", "3"]) == 2
    assert "--every: not for photos" in capsys.readouterr().err


def test_photos_record_every_option_given(tmp_path):
    from PIL import Image

    Image.new("RGB", (64, 48), "white").save(tmp_path / "p.png")
    out = tmp_path / "o"
    argv = ["explain", str(tmp_path / "p.png"), "--out", str(out), "--quiet", "--alpha", "0.7", "--tint", "heat",
            "--legend", "--max-side", "512", "--method-option", "k=2", "--method", "fem"]  # fmt: skip
    assert main(argv) == 0
    manifest = json.loads((out / "results.json").read_text())
    assert manifest["kind"] == "photo" and manifest["methods"] == ["fem"]
    assert manifest["options"] == {"alpha": 0.7, "max_side": 512, "tint": "heat", "legend": True,
                                   "method_options": [["k", "2"]]}  # fmt: skip


def test_kind_guesses_and_overrides(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((2, 64), np.float32))
    np.save(tmp_path / "b.npy", np.zeros((4, 8, 8), np.float32))
    assert kind_of(tmp_path / "a.npy").name == "signal" and kind_of(tmp_path / "b.npy").name == "volume"
    assert kind_of(tmp_path / "a.npy", "image").name == "image"
    assert kind_of(tmp_path / "x.mp4").name == "video" and kind_of(tmp_path / "x.jpg").name == "photo"
    assert kind_of(tmp_path / "x.txt") is None and kind_of(tmp_path / "x.jpg", "video") is None


def test_resume_refuses_a_run_of_another_kind(tmp_path, capsys):
    """A folder of .npy files explained as image arrays, then resumed as signals, would mix two meanings."""
    folder = tmp_path / "arrays"
    folder.mkdir()
    np.save(folder / "a.npy", np.random.default_rng(0).random((2, 64)).astype(np.float32))
    out = tmp_path / "out"
    assert main(["explain", str(folder), "--kind", "image", "--out", str(out), "--quiet"]) == 0
    argv = ["explain", str(folder), "--model", SIGNAL, "--out", str(out), "--quiet", "--resume"]
    assert main(argv) == 2
    assert "explained image files, this one signal files" in capsys.readouterr().err
