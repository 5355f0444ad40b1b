"""The third hostile pass (#26): memory bounded by what the work can cost, one line per bad input, the rest
of the run goes on. Each case failed before its fix."""

from __future__ import annotations

import json
import resource
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from gradcam.apps.cli import main
from gradcam.io.models import ModelLoadError, load_model, read_labels
from manifest_check import validate

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_labels_file_naming_a_trillionth_class_is_refused_before_allocating(tmp_path):
    """23 bytes grew memory until MemoryError."""
    bomb = tmp_path / "labels.json"
    bomb.write_text('{"1000000000000": "x"}')
    before = _peak_mb()
    with pytest.raises(ModelLoadError, match="at most 1,000,000 classes") as refused:
        read_labels(bomb)
    assert "\n" not in str(refused.value) and _peak_mb() - before < 50


def test_deeply_nested_labels_are_one_line(tmp_path):
    nested = tmp_path / "labels.json"
    nested.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ModelLoadError, match="nested too deeply|not a JSON list"):
        read_labels(nested)


def test_an_expanded_head_is_refused_before_building_it(tmp_path, capsys):
    """A 13.7 MB state dict whose head is an expanded (10^7, 512) tensor asked for a 51 GB head, and the
    error blamed --device."""
    state = torchvision.models.resnet18().state_dict()
    state["fc.weight"] = torch.zeros(1, 512).expand(10_000_000, 512)
    state["fc.bias"] = torch.zeros(1).expand(10_000_000)
    path = tmp_path / "bomb.pth"
    torch.save(state, path)
    assert path.stat().st_size < 60_000_000
    before = _peak_mb()
    with pytest.raises(ModelLoadError, match="expanded tensor") as refused:
        load_model("resnet18", str(path))
    assert "\n" not in str(refused.value) and _peak_mb() - before < 500
    code = main(["explain", str(EXAMPLES / "coffee.jpg"), "--model", "resnet18", "--weights", str(path),
                 "--out", str(tmp_path / "out")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "--weights" in err and "--device" not in err


def test_a_real_fine_tuned_head_still_loads(tmp_path):
    model = torchvision.models.resnet18(num_classes=7)
    torch.save(model.state_dict(), tmp_path / "ft.pth")
    with pytest.warns(UserWarning, match="7-class head"):
        assert load_model("resnet18", str(tmp_path / "ft.pth")).model.fc.out_features == 7


def test_a_volume_bomb_in_a_folder_is_one_line_and_the_rest_is_explained(tmp_path, capsys):
    """#26 item 5: in a folder [a_ok, b_bomb, c_ok], c was never processed and no index.html was written."""
    folder = tmp_path / "scans"
    folder.mkdir()
    for name in ("a_ok", "c_ok"):
        np.save(folder / f"{name}.npy", np.random.default_rng(0).normal(size=(8, 10, 12)).astype(np.float32))
    with open(folder / "b_bomb.npy", "wb") as handle:  # a header claiming 4 x 10^9 values, no data behind it
        np.lib.format.write_array_header_1_0(handle, {"descr": "<f4", "fortran_order": False,
                                                      "shape": (1600, 1600, 1600)})  # fmt: skip
    (folder / "d_short.npy").write_bytes((folder / "a_ok.npy").read_bytes()[:200])  # a header, cut values
    out = tmp_path / "out"
    before = _peak_mb()
    code = main(["explain", str(folder), "--model", "py:tiny_models:TinyVolume", "--out", str(out), "--quiet"])
    assert code == 1 and _peak_mb() - before < 500
    lines = [line for line in capsys.readouterr().err.splitlines() if "b_bomb" in line or "d_short" in line]
    assert len(lines) == 2 and all("Traceback" not in line for line in lines)
    records = {Path(r["path"]).name: r for r in validate(out / "results.json")["images"]}
    assert records["a_ok.npy"]["status"] == records["c_ok.npy"]["status"] == "ok"
    assert records["b_bomb.npy"]["status"] == records["d_short.npy"]["status"] == "error"
    assert (out / "index.html").exists()


def test_a_nifti_bomb_is_refused_from_its_header(tmp_path, capsys):
    """#26 item 5: a 1 MB .nii.gz of 600^3 voxels reached 2.8 GB; the voxels are bounded like a photo's pixels
    (--max-megapixels, millions of values for volumes), from the header, before a value is decompressed."""
    nibabel = pytest.importorskip("nibabel")
    folder = tmp_path / "scans"
    folder.mkdir()
    nibabel.save(nibabel.Nifti1Image(np.zeros((600, 600, 600), np.uint8), np.eye(4)), str(folder / "b_bomb.nii.gz"))
    nibabel.save(nibabel.Nifti1Image(np.random.default_rng(0).random((10, 12, 14)).astype(np.float32), np.eye(4)),
                 str(folder / "a_ok.nii.gz"))  # fmt: skip
    assert (folder / "b_bomb.nii.gz").stat().st_size < 2_000_000
    out = tmp_path / "out"
    before = _peak_mb()
    code = main(["explain", str(folder), "--model", "py:tiny_models:TinyVolume", "--out", str(out), "--quiet"])
    assert code == 1 and _peak_mb() - before < 300
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "b_bomb" in line]
    assert "216,000,000 values" in line and "--max-megapixels" in line
    records = {Path(r["path"]).name: r["status"] for r in validate(out / "results.json")["images"]}
    assert records == {"a_ok.nii.gz": "ok", "b_bomb.nii.gz": "error"}


def test_a_nan_in_the_weights_fails_each_photo_in_one_line_and_the_json_stays_strict(tmp_path, capsys):
    """#26 item 9: a NaN weight gave exit 0, `probability: NaN` in results.json (not JSON) and no cards."""
    model = torchvision.models.resnet18(num_classes=4)
    with torch.no_grad():
        model.fc.bias[2] = float("nan")
    torch.save(model.state_dict(), tmp_path / "nan.pth")
    out = tmp_path / "out"
    argv = ["explain", str(EXAMPLES), "--model", "resnet18", "--weights", str(tmp_path / "nan.pth"), "--out",
            str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("warning: the model's scores are NaN") == 1 and "NaN or infinite" in err
    manifest = json.loads((out / "results.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert all(record["status"] == "error" for record in manifest["images"])


def test_manifests_never_hold_nan():
    from gradcam.pipeline.manifest import strict_json, write_json_atomic

    assert strict_json({"a": [1.0, float("nan"), {"b": float("inf")}]}) == {"a": [1.0, None, {"b": None}]}
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "x.json"
        write_json_atomic({"p": float("nan")}, target)
        assert json.loads(target.read_text()) == {"p": None}


def _start(folder: Path, out: Path, *extra: str):
    import subprocess
    import sys

    command = [sys.executable, "-m", "gradcam", "explain", str(folder), "--out", str(out), "--quiet",
               "--batch-size", "2", *extra]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_outputs(out: Path, count: int, process, limit: float = 120.0) -> None:
    import time

    start = time.monotonic()
    while len(list(out.rglob("*.gradcam.*.jpg"))) < count:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() - start < limit
        time.sleep(0.05)


def _photos(tmp_path: Path, count: int) -> Path:
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    source = Image.open(EXAMPLES / "chelsea.jpg")
    for i in range(count):
        source.rotate(i * 3).save(folder / f"p{i:03d}.jpg")
    return folder


@pytest.mark.parametrize("replicas", ["1", "2"])
def test_sigterm_stops_like_ctrl_c_and_resume_finishes(tmp_path, replicas):
    """#26 item 8: SIGTERM left no manifest and .tmp files; it now records what was done (exit 143)."""
    import signal

    folder, out = _photos(tmp_path, 40), tmp_path / "out"
    process = _start(folder, out, "--replicas", replicas)
    _wait_for_outputs(out, 4, process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert "terminate called" not in err and "Traceback" not in err
    data = json.loads((out / "results.json").read_text())
    assert data["finished"] is None and 0 < data["summary"]["ok"] < 40
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    again = _start(folder, out, "--resume", "--replicas", replicas)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    assert json.loads((out / "results.json").read_text())["summary"] == {"images": 40, "ok": 40, "failed": 0}


_ABANDONED_SHARE = """
import os, socket, sys, time
from multiprocessing import resource_sharer
if sys.argv[1] == "worker":
    from gradcam.pipeline.replicas import decoding_worker
    decoding_worker(0)
reader, _ = os.pipe()
resource_sharer.DupFd(reader)  # a tensor's storage being handed to the main process
peer = socket.socket(socket.AF_UNIX)
peer.connect(resource_sharer._resource_sharer._address)
peer.close()  # the main process stopped by SIGTERM while fetching it
time.sleep(0.5)
"""


def test_a_decoding_worker_stays_quiet_when_the_stopped_run_abandons_a_batch():
    """CI, session 13: SIGTERM during a run printed a worker's BrokenPipeError traceback (its resource
    sharer found the main process gone) under the one-line "interrupted" message."""
    import subprocess
    import sys

    def stderr(role: str) -> str:
        return subprocess.run([sys.executable, "-c", _ABANDONED_SHARE, role], capture_output=True, text=True,
                              timeout=60, check=True).stderr  # fmt: skip

    assert "BrokenPipeError" in stderr("plain")  # what a worker printed before
    assert stderr("worker") == ""


def test_a_decoding_worker_passes_every_other_error_on(monkeypatch):
    from gradcam.pipeline.replicas import decoding_worker

    seen = []
    monkeypatch.setattr("sys.excepthook", lambda kind, error, trace: seen.append(kind))
    decoding_worker(0)
    import sys

    try:
        raise BrokenPipeError("a pipe of the user's own")
    except BrokenPipeError as error:
        sys.excepthook(BrokenPipeError, error, error.__traceback__)
    sys.excepthook(ValueError, ValueError("x"), None)
    assert seen == [BrokenPipeError, ValueError]


def test_sigkill_before_the_first_manifest_then_resume_redoes_and_cleans(tmp_path):
    """#26 item 8: killed before its first manifest, a run left outputs that --resume then reported as
    failures ("exists; pass --overwrite") while its .tmp files survived. The manifest is now written before
    the first photo, so the outputs are known to be the run's (a user's own file is still never replaced)."""
    import signal

    folder, out = _photos(tmp_path, 24), tmp_path / "out"
    process = _start(folder, out)
    _wait_for_outputs(out, 2, process)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    killed = json.loads((out / "results.json").read_text())
    assert killed["finished"] is None and killed["summary"]["ok"] < 24
    stale = out / ".p000.gradcam.282-tiger_cat.jpg.999-1.tmp"
    stale.write_bytes(b"half")  # what a write cut by SIGKILL leaves
    again = _start(folder, out, "--resume")
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    assert json.loads((out / "results.json").read_text())["summary"] == {"images": 24, "ok": 24, "failed": 0}
    assert not stale.exists() and not [p for p in out.rglob("*") if ".tmp" in p.name]


@pytest.mark.parametrize(
    "source, spec, said",
    [
        (None, "py:./mynet:Net", "not a module name"),
        (None, "py:../x/mynet.py:Net", "not a module name"),
        ("def broken(:\n", "py:{m}:Net", "SyntaxError"),
        ("raise RuntimeError('no GPU here')\n", "py:{m}:Net", "RuntimeError: no GPU here"),
        ("import sys\nsys.exit(3)\n", "py:{m}:Net", "SystemExit"),
        ("import torch\nclass Net(torch.nn.Module):\n    def forward(self, x):\n        return x\n", "py:{m}:Net",
         "without parameters"),
        ("import sys\ndef Net():\n    sys.exit('bye')\n", "py:{m}:Net", "Net() failed (SystemExit: bye)"),
    ],
)  # fmt: skip
def test_a_py_spec_that_cannot_build_is_one_line(tmp_path, monkeypatch, capsys, source, spec, said):
    module = f"user_model_{abs(hash((source, spec))) % 10**8}"
    if source is not None:
        (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    code = main(["explain", str(EXAMPLES / "coffee.jpg"), "--model", spec.format(m=module), "--out",
                 str(tmp_path / "out")])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and said in err[0] and "Traceback" not in err[0], err


def test_a_superscript_target_is_one_line(tmp_path, capsys):
    assert main(["explain", str(EXAMPLES / "coffee.jpg"), "--target", "²", "--out", str(tmp_path / "o")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("gradcam: error: --target")


@pytest.mark.parametrize(
    "content, said",
    [("[1, 2, 3]", "expected COCO"), ("[" * 50_000 + "]" * 50_000, "nested too deeply"),
     ('{"images": [{"id": 1, "file_name": "coffee.jpg"}], '
      '"annotations": [{"image_id": 1, "bbox": [0, 0, Infinity, 5]}]}', "finite")],
)  # fmt: skip
def test_bad_box_files_are_one_line_for_evaluate_and_audit(tmp_path, capsys, content, said):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(content)
    photo = str(EXAMPLES / "coffee.jpg")
    assert main(["evaluate", photo, "--boxes", str(boxes), "--methods", "gradcam", "--out", str(tmp_path / "e")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert "--boxes" in line and said in line
    code = main(["audit", photo, "--boxes", str(boxes), "--out", str(tmp_path / "a"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "--boxes" in err[-1] and "Traceback" not in "\n".join(err)


def test_serve_on_a_busy_port_is_one_line(capsys):
    pytest.importorskip("gradio")
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"gradcam: error: --port {port}: cannot listen")


def test_audit_compare_refuses_a_model_of_other_classes(tmp_path, capsys):
    model = torchvision.models.resnet18(num_classes=10)
    torch.save(model.state_dict(), tmp_path / "ten.pth")
    argv = ["audit", str(EXAMPLES / "coffee.jpg"), "--compare", "resnet18", "--compare-weights",
            str(tmp_path / "ten.pth"), "--out", str(tmp_path / "a"), "--quiet"]  # fmt: skip
    assert main(argv) == 2
    assert "has 10 classes and efficientnet_lite0 1000" in capsys.readouterr().err


def test_wrapping_methods_fail_like_the_others_on_a_bad_input():
    """explain(model, bad, "sess") raised a bare RuntimeError where other methods raise ForwardError."""
    from gradcam import explain
    from gradcam.hooks import ForwardError

    model = torchvision.models.resnet18().eval()
    for bad in (torch.zeros(1, 1, 64, 64), torch.zeros(1, 3, 64, 64, dtype=torch.float64)):
        for method in ("gradcam", "sess", "fullgrad"):
            with pytest.raises(ForwardError) as failed:
                explain(model, bad, method, "layer4")
            assert "\n" not in str(failed.value)


def test_label_files_of_every_form_still_read(tmp_path):
    """The bounds above must not break the ordinary files: lines, a JSON list, a JSON object with a gap."""
    (tmp_path / "names.txt").write_text("cat\ndog\n\n")
    (tmp_path / "list.json").write_text('["cat", "dog"]')
    (tmp_path / "object.json").write_text('{"0": "cat", "2": "cup"}')
    assert read_labels(tmp_path / "names.txt") == ["cat", "dog"]
    assert read_labels(tmp_path / "list.json") == ["cat", "dog"]
    assert read_labels(tmp_path / "object.json") == ["cat", "1", "cup"]
    (tmp_path / "many.txt").write_text("x\n" * 1_000_001)
    with pytest.raises(ModelLoadError, match="1,000,001 names"):
        read_labels(tmp_path / "many.txt")
