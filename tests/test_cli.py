"""The `gradcam` command end to end on the embedded model, with every kind of bad input."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gradcam.apps.cli import main
from gradcam.pipeline import local as runner

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(*argv: str) -> int:
    return main(["explain", *argv, "--workers", "0", "--quiet"] if argv and argv[0] != "--no-defaults" else argv[1:])


def manifest(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


@pytest.fixture
def photo_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(EXAMPLES / "chelsea.jpg", folder / "chelsea.jpg")
    return folder


def test_explain_one_photo_writes_overlay_map_grid_and_manifest(tmp_path):
    out = tmp_path / "out"
    assert run(str(EXAMPLES / "chelsea.jpg"), "--out", str(out), "--per-channel", "4", "--save", "overlay,map") == 0
    entry = manifest(out)["images"][0]
    assert entry["status"] == "ok"
    assert entry["predictions"][0]["label"] in {"tiger cat", "Egyptian cat", "tabby"}
    assert len(entry["predictions"]) == 5
    assert abs(sum(p["probability"] for p in entry["predictions"])) <= 1.0
    files = entry["targets"][0]["files"]
    overlay = Image.open(files["overlay"])
    photo = Image.open(EXAMPLES / "chelsea.jpg")
    # the photo's own resolution, and below it the legend a picture shared alone needs (#27 item 3)
    assert overlay.width == photo.width and photo.height < overlay.height < photo.height + 80
    heatmap = np.load(files["map"])
    assert heatmap.dtype == np.float32 and heatmap.shape == (224, 224)
    assert heatmap.min() >= 0 and heatmap.max() == pytest.approx(1.0)
    assert Image.open(files["channels"]).size[0] > 0
    assert manifest(out)["model"] == "efficientnet_lite0" and manifest(out)["layer"] == "bn2"


def test_espresso_on_coffee_and_several_targets(tmp_path):
    out = tmp_path / "out"
    assert run(str(EXAMPLES / "coffee.jpg"), "--out", str(out), "--target", "espresso,cup,967") == 0
    entry = manifest(out)["images"][0]
    assert entry["predictions"][0]["label"] == "espresso" and entry["predictions"][0]["probability"] > 0.9
    # "967" is espresso again: each class is explained once
    assert [(t["index"], t["label"]) for t in entry["targets"]] == [(967, "espresso"), (968, "cup")]


def test_top3_and_method(tmp_path):
    out = tmp_path / "out"
    assert run(str(EXAMPLES / "chelsea.jpg"), "--out", str(out), "--target", "top3", "--method", "layercam") == 0
    entry = manifest(out)["images"][0]
    assert [t["index"] for t in entry["targets"]] == [p["index"] for p in entry["predictions"][:3]]
    assert all(".layercam." in t["files"]["overlay"] for t in entry["targets"])


def test_folder_with_bad_files_reports_each_and_processes_the_rest(tmp_path, photo_dir, capsys):
    (photo_dir / "notes.txt").write_text("not an image")
    (photo_dir / "empty.jpg").write_bytes(b"")
    (photo_dir / "text.jpg").write_text("this is text, not a JPEG")
    data = (EXAMPLES / "coffee.jpg").read_bytes()
    (photo_dir / "truncated.jpg").write_bytes(data[: len(data) // 3])
    sub = photo_dir / "nested"
    sub.mkdir()
    shutil.copy(EXAMPLES / "coffee.jpg", sub / "coffee.jpg")
    out = tmp_path / "out"
    code = main(["explain", str(photo_dir), "--out", str(out), "--workers", "0"])
    assert code == 1
    captured = capsys.readouterr()
    entries = {Path(e["path"]).name: e for e in manifest(out)["images"]}
    assert set(entries) == {"chelsea.jpg", "coffee.jpg", "empty.jpg", "text.jpg", "truncated.jpg"}
    assert entries["chelsea.jpg"]["status"] == entries["coffee.jpg"]["status"] == "ok"
    assert "empty file" in entries["empty.jpg"]["error"]
    assert "not a readable image" in entries["text.jpg"]["error"]
    assert "truncated" in entries["truncated.jpg"]["error"]
    for name in ("empty.jpg", "text.jpg", "truncated.jpg"):
        lines = [line for line in captured.err.splitlines() if name in line]
        assert len(lines) == 1, lines  # one clear line each
    assert "1 non-image files skipped" in captured.out
    assert (out / "nested").is_dir()  # the folder structure is kept


def test_odd_image_modes(tmp_path):
    folder = tmp_path / "modes"
    folder.mkdir()
    rgb = np.asarray(Image.open(EXAMPLES / "chelsea.jpg").resize((96, 64)))
    Image.fromarray(rgb).convert("L").save(folder / "gray.png")
    rgba = Image.fromarray(rgb).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(folder / "rgba.png")
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(folder / "sixteen.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    out = tmp_path / "out"
    assert run(str(folder), "--out", str(out), "--no-legend") == 0
    assert {e["status"] for e in manifest(out)["images"]} == {"ok"}
    sixteen = Image.open(out / "sixteen.gradcam.{}.jpg".format(_target_of(out, "sixteen.png")))
    assert sixteen.size == (384, 256)  # the 96 x 64 photo drawn 4x (enlarged_for_drawing), each pixel a block


def kept_map(entry: dict) -> np.ndarray:
    """The first target's map, from the float16 copy the manifest keeps."""
    from gradcam.pipeline.records import PhotoRecord, full_map

    return full_map(PhotoRecord.from_json(entry)).numpy()


def _target_of(out: Path, name: str) -> str:
    entry = next(e for e in manifest(out)["images"] if e["path"].endswith(name))
    return Path(entry["targets"][0]["files"]["overlay"]).name.split(".gradcam.")[1].removesuffix(".jpg")


def test_sixteen_bit_is_rescaled_not_clipped():
    from gradcam.io.images import to_rgb

    values = np.array([[0, 32768, 65535]], dtype=np.uint16)
    rgb = np.asarray(to_rgb(Image.fromarray(values)))
    assert rgb[0, :, 0].tolist() == [0, 128, 255]


def test_exif_rotated_jpeg_matches_what_a_viewer_shows(tmp_path):
    image = Image.open(EXAMPLES / "chelsea.jpg").resize((120, 60))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif)
    out = tmp_path / "out"
    assert run(str(path), "--out", str(out), "--no-legend") == 0
    entry = manifest(out)["images"][0]
    assert entry["size"] == [60, 120]
    assert Image.open(entry["targets"][0]["files"]["overlay"]).size == (360, 720)  # upright, drawn 6x (small)


def test_huge_png_is_refused_without_memory_blow_up(tmp_path):
    path = tmp_path / "huge.png"
    Image.new("1", (20000, 20000)).save(path)  # 1-bit: small to make and store, 1.2 GB as RGB
    out = tmp_path / "out"
    assert run(str(path), "--out", str(out)) == 1
    assert "400 megapixels, over the limit" in manifest(out)["images"][0]["error"]


def test_huge_jpeg_is_decoded_reduced(tmp_path):
    from gradcam.io.images import read_image

    path = tmp_path / "big.jpg"
    Image.new("RGB", (6000, 4000), (90, 120, 200)).save(path, quality=50)
    image = read_image(path, draft_size=256, max_megapixels=1)  # over the limit at full size
    assert min(image.size) >= 256 and image.size[0] * image.size[1] < 1e6


def test_missing_path_is_reported_and_the_rest_processed(tmp_path, capsys):
    out = tmp_path / "out"
    assert run(str(EXAMPLES / "chelsea.jpg"), str(tmp_path / "nope.jpg"), "--out", str(out)) == 1
    assert "nope.jpg: no such file or folder" in capsys.readouterr().err
    assert manifest(out)["summary"]["ok"] == 1


def test_only_missing_paths_is_a_usage_error(tmp_path, capsys):
    assert run(str(tmp_path / "nope.jpg"), "--out", str(tmp_path / "out")) == 2
    assert "no images found" in capsys.readouterr().err


@pytest.mark.parametrize(
    "options, message",
    [
        (["--model", "resnet5O"], "unknown model 'resnet5O'; did you mean"),
        (["--layer", "bn3"], "unknown layer 'bn3'; did you mean 'bn2'"),
        (["--target", "tigre cat"], "did you mean 'tiger cat'"),
        (["--colormap", "jets"], "unknown colormap 'jets'"),
        (["--alpha", "2"], "--alpha 2.0: must be between 0 and 1"),
        (["--weights", "missing.pth"], "--weights missing.pth: no such file"),
    ],
)
def test_usage_errors_are_one_line_with_suggestions(tmp_path, capsys, options, message):
    assert run(str(EXAMPLES / "chelsea.jpg"), "--out", str(tmp_path / "out"), *options) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_unknown_method_lists_choices(tmp_path, capsys):
    # #27: one line with the close names and the choices, instead of argparse's usage block and exit
    assert run(str(EXAMPLES / "chelsea.jpg"), "--method", "gradcma", "--out", str(tmp_path / "o")) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "unknown method 'gradcma'; did you mean 'gradcam'" in line and "choose from gradcam, gradcam++" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_folder(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    assert run(str(EXAMPLES / "chelsea.jpg"), "--out", str(locked / "out")) == 2
    assert "cannot write there" in capsys.readouterr().err


def test_output_path_that_is_a_file(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert run(str(EXAMPLES / "chelsea.jpg"), "--out", str(blocker / "out")) == 2
    assert "cannot write there" in capsys.readouterr().err


def test_existing_outputs_are_never_overwritten_without_asking(tmp_path, capsys):
    out = tmp_path / "out"
    assert run(str(EXAMPLES / "chelsea.jpg"), "--out", str(out)) == 0
    overlay = Path(manifest(out)["images"][0]["targets"][0]["files"]["overlay"])
    overlay.write_bytes(b"user's own file")
    assert run(str(EXAMPLES / "chelsea.jpg"), "--out", str(out)) == 2
    assert "--resume" in capsys.readouterr().err
    (out / "results.json").unlink()
    assert run(str(EXAMPLES / "chelsea.jpg"), "--out", str(out)) == 1
    assert "exists; pass --overwrite" in manifest(out)["images"][0]["error"]
    assert overlay.read_bytes() == b"user's own file"
    assert run(str(EXAMPLES / "chelsea.jpg"), "--out", str(out), "--overwrite") == 0
    assert overlay.read_bytes().startswith(b"\xff\xd8")  # a JPEG again


def test_resume_skips_done_images(tmp_path, photo_dir, monkeypatch):
    out = tmp_path / "out"
    assert run(str(photo_dir), "--out", str(out)) == 0
    shutil.copy(EXAMPLES / "coffee.jpg", photo_dir / "coffee.jpg")
    explained: list[int] = []
    original = runner.Runner.explain_batch
    monkeypatch.setattr(
        runner.Runner,
        "explain_batch",
        lambda self, items, writers=None, explainer=None: (
            explained.append(len(items)),
            original(self, items, writers, explainer),
        )[1],
    )
    assert run(str(photo_dir), "--out", str(out), "--resume") == 0
    assert explained == [1]
    assert manifest(out)["summary"] == {"images": 2, "ok": 2, "failed": 0}


@pytest.mark.parametrize("replicas", ["1", "2"])
def test_interrupt_leaves_a_valid_manifest(tmp_path, photo_dir, monkeypatch, capsys, replicas):
    for i in range(5):
        shutil.copy(EXAMPLES / "coffee.jpg", photo_dir / f"coffee{i}.jpg")
    calls = {"n": 0}
    original = runner.Runner.explain_batch
    lock = threading.Lock()

    def interrupted(self, items, writers=None, explainer=None):
        with lock:
            calls["n"] += 1
            second = calls["n"] == 2
        if second:
            raise KeyboardInterrupt
        return original(self, items, writers, explainer)

    monkeypatch.setattr(runner.Runner, "explain_batch", interrupted)
    out = tmp_path / "out"
    assert run(str(photo_dir), "--out", str(out), "--batch-size", "2", "--replicas", replicas) == 130
    data = manifest(out)
    # the first batch, and with two replicas possibly a third one taken before the interrupt was seen
    assert data["finished"] is None and data["summary"]["ok"] in ((2,) if replicas == "1" else (2, 4))
    assert "--resume" in capsys.readouterr().err
    monkeypatch.setattr(runner.Runner, "explain_batch", original)
    assert run(str(photo_dir), "--out", str(out), "--batch-size", "2", "--resume", "--replicas", replicas) == 0
    assert manifest(out)["summary"]["ok"] == 6


def test_background_workers_and_batches_give_the_same_maps(tmp_path, photo_dir):
    shutil.copy(EXAMPLES / "coffee.jpg", photo_dir / "coffee.jpg")
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["explain", str(photo_dir), "--out", str(one), "--workers", "0", "--batch-size", "1", "--quiet"]) == 0
    assert main(["explain", str(photo_dir), "--out", str(two), "--workers", "2", "--batch-size", "2", "--quiet"]) == 0
    for a, b in zip(manifest(one)["images"], manifest(two)["images"], strict=True):
        assert a["predictions"] == b["predictions"]
        np.testing.assert_allclose(kept_map(a), kept_map(b), atol=2e-3)


def test_weights_file_state_dict_checkpoint_and_torchscript(tmp_path):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    state = tmp_path / "state.pth"
    torch.save(model.state_dict(), state)
    checkpoint = tmp_path / "checkpoint.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, checkpoint)
    scripted = tmp_path / "scripted.pt"
    torch.jit.script(model).save(str(scripted))
    maps = []
    for index, weights in enumerate((state, checkpoint, scripted)):
        out = tmp_path / f"out{index}"
        argv = [str(EXAMPLES / "chelsea.jpg"), "--model", "resnet18", "--weights", str(weights), "--out", str(out)]
        if weights == scripted:  # a TorchScript file is a program: loading it needs the user's word
            assert run(*argv) == 2
            argv.append("--trust-weights")
        assert run(*argv) == 0
        maps.append(kept_map(manifest(out)["images"][0]))
    np.testing.assert_allclose(maps[0], maps[1], atol=2e-3)  # float16 in the record
    np.testing.assert_allclose(maps[0], maps[2], atol=2e-3)


def test_weights_that_do_not_fit(tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, bad)
    assert run(str(EXAMPLES / "chelsea.jpg"), "--model", "resnet18", "--weights", str(bad), "--out", str(tmp_path)) == 2
    assert "does not fit this model" in capsys.readouterr().err


def test_pretrained_weights_offline_give_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-cache"))
    import torch.hub

    def no_network(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    assert run(str(EXAMPLES / "chelsea.jpg"), "--model", "vgg19", "--out", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "cannot download the vgg19 weights" in err and "vgg19-dcbb9e9d.pth" in err and "--weights FILE" in err


def test_original_work_case_vgg19_features_35(tmp_path):
    out = tmp_path / "out"
    assert run(str(EXAMPLES / "chelsea.jpg"), "--model", "vgg19", "--weights", "none", "--out", str(out)) == 0
    assert manifest(out)["layer"] == "features.35"


def test_models_and_layers_commands(capsys):
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    assert "efficientnet_lite0" in listing and "yes" in listing and "timm:NAME" in listing
    from gradcam.io.models import MODEL_SOURCES

    # every model source is listed, the own-architecture and whole-file ways included
    assert all(source.spelling in listing for source in MODEL_SOURCES) and "MODEL.pt" in listing
    assert {s.prefix for s in MODEL_SOURCES} == {"timm:", "hf:", "clip:", "yolo:", "py:"}
    assert main(["layers", "vgg19"]) == 0
    layers = capsys.readouterr().out
    line = next(line for line in layers.splitlines() if line.startswith("features.35 "))
    assert "(512, 14, 14)" in line and "<- default" in line
    assert main(["layers"]) == 0
    assert "bn2" in capsys.readouterr().out


def test_help_lists_every_option_with_defaults():
    parser_help = io.StringIO()
    from gradcam.apps.cli import build_parser

    parser = build_parser()
    explain_parser = parser._subparsers._group_actions[0].choices["explain"]  # type: ignore[union-attr]
    explain_parser.print_help(parser_help)
    text = parser_help.getvalue()
    for option in (
        "--model",
        "--method",
        "--layer",
        "--target",
        "--per-channel",
        "--alpha",
        "--colormap",
        "--device",
        "--batch-size",
        "--out",
        "--overwrite",
        "--resume",
    ):
        assert option in text
    assert "(default: efficientnet_lite0)" in text and "(default: gradcam-out)" in text


def test_python_dash_m(tmp_path):
    result = subprocess.run([sys.executable, "-m", "gradcam", "-h"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "explain" in result.stdout


def test_perturbation_smoothing_and_guided_options(tmp_path):
    out = tmp_path / "out"
    assert run(str(EXAMPLES / "coffee.jpg"), "--out", str(out), "--method", "scorecam", "--top-channels", "32",
               "--perturbation-batch", "16", "--guided", "--eigen-smooth") == 0  # fmt: skip
    entry = manifest(out)["images"][0]
    files = entry["targets"][0]["files"]
    assert Image.open(files["guided"]).size == (224, 224)
    assert manifest(out)["eigen_smooth"] is True
    out2 = tmp_path / "out2"
    assert run(str(EXAMPLES / "coffee.jpg"), "--out", str(out2), "--method", "ablationcam", "--aug-smooth") == 0
    assert manifest(out2)["images"][0]["status"] == "ok"


@pytest.mark.parametrize(
    "options, message",
    [
        (["--top-channels", "8"], "with --method scorecam"),
        (["--method", "eigencam", "--per-channel", "4"], "eigencam has no channel weights"),
        (["--token-grid", "14by14"], "write it as HxW"),
        (["--perturbation-batch", "0"], "must be >= 1"),
    ],
)
def test_variant_option_errors(tmp_path, capsys, options, message):
    assert run(str(EXAMPLES / "chelsea.jpg"), "--out", str(tmp_path / "out"), *options) == 2
    assert message in capsys.readouterr().err


def test_html_report_is_self_contained_with_relative_links(tmp_path):
    out = tmp_path / "out"
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    assert run(str(EXAMPLES / "coffee.jpg"), str(bad), "--out", str(out), "--per-channel", "2") == 1
    page = (out / "index.html").read_text()
    assert "http://" not in page and "https://" not in page  # no network, no CDN
    payload = json.loads(page.split('<script type="application/json" id="data">')[1].split("</script>")[0])
    entries = {Path(e["path"]).name: e for e in payload["images"]}
    files = entries["coffee.jpg"]["targets"][0]["files"]
    assert not Path(files["overlay"]).is_absolute() and (out / files["overlay"]).exists()
    assert (out / files["channels"]).exists() and (out / entries["coffee.jpg"]["photo"]).exists()
    assert "not a readable image" in entries["bad.jpg"]["error"]


def test_method_options_reach_the_method_and_unknown_ones_are_named(tmp_path, capsys):
    from gradcam.pipeline.method_options import method_with_options

    fem = method_with_options("fem", [("k", "1.5")])
    assert fem.k == 1.5
    assert method_with_options("kpcacam", [("kernel", "rbf"), ("gamma", "0.01")]).gamma == 0.01
    assert method_with_options("randomcam", [("seed", "none")]).seed is None
    assert method_with_options("finercam", [("ranks", "1,2"), ("alpha", "0.5")]).ranks == (1, 2)
    photo = str(Path(__file__).resolve().parents[1] / "examples" / "coffee.jpg")
    argv = ["explain", photo, "--method", "fem", "--quiet", "--workers", "0"]
    assert main([*argv, "--method-option", "k=1", "--out", str(tmp_path / "a")]) == 0
    assert main([*argv, "--method-option", "q=1", "--out", str(tmp_path / "b")]) == 2
    assert "--method-option q: fem takes k" in capsys.readouterr().err
    assert main([*argv, "--method-option", "k", "--out", str(tmp_path / "c")]) == 2
    assert "write it as KEY=VALUE" in capsys.readouterr().err


def test_several_layers_on_the_command_line_are_fused(tmp_path):
    photo = str(Path(__file__).resolve().parents[1] / "examples" / "chelsea.jpg")
    out = tmp_path / "out"
    argv = ["explain", photo, "--model", "resnet18", "--weights", "none", "--method", "refinecam"]
    assert main([*argv, "--layer", "layer3,layer4", "--out", str(out), "--workers", "0", "--quiet"]) == 0
    assert json.loads((out / "results.json").read_text())["images"][0]["layer"] == "layer3+layer4"


def test_a_path_first_is_short_for_explain(tmp_path, capsys):
    """The original request ran `main.py <PATH_TO_IMAGE>`; `gradcam cat.jpg` was "invalid choice". A first word
    that names an input (a file, a folder, a glob, a name with a suffix) now explains it; a mistyped command
    is still argparse's error listing the commands."""
    out = tmp_path / "out"
    assert main([str(EXAMPLES / "coffee.jpg"), "--out", str(out), "--quiet", "--workers", "0"]) == 0
    assert manifest(out)["images"][0]["predictions"][0]["label"] == "espresso"
    assert main([str(tmp_path / "missing.jpg"), "--out", str(tmp_path / "o2"), "--quiet"]) == 2
    assert "missing.jpg: no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["explian", str(EXAMPLES / "coffee.jpg")])
    assert "invalid choice: 'explian'" in capsys.readouterr().err
