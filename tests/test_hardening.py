"""Hostile and unlucky input (issue 10): each test here failed before its fix.

Untrusted model files, inputs that are small on disk but huge to decode, threads, interrupted runs,
name collisions, outputs inside the inputs, manifests that lied, and the smaller defects of the list.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import gradcam
import gradcam.io.models
from gradcam.apps.cli import main
from gradcam.io.images import ImageReadError, read_image
from gradcam.pipeline import local as runner
from tiny_models import TinyCNN

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from bench_hostile import corrupt_jpeg_declaring, run_measured  # noqa: E402


def explain_cli(*argv: str) -> int:
    return main(["explain", *argv, "--workers", "0", "--quiet"])


def manifest(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def one_line(err: str) -> str:
    """The one message on stderr (progress bars aside)."""
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip() and "%|" not in line]
    assert len(lines) == 1, lines
    return lines[0]


# 1. --weights runs no code ------------------------------------------------------------------------------


class _Payload:
    """Unpickling this calls ``os.mkdir(marker)``: a stand-in for ``os.system(...)``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture
def malicious_weights(tmp_path: Path) -> tuple[Path, Path]:
    import torchvision

    marker = tmp_path / "code-ran"
    state = torchvision.models.resnet18().state_dict()
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": state, "extra": _Payload(marker)}, path)
    return path, marker


@pytest.mark.parametrize("command", ["explain", "evaluate", "layers"])
def test_a_malicious_pickle_runs_no_code(command, malicious_weights, tmp_path, capsys):
    path, marker = malicious_weights
    argv = {
        "explain": ["explain", str(EXAMPLES / "chelsea.jpg"), "--out", str(tmp_path / "out"), "--quiet"],
        "evaluate": ["evaluate", str(EXAMPLES / "chelsea.jpg"), "--out", str(tmp_path / "eval")],
        "layers": ["layers", "resnet18"],
    }[command]
    assert main([*argv, "--model", "resnet18", "--weights", str(path)] if command != "layers" else
                [*argv, "--weights", str(path)]) == 2  # fmt: skip
    assert not marker.exists()
    message = one_line(capsys.readouterr().err)
    assert "refused" in message and "--trust-weights" in message and str(path) in message


def test_trust_weights_loads_a_whole_pickled_model_with_a_warning(tmp_path, capsys):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    whole = tmp_path / "whole.pth"
    torch.save(model, whole)
    out = tmp_path / "out"
    argv = [str(EXAMPLES / "chelsea.jpg"), "--model", "resnet18", "--weights", str(whole), "--out", str(out)]
    assert explain_cli(*argv) == 2
    assert "refused" in capsys.readouterr().err
    assert explain_cli(*argv, "--trust-weights") == 0
    assert "warning: --trust-weights: loading" in capsys.readouterr().err
    assert (
        "--trust-weights"
        in subprocess.run(
            [sys.executable, "-m", "gradcam", "explain", "-h"], capture_output=True, text=True, check=True
        ).stdout
    )


def test_the_web_app_never_unpickles(malicious_weights):
    pytest.importorskip("gradio")
    from gradcam.apps import web

    path, marker = malicious_weights
    shelf = web.ModelShelf(["resnet18"], weights={"resnet18": str(path)})
    with pytest.raises(gradcam.io.models.ModelLoadError, match="refused"):
        shelf.load_all()
    assert not marker.exists()
    assert "trust_weights" not in __import__("inspect").getsource(web)


# 2. bounded memory ----------------------------------------------------------------------------------------


def test_small_files_that_decode_huge_are_refused_before_allocating(tmp_path):
    wide = tmp_path / "wide.png"
    Image.new("L", (10000, 1)).save(wide)
    with pytest.raises(ImageReadError, match="aspect ratio of 10000:1"):
        read_image(wide, draft_size=256)
    bilevel = tmp_path / "bilevel.png"
    Image.new("1", (14000, 14000), 1).save(bilevel)
    assert bilevel.stat().st_size < 100_000
    with pytest.raises(ImageReadError, match="196 megapixels, over the limit of 40"):
        read_image(bilevel, draft_size=256)
    declared = tmp_path / "declared.jpg"
    declared.write_bytes(corrupt_jpeg_declaring(65500, 65500))
    with pytest.raises(ImageReadError, match="over the limit"):
        read_image(declared, draft_size=256)


def test_no_small_input_takes_the_process_above_2_gb(tmp_path):
    """The issue's three inputs (100 bytes to 50 KB) and a PNG just under the megapixel limit, in one run:
    the process's peak RSS, measured by the kernel, stays under 2 GB."""
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("L", (10000, 1), 128).save(folder / "wide.png")
    Image.new("1", (14000, 14000), 1).save(folder / "bilevel.png")
    (folder / "declared.jpg").write_bytes(corrupt_jpeg_declaring(65500, 65500))
    Image.new("RGB", (6300, 6300), (200, 120, 40)).save(folder / "flat.png")  # 39.7 MP, just under the limit
    assert all(p.stat().st_size < 50 * 1024**2 for p in folder.iterdir())
    if not Path("/proc/self/status").exists():
        pytest.skip("measures the peak through /proc (Linux)")
    code, peak_mb, err = run_measured(
        ["explain", str(folder), "--out", str(tmp_path / "out"), "--quiet", "--workers", "0"]
    )
    assert code == 1, err
    assert peak_mb < 2048, f"peak RSS {peak_mb:.0f} MB"
    errors = [line for line in err if line.startswith("gradcam:")]
    assert len(errors) == 3 and all("over the limit" in line for line in errors), errors
    (flat,) = [e for e in manifest(tmp_path / "out")["images"] if e["status"] == "ok"]
    assert flat["size"] == [6300, 6300]
    width, height = Image.open(flat["targets"][0]["files"]["overlay"]).size
    assert width == 6300 and 6300 < height < 6500  # the photo at its own size, its legend below


def test_the_overlay_of_a_large_photo_is_the_whole_frame_interpolation(tmp_path):
    """The strip-wise carrying back gives the same pixels as interpolating the whole frame at once."""
    import torch.nn.functional as F

    from gradcam.io.images import Geometry, original_strips, to_original

    geometry = Geometry((3000, 4000), (256, 341), (16, 58), (224, 224))
    maps = torch.rand(2, 7, 7)
    crop = F.interpolate(maps[None], size=(224, 224), mode="bilinear", align_corners=False)[0]
    canvas = crop.new_zeros(2, 256, 341)
    canvas[:, 16:240, 58:282] = crop
    expected = F.interpolate(canvas[None], size=(3000, 4000), mode="bilinear", align_corners=False)[0].clamp(0, 1)
    full, coverage = to_original(maps, geometry)
    torch.testing.assert_close(full, expected, atol=2e-6, rtol=0)
    assert len(list(original_strips(maps, geometry, strip_pixels=4000 * 100))) == 30
    assert coverage[0, 1500, 2000] == 1 and coverage[0, 1500, 10] == 0


# 3. threads ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("training", [False, True])
def test_four_threads_on_one_model_give_the_sequential_maps(training):
    torch.manual_seed(0)
    model = TinyCNN().train(training)
    inputs = [torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(60)]
    expected = [gradcam.explain(model, x, "gradcam", "features.5").maps for x in inputs]
    assert model.training == training
    results: dict[int, torch.Tensor] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def work(offset: int) -> None:
        barrier.wait()
        try:
            for i in range(offset, 60, 4):
                results[i] = gradcam.explain(model, inputs[i], "gradcam", "features.5").maps
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    wrong = [i for i in range(60) if not torch.allclose(results[i], expected[i], atol=1e-6)]
    assert wrong == []
    assert all(m.training == training for m in model.modules())
    assert not model.features[5]._forward_hooks


# 4. interrupt, then --resume ------------------------------------------------------------------------------


@pytest.mark.parametrize("replicas", ["1", "2"])
def test_an_interrupt_while_a_batch_is_written_loses_nothing(twelve_photos, tmp_path, monkeypatch, replicas):
    """Ctrl-C arrives while the previous batch's pictures are collected and the newest batch is being
    written (one model), or while two replicas explain and write (the main thread's Ctrl-C): every photo
    whose files are on disk is in the manifest, and --resume finishes the rest."""
    out = tmp_path / "out"
    real_collect = runner.Runner._collect
    calls = {"n": 0}

    def interrupted_collect(self, progress, keep_last=0, only_done=False):
        calls["n"] += 1
        if calls["n"] == 2:  # after the second batch was submitted to the writers
            raise KeyboardInterrupt
        return real_collect(self, progress, keep_last, only_done)

    monkeypatch.setattr(runner.Runner, "_collect", interrupted_collect)
    options = ["--batch-size", "4", "--per-channel", "4", "--replicas", replicas]
    code = explain_cli(str(twelve_photos), "--out", str(out), *options)
    assert code == 130
    recorded = {Path(e["path"]).name for e in manifest(out)["images"]}
    on_disk = {p.name.split(".")[0] + ".jpg" for p in out.glob("p*.png")}
    # one model: the two batches explained; two: each replica finishes the batch it was explaining
    assert on_disk <= recorded and (len(recorded) == 8 if replicas == "1" else len(recorded) in (4, 8, 12))
    assert manifest(out)["finished"] is None
    monkeypatch.setattr(runner.Runner, "_collect", real_collect)
    argv = [str(twelve_photos), "--out", str(out), *options, "--resume"]
    assert explain_cli(*argv) == 0
    done = manifest(out)
    assert done["summary"] == {"images": 12, "ok": 12, "failed": 0} and done["finished"]


def test_resume_redoes_photos_an_interrupted_run_wrote_but_did_not_record(twelve_photos, tmp_path):
    """A killed run (SIGKILL: no finally) can leave a photo's files without its manifest entry."""
    out = tmp_path / "out"
    assert explain_cli(str(twelve_photos), "--out", str(out)) == 0
    data = manifest(out)
    data["images"] = data["images"][:5]
    (out / "results.json").write_text(json.dumps(data))
    assert explain_cli(str(twelve_photos), "--out", str(out), "--resume") == 0
    assert manifest(out)["summary"] == {"images": 12, "ok": 12, "failed": 0}


# 5. name collisions ---------------------------------------------------------------------------------------


def test_same_names_in_different_folders_get_their_own_outputs(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    Image.open(EXAMPLES / "chelsea.jpg").save(tmp_path / "a" / "x.jpg")
    Image.open(EXAMPLES / "coffee.jpg").save(tmp_path / "b" / "x.jpg")
    out = tmp_path / "out"
    for extra in ([], ["--overwrite"]):
        assert explain_cli(str(tmp_path / "a" / "x.jpg"), str(tmp_path / "b"), "--out", str(out), *extra) == 0
        entries = manifest(out)["images"]
        overlays = [e["targets"][0]["files"]["overlay"] for e in entries]
        assert [Path(o).relative_to(out).parts[0] for o in overlays] == ["a", "b"]
        assert [e["predictions"][0]["label"] for e in entries] == ["tiger cat", "espresso"]
    assert not list(out.rglob("*.tmp"))


# 8. output inside the input -------------------------------------------------------------------------------


def test_an_output_folder_inside_the_input_is_not_explained(tmp_path):
    photos = tmp_path / "d"
    photos.mkdir()
    Image.open(EXAMPLES / "chelsea.jpg").save(photos / "cat.jpg")
    for extra in ([], ["--overwrite"]):
        assert explain_cli(str(photos), "--out", str(photos / "out"), *extra) == 0
        assert [Path(e["path"]).name for e in manifest(photos / "out")["images"]] == ["cat.jpg"]


# 9. manifests that lie or stick ---------------------------------------------------------------------------


def test_a_usage_error_leaves_no_manifest_and_the_corrected_run_works(tmp_path, capsys):
    out = tmp_path / "out"
    assert explain_cli(str(EXAMPLES / "chelsea.jpg"), "--target", "5000", "--out", str(out)) == 2
    assert "out of range for a model with 1000 classes" in one_line(capsys.readouterr().err)
    assert not (out / "results.json").exists()
    assert explain_cli(str(EXAMPLES / "chelsea.jpg"), "--target", "500", "--out", str(out)) == 0


def test_a_batch_that_runs_out_of_memory_is_split(twelve_photos, tmp_path, monkeypatch, capsys):
    real_explain = runner.explain

    def small_memory(model, images, *args, **kwargs):
        if len(images) > 2:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
        return real_explain(model, images, *args, **kwargs)

    monkeypatch.setattr(runner, "explain", small_memory)
    out = tmp_path / "out"
    assert explain_cli(str(twelve_photos), "--out", str(out), "--batch-size", "8") == 0
    assert manifest(out)["summary"]["ok"] == 12
    assert explain_cli(str(twelve_photos), "--out", str(tmp_path / "o2"), "--batch-size", "100000") == 2
    assert "--batch-size must be between 1 and 512" in capsys.readouterr().err


def test_a_full_disk_leaves_no_temporary_files_and_a_manifest(tmp_path, monkeypatch, capsys):
    real_save = Image.Image.save

    def disk_full(self, fp, *args, **kwargs):
        if str(fp).endswith(".tmp") and ".gradcam." in str(fp):
            Path(fp).write_bytes(b"\xff\xd8 partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", disk_full)
    out = tmp_path / "out"
    assert explain_cli(str(EXAMPLES), "--out", str(out)) == 1
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    entries = manifest(out)["images"]
    assert len(entries) == 3 and all("No space left on device" in e["error"] for e in entries)

    def manifest_cannot_be_written(data, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runner, "write_json_atomic", manifest_cannot_be_written)
    capsys.readouterr()
    assert explain_cli(str(EXAMPLES / "chelsea.jpg"), "--out", str(tmp_path / "o2")) == 1
    assert "cannot write the manifest (No space left on device)" in one_line(capsys.readouterr().err)


def test_resume_refuses_a_corrupt_manifest_and_other_options(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text('{"images": [')
    assert explain_cli(str(EXAMPLES / "chelsea.jpg"), "--out", str(out), "--resume") == 2
    assert "cannot be read" in one_line(capsys.readouterr().err)
    (out / "results.json").unlink()
    assert explain_cli(str(EXAMPLES / "chelsea.jpg"), "--out", str(out)) == 0
    for extra, flag in (["--method", "layercam"], "--method"), (["--target", "top2"], "--target"):
        assert explain_cli(str(EXAMPLES), "--out", str(out), "--resume", *extra) == 2
        assert f"used {flag}" in one_line(capsys.readouterr().err)
    assert explain_cli(str(EXAMPLES), "--out", str(out), "--resume", "--layer", "blocks.5") == 2
    assert "explained layer 'bn2'" in one_line(capsys.readouterr().err)
    assert explain_cli(str(EXAMPLES), "--out", str(out), "--resume") == 0
    assert manifest(out)["summary"]["ok"] == 3 and manifest(out)["methods"] == ["gradcam"]


# 10. smaller defects --------------------------------------------------------------------------------------


def test_float_tiffs_in_0_1_keep_their_brightness_and_nan_pixels_warn(tmp_path):
    values = np.full((40, 60), 0.5, dtype=np.float32)
    path = tmp_path / "float.tif"
    Image.fromarray(values, mode="F").save(path)
    assert abs(np.asarray(read_image(path)).mean() - 128) <= 1
    values[3, 4] = np.nan
    Image.fromarray(values, mode="F").save(path)
    with pytest.warns(UserWarning, match="float.tif: 1 pixels are NaN or infinite"):
        pixels = np.asarray(read_image(path))
    assert pixels[3, 4, 0] == 0 and pixels[0, 0, 0] == 128


def test_nan_inputs_are_explained_with_a_warning():
    torch.manual_seed(0)
    images = torch.randn(1, 3, 32, 32)
    images[0, 0, 0, 0] = float("nan")
    with pytest.warns(UserWarning, match="1 values are NaN or infinite"):
        gradcam.explain(TinyCNN().eval(), images)


def test_evaluate_checks_out_and_layers_before_working(tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "report.txt"
    a_file.write_text("mine")
    assert main(["evaluate", str(EXAMPLES / "chelsea.jpg"), "--out", str(a_file)]) == 2
    assert "is a file" in one_line(capsys.readouterr().err) and a_file.read_text() == "mine"
    argv = ["evaluate", str(EXAMPLES / "chelsea.jpg"), "--out", str(tmp_path / "eval"), "--methods", "gradcam"]
    assert main([*argv, "--layers", "classifier"]) == 2
    assert "--layers classifier: cannot be explained" in one_line(capsys.readouterr().err)
    import gradcam.apps.evaluate

    def out_of_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(gradcam.apps.evaluate, "evaluate", out_of_memory)
    assert main(argv) == 1
    assert "out of memory; lower --batch-size" in one_line(capsys.readouterr().err)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_ablationcam_runs_on_models_that_are_not_float32(dtype):
    torch.manual_seed(0)
    model = TinyCNN().eval()
    reference = gradcam.explain(model, torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)),
                                "ablationcam", "features.5").maps  # fmt: skip
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)).to(dtype)
    maps = gradcam.explain(model.to(dtype), images, "ablationcam", "features.5").maps
    tolerance = 1e-5 if dtype == torch.float64 else 0.2
    assert (maps - reference).abs().mean() < tolerance


def test_bad_method_numpy_targets_and_label_lengths():
    torch.manual_seed(0)
    model, images = TinyCNN().eval(), torch.randn(2, 3, 32, 32)
    with pytest.raises(TypeError, match="method: expected a method name .* got float"):
        gradcam.explain(model, images, method=3.5)  # type: ignore[arg-type]
    assert gradcam.explain(model, images, targets=np.int64(3)).targets.tolist() == [[3], [3]]
    assert gradcam.explain(model, images, targets=np.array([1, 2])).targets.tolist() == [[1], [2]]
    with pytest.raises(ValueError, match="labels: 9 class names for a model with 10 outputs"):
        gradcam.explain(model, images, labels=[str(i) for i in range(9)])
    from gradcam.methods.gradient import GradCAM

    assert gradcam.explain(model, images, method=GradCAM).method == "gradcam"


def test_resume_without_an_earlier_run_still_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    mine = out / "chelsea.gradcam.282-tiger_cat.jpg"
    mine.write_bytes(b"the user's own file")
    assert explain_cli(str(EXAMPLES / "chelsea.jpg"), "--out", str(out), "--resume") == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err and mine.read_bytes() == b"the user's own file"


@pytest.mark.parametrize("options", [{"method": "eigencam"}, {"eigen_smooth": True}])
def test_eigen_methods_survive_non_finite_activations(options):
    """Found by the fuzz suite: the SVD raised on a NaN input (explain() already warns about the input)."""
    images = torch.full((1, 3, 32, 32), float("nan"))
    with pytest.warns(UserWarning, match="NaN or infinite"):
        maps = gradcam.explain(TinyCNN().eval(), images, **options).maps
    assert bool(torch.isfinite(maps).all())


@pytest.mark.parametrize("targets", [None, 4, np.int64(4), "top2"])
def test_an_empty_batch_gives_empty_maps(targets):
    """Found by the fuzz suite: an empty batch with a class target raised IndexError."""
    ex = gradcam.explain(TinyCNN().eval(), torch.randn(0, 3, 32, 32), "gradcam", None, targets)
    assert ex.maps.shape[0] == 0 and ex.maps.shape[-2:] == (32, 32)


def test_a_picture_that_cannot_be_drawn_fails_its_photo_in_one_line(tmp_path, monkeypatch, capsys):
    """Seen on a GPU: a drawing error in a writer thread ended the run with a traceback."""

    def broken_grid(*args, **kwargs):
        raise RuntimeError("Expected all tensors to be on the same device\nmore detail")

    import gradcam.pipeline.writer as writer

    monkeypatch.setattr(writer, "channel_grid", broken_grid)
    out = tmp_path / "out"
    assert explain_cli(str(EXAMPLES), "--out", str(out), "--per-channel", "4") == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("cannot draw outputs (RuntimeError: Expected all tensors") == 3
    assert manifest(out)["summary"] == {"images": 3, "ok": 0, "failed": 3}


def test_cam_on_an_empty_batch_gives_empty_maps():
    """Found by `make fuzz` (seed 3443129215): CAM's head check reduced an empty gradient and raised."""
    images = torch.zeros(0, 3, 32, 32)
    model = TinyCNN().eval()
    model.classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 10))  # a pooled linear head
    maps = gradcam.explain(model, images, "cam", "features").maps
    assert maps.shape[0] == 0
