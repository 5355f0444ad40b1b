"""Fuzz: generated bad images, bad arguments, interrupted runs, thrown at the library, the command line
and the web function. Each property says what must always hold: a one-line error or a result, never a
traceback, never a photo lost or doubled, never an unbounded allocation, and the model as it was."""

from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gradcam
from gradcam.apps.cli import main
from gradcam.io.images import DEFAULT_MAX_MEGAPIXELS, MAX_ASPECT_RATIO, ImageReadError, read_image
from gradcam.io.models import Preprocessing
from gradcam.pipeline import decode as decoding
from gradcam.pipeline import local as runner
from tiny_models import TinyCNN

from .conftest import scaled
from .strategies import image_bytes

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SPEC = Preprocessing(resize=256, crop=(224, 224), mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bicubic")


@given(data=image_bytes())
def test_any_file_decodes_within_bounds_or_fails_in_one_line(data):
    try:
        image = read_image(data, draft_size=256, name="fuzzed.jpg")
    except ImageReadError as error:
        message = str(error)
        assert message.startswith("fuzzed.jpg: ") and "\n" not in message
        return
    except Exception as error:  # noqa: BLE001
        raise AssertionError(f"{type(error).__name__} escaped read_image: {error}") from error
    width, height = image.size
    assert image.mode == "RGB"
    assert width * height <= DEFAULT_MAX_MEGAPIXELS * 1e6
    assert max(width, height) / min(width, height) <= MAX_ASPECT_RATIO


@given(data=image_bytes())
def test_the_engine_decoder_never_raises_and_gives_finite_inputs(data):
    item = decoding.decode(data, SPEC, DEFAULT_MAX_MEGAPIXELS, name="fuzzed.png")
    if item.error is not None:
        assert item.error.startswith("fuzzed.png: ") and "\n" not in item.error
        return
    assert item.input is not None and item.photo is not None
    assert item.input.shape == (3, 224, 224) and bool(torch.isfinite(item.input).all())
    assert item.photo.dtype == torch.uint8 and item.photo.shape[0] == 3


METHODS = st.one_of(st.sampled_from(gradcam.methods()), st.text(max_size=10), st.integers(), st.none(), st.floats())
TARGETS = st.one_of(
    st.none(),
    st.integers(-3, 12),
    st.sampled_from(["top1", "top3", "top11", "top0", "TOP-2", "", "7", "cat", "  3 "]),
    st.lists(st.integers(-1, 11), max_size=4),
    st.lists(st.lists(st.integers(0, 9), min_size=1, max_size=3), min_size=2, max_size=2),
    st.just(np.int64(4)),
    st.just(np.array([1, 2])),
    st.floats(allow_nan=True),
)
LAYERS = st.sampled_from([None, "features.5", "features.2", "features", "classifier", "pool", "nope", "", "features.9"])
INPUTS = st.sampled_from(["ok", "ok", "3d", "int", "one-channel", "tiny", "nan", "empty", "list"])


def _images(kind: str) -> object:
    generator = torch.Generator().manual_seed(0)
    return {
        "ok": lambda: torch.randn(2, 3, 32, 32, generator=generator),
        "3d": lambda: torch.randn(3, 32, 32, generator=generator),
        "int": lambda: torch.zeros(2, 3, 32, 32, dtype=torch.long),
        "one-channel": lambda: torch.randn(2, 1, 32, 32, generator=generator),
        "tiny": lambda: torch.randn(2, 3, 2, 2, generator=generator),
        "nan": lambda: torch.full((2, 3, 32, 32), math.nan),
        "empty": lambda: torch.randn(0, 3, 32, 32),
        "list": lambda: [[1.0, 2.0]],
    }[kind]()


@given(method=METHODS, targets=TARGETS, layer=LAYERS, inputs=INPUTS, training=st.booleans())
@settings(max_examples=scaled(60))
def test_explain_gives_maps_or_a_clear_error_and_leaves_the_model_alone(method, targets, layer, inputs, training):
    torch.manual_seed(0)
    model = TinyCNN().train(training)
    model.features[0].weight.requires_grad_(False)
    before = [(m.training, dict(m._forward_hooks), dict(m._forward_pre_hooks)) for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    images = _images(inputs)
    try:
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            ex = gradcam.explain(model, images, method, layer, targets)  # type: ignore[arg-type]
    except (ValueError, TypeError) as error:  # refused (a bad method, target, layer or input): no warning owed
        assert str(error) and "\n" not in str(error).strip(), str(error)
    except Exception as error:  # noqa: BLE001
        raise AssertionError(f"{type(error).__name__} escaped explain(): {error}") from error
    else:
        if inputs == "nan" and images.numel():  # type: ignore[union-attr]
            assert said, "NaN input explained without a warning"  # only owed when explain() ran
        assert ex.maps.dim() == 4 and ex.maps.shape[-2:] == images.shape[-2:]  # type: ignore[union-attr]
        if inputs != "nan" and ex.maps.numel():  # an empty batch gives empty maps
            assert bool(torch.isfinite(ex.maps).all()) and float(ex.maps.min()) >= 0 and float(ex.maps.max()) <= 1
    after = [(m.training, dict(m._forward_hooks), dict(m._forward_pre_hooks)) for m in model.modules()]
    assert after == before and [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())


OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "--alpha": st.sampled_from(["0.3", "-1", "2", "nan", "x"]),
        "--batch-size": st.sampled_from(["1", "3", "0", "-2", "513", "9999999999"]),
        "--target": st.sampled_from(["top2", "5000", "tigre cat", "tiger cat,tabby", ",", "-1", "top0", "espresso"]),
        "--method": st.sampled_from(["gradcam", "layercam", "eigencam", "xgradcam"]),
        "--layer": st.sampled_from(["bn2", "blocks.5", "classifier", "nope", "conv_stem"]),
        "--per-channel": st.sampled_from(["0", "3", "-1"]),
        "--colormap": st.sampled_from(["viridis", "jett", ""]),
        "--token-grid": st.sampled_from(["7x7", "7", "axb"]),
        "--max-megapixels": st.sampled_from(["0", "-3", "0.01", "1e9", "nan"]),
        "--perturbation-batch": st.sampled_from(["0", "4"]),
    },
)


@given(options=OPTIONS, flags=st.sets(st.sampled_from(["--counterfactual", "--eigen-smooth", "--guided"])))
@settings(max_examples=scaled(40))
def test_any_command_line_ends_in_an_exit_code_without_a_traceback(options, flags, tmp_path_factory, capsys):
    out = tmp_path_factory.mktemp("out")
    argv = ["explain", str(EXAMPLES / "chelsea.jpg"), "--out", str(out), "--workers", "0", "--quiet", "--overwrite"]
    for name, value in options.items():
        argv += [name, value]
    try:
        code = main([*argv, *sorted(flags)])
    except SystemExit as exit_:  # argparse's own usage errors (a value of the wrong type): exit 2
        code = exit_.code
    err = capsys.readouterr().err
    assert code in (0, 1, 2), (code, err)
    assert "Traceback" not in err
    messages = [line for line in err.splitlines() if line.startswith(("gradcam: error", "gradcam explain: error"))]
    assert len(messages) <= 1, err
    if code == 2:
        assert messages and not (out / "results.json").exists()
    else:
        images = json.loads((out / "results.json").read_text())["images"]
        assert len(images) == 1 and (images[0]["status"] == "ok") == (code == 0)


@given(
    stop_at=st.integers(1, 6),
    batch=st.integers(1, 4),
    workers=st.sampled_from([0, 1]),
    replicas=st.sampled_from([1, 2]),
)
@settings(max_examples=scaled(20))
def test_interrupted_runs_resume_to_each_photo_exactly_once(
    stop_at, batch, workers, replicas, tmp_path_factory, monkeypatch
):
    folder = tmp_path_factory.mktemp("photos")
    for i, photo in enumerate(sorted(EXAMPLES.glob("*.jpg")) * 2):
        shutil.copy(photo, folder / f"{i}-{photo.name}")
    out = tmp_path_factory.mktemp("out")
    real_collect = runner.Runner._collect
    calls = {"n": 0}

    def interrupting(self, progress, keep_last=0, only_done=False):
        calls["n"] += 1
        if calls["n"] == stop_at:
            raise KeyboardInterrupt
        return real_collect(self, progress, keep_last, only_done)

    argv = ["explain", str(folder), "--out", str(out), "--quiet", "--batch-size", str(batch)]
    argv += ["--workers", str(workers), "--replicas", str(replicas)]
    with monkeypatch.context() as patch:
        patch.setattr(runner.Runner, "_collect", interrupting)
        first = main(argv)
    assert first in (0, 130)
    if first == 130:
        recorded = {Path(e["path"]).name for e in json.loads((out / "results.json").read_text())["images"]}
        on_disk = {p.name.split(".")[0] for p in out.glob("*.png")}
        assert on_disk <= {name.rsplit(".", 1)[0] for name in recorded}
        assert main([*argv, "--resume"]) == 0
    images = json.loads((out / "results.json").read_text())["images"]
    assert sorted(Path(e["path"]).name for e in images) == sorted(p.name for p in folder.iterdir())
    assert all(e["status"] == "ok" for e in images)


@given(data=image_bytes(), target=st.sampled_from(["", "top3", "top50", "5000", "tigre cat", "3,4"]))
@settings(max_examples=scaled(40))
def test_the_web_function_answers_with_a_result_or_a_page_message(data, target, tmp_path_factory):
    from gradcam.apps.web import AppError, PhotoResult, explain_photo

    folder = tmp_path_factory.mktemp("upload")
    upload = folder / "upload.png"
    upload.write_bytes(data)
    try:
        result = explain_photo(str(upload), "efficientnet_lite0", ["gradcam"], None, target, 0.5, "jet",
                               per_channel=0, out_dir=folder)  # fmt: skip
    except AppError as error:
        assert str(error) and "\n" not in str(error) and str(folder) not in str(error)
        return
    assert isinstance(result, PhotoResult) and result.overlays


EVALUATE_OPTIONS = st.fixed_dictionaries(
    {"--methods": st.sampled_from(["gradcam", "gradcam,layercam", "nope", ",", "eigencam,gradcam++"])},
    optional={
        "--layers": st.sampled_from(["bn2", "blocks.6,bn2", "classifier", "nope", ""]),
        "--steps": st.sampled_from(["2", "0", "-1", "x"]),
        "--batch-size": st.sampled_from(["8", "0", "64"]),
        "--boxes": st.sampled_from(["garbage", "empty-json", "csv", "missing"]),
    },
)
BOXES = {
    "garbage": "{not json",
    "empty-json": "{}",
    "csv": "image,class,x1,y1,x2,y2\nchelsea.jpg,tiger cat,10,10,200,200\nchelsea.jpg,nope,1,1,x,2\n",
}


@given(options=EVALUATE_OPTIONS)
@settings(max_examples=scaled(25))
def test_any_evaluate_command_ends_in_an_exit_code_without_a_traceback(options, tmp_path_factory, capsys):
    folder = tmp_path_factory.mktemp("evaluate")
    argv = ["evaluate", str(EXAMPLES / "chelsea.jpg"), "--out", str(folder / "report"), "--steps", "2"]
    for name, value in options.items():
        if name == "--boxes":
            boxes = folder / ("boxes.csv" if value == "csv" else "boxes.json")
            if value != "missing":
                boxes.write_text(BOXES[value])
            value = str(boxes)
        argv += [name, value]
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code in (0, 1, 2), (code, err)
    assert "Traceback" not in err
    if code == 0:
        assert (folder / "report" / "report.html").exists()
