"""Volumes and signals from the command line (issue 14): .npy and NIfTI in, the map back as an array in the
same space, a slice montage or a signal plot, a record that validates against the manifest schema."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import gradcam
from gradcam.apps.cli import main
from manifest_check import validate
from tiny_models import TinySignal, TinyVolume

VOLUME = "py:tiny_models:TinyVolume"
SIGNAL = "py:tiny_models:TinySignal"


def _expected(model: torch.nn.Module, values: np.ndarray) -> np.ndarray:
    ex = gradcam.explain(model, torch.from_numpy(values.astype(np.float32))[None])
    return ex.maps[0, 0].numpy()


def test_a_volume_npy_gives_its_map_a_montage_and_a_record(tmp_path, capsys):
    volume = np.random.default_rng(0).normal(size=(20, 24, 28)).astype(np.float32)
    np.save(tmp_path / "scan.npy", volume)
    out = tmp_path / "out"
    assert main(["explain", str(tmp_path / "scan.npy"), "--model", VOLUME, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "a volume (20, 24, 28)" in printed and "1 explained, 0 failed" in printed
    manifest = validate(out / "results.json")
    (record,) = manifest["images"]
    assert record["kind"] == "volume" and record["shape"] == [20, 24, 28] and record["layer"] == "features"
    files = record["targets"][0]["files"]
    saved = np.load(files["map"])
    assert saved.shape == (20, 24, 28)
    np.testing.assert_allclose(saved, _expected(TinyVolume(), volume[None]), atol=1e-6)
    montage = Image.open(files["montage"])
    assert montage.width > 500 and montage.height > 500  # 16 slices of 160 px, 4 x 4, with a footer
    pixels = np.asarray(montage.convert("RGB"), dtype=np.float32)
    assert pixels.std() > 20
    page = (out / "index.html").read_text()
    assert "montage" in page and "volumes and signals as stored" in page and "centre crop" not in page
    assert main(["explain", str(tmp_path / "scan.npy"), "--model", VOLUME, "--out", str(out)]) == 2  # no overwrite


def test_a_nifti_volume_comes_back_in_its_own_space(tmp_path):
    nibabel = pytest.importorskip("nibabel")
    volume = np.random.default_rng(1).normal(size=(18, 22, 16)).astype(np.float32)
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    affine[:3, 3] = [-10, 20, 5]
    nibabel.save(nibabel.Nifti1Image(volume, affine), str(tmp_path / "brain.nii.gz"))
    out = tmp_path / "out"
    assert main(["explain", str(tmp_path / "brain.nii.gz"), "--model", VOLUME, "--out", str(out), "--quiet"]) == 0
    record = validate(out / "results.json")["images"][0]
    files = record["targets"][0]["files"]
    assert files["map"].endswith(".map.nii.gz") and Path(files["montage"]).is_file()
    written = nibabel.load(files["map"])
    np.testing.assert_array_equal(written.affine, affine)
    np.testing.assert_allclose(written.get_fdata(), _expected(TinyVolume(), volume[None]), atol=1e-6)
    assert Path(files["map"]).name.startswith("brain.gradcam.")  # the key drops .nii.gz


def test_a_signal_gives_its_map_and_a_plot(tmp_path):
    t = np.linspace(0, 8 * np.pi, 300)
    signal = np.stack([np.sin(t), np.cos(3 * t)]).astype(np.float32)
    np.save(tmp_path / "ecg.npy", signal)
    out = tmp_path / "out"
    assert main(["explain", str(tmp_path / "ecg.npy"), "--model", SIGNAL, "--target", "top2", "--out", str(out),
                 "--quiet"]) == 0  # fmt: skip
    record = validate(out / "results.json")["images"][0]
    assert record["kind"] == "signal" and record["shape"] == [2, 300] and len(record["targets"]) == 2
    files = record["targets"][0]["files"]
    saved = np.load(files["map"])
    assert saved.shape == (300,)
    np.testing.assert_allclose(saved, _expected(TinySignal(), signal), atol=1e-6)
    plot = Image.open(files["plot"])
    assert plot.width >= 900 and np.asarray(plot.convert("L"), dtype=np.float32).std() > 20


def test_bad_array_files_are_one_line_each_and_the_rest_is_explained(tmp_path, capsys):
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with open(tmp_path / "huge.npy", "wb") as handle:  # a header that promises 2**40 values, and no values
        np.lib.format.write_array_header_1_0(handle, {"descr": "<f4", "fortran_order": False, "shape": (1 << 14,) * 3})
    (tmp_path / "text.npy").write_text("not numpy")
    np.save(tmp_path / "good.npy", np.zeros((8, 8, 8), np.float32))
    names = ["objects.npy", "huge.npy", "text.npy", "good.npy"]
    code = main(["explain", *[str(tmp_path / n) for n in names], "--model", VOLUME, "--out", str(tmp_path / "o")])
    error = capsys.readouterr().err
    assert code == 1
    assert "objects.npy: an array of Python objects" in error and "never unpickled" in error
    assert "huge.npy" in error and "crop or downsample it" in error
    assert "text.npy: not a readable .npy file" in error
    statuses = [r["status"] for r in validate(tmp_path / "o" / "results.json")["images"]]
    assert statuses == ["error", "error", "error", "ok"]


def test_own_models_by_python_path_or_a_trusted_whole_model_file(tmp_path, capsys):
    np.save(tmp_path / "v.npy", np.zeros((8, 8, 8), np.float32))
    torch.save(TinyVolume(), tmp_path / "whole.pt")
    argv = ["explain", str(tmp_path / "v.npy"), "--out", str(tmp_path / "o"), "--quiet", "--overwrite"]
    assert main([*argv, "--model", str(tmp_path / "whole.pt")]) == 2
    assert "--trust-weights" in capsys.readouterr().err  # unpickling runs code: only when trusted
    assert main([*argv, "--model", str(tmp_path / "whole.pt"), "--trust-weights"]) == 0
    torch.save(TinyVolume().state_dict(), tmp_path / "state.pt")
    assert main([*argv, "--model", VOLUME, "--weights", str(tmp_path / "state.pt")]) == 0
    for spec, message in [("py:tiny_models", "write it as py:PACKAGE.MODULE:FACTORY"),
                          ("py:no_such_module:Net", "cannot import no_such_module"),
                          ("py:tiny_models:Nothing", "tiny_models has no Nothing"),
                          ("py:json:loads", "loads() failed (TypeError"),
                          ("py:collections:OrderedDict", "gave a OrderedDict, not a torch module")]:  # fmt: skip
        assert main([*argv, "--model", spec]) == 2
        assert message in capsys.readouterr().err


def test_mixing_arrays_and_photos_is_refused(tmp_path, capsys):
    np.save(tmp_path / "v.npy", np.zeros((8, 8, 8), np.float32))
    photo = Path(gradcam.__file__).parent / "examples" / "coffee.jpg"
    assert main(["explain", str(tmp_path / "v.npy"), str(photo), "--out", str(tmp_path / "o")]) == 2
    assert "separate" in capsys.readouterr().err


def test_an_existing_map_is_never_replaced_without_overwrite(tmp_path, capsys):
    np.save(tmp_path / "v.npy", np.ones((8, 8, 8), np.float32))
    out = tmp_path / "out"
    out.mkdir()
    mine = out / "v.gradcam.0-0.map.npy"  # a file of the user's, where the map would go
    np.save(mine, np.arange(3))
    assert main(["explain", str(tmp_path / "v.npy"), "--model", VOLUME, "--target", "0", "--out", str(out)]) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err
    np.testing.assert_array_equal(np.load(mine), np.arange(3))


def test_folders_and_globs_of_arrays_keep_their_names_apart(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / "scans" / folder).mkdir(parents=True)
        np.save(tmp_path / "scans" / folder / "scan.npy", np.ones((8, 8, 8), np.float32))
    out = tmp_path / "out"
    assert main(["explain", str(tmp_path / "scans"), "--model", VOLUME, "--out", str(out), "--quiet"]) == 0
    records = validate(out / "results.json")["images"]
    assert [r["status"] for r in records] == ["ok", "ok"]
    maps = sorted(Path(r["targets"][0]["files"]["map"]).relative_to(out).as_posix() for r in records)
    assert maps[0].startswith("a/scan.gradcam.") and maps[1].startswith("b/scan.gradcam.")
    assert main(["explain", str(tmp_path / "scans" / "*" / "*.npy"), "--model", VOLUME, "--out",
                 str(tmp_path / "out2"), "--quiet"]) == 0  # fmt: skip
    assert len(validate(tmp_path / "out2" / "results.json")["images"]) == 2


def test_an_interrupted_array_run_resumes_where_it_stopped(tmp_path, monkeypatch, capsys):
    """The manifest is written after every file, so an interrupted run leaves what it did; --resume keeps
    those files and explains the rest (and refuses to continue with another method)."""
    import gradcam.pipeline.arrays as arrays_module

    for index in range(3):
        np.save(tmp_path / f"s{index}.npy", np.random.default_rng(index).normal(size=(2, 64)).astype(np.float32))
    out = tmp_path / "out"
    argv = ["explain", *(str(tmp_path / f"s{i}.npy") for i in range(3)), "--model", SIGNAL, "--out", str(out),
            "--quiet"]  # fmt: skip
    real = arrays_module.explain_array
    explained: list[str] = []

    def interrupted_at_the_third(bundle, path, key, options):
        if path.name == "s2.npy":
            raise KeyboardInterrupt
        explained.append(path.name)
        return real(bundle, path, key, options)

    monkeypatch.setattr(arrays_module, "explain_array", interrupted_at_the_third)
    assert main(argv) == 130
    partial = validate(out / "results.json")
    assert [Path(r["path"]).name for r in partial["images"]] == ["s0.npy", "s1.npy"] and partial["finished"] is None
    assert main([*argv, "--resume", "--method", "hirescam"]) == 2
    assert "--resume: the earlier run" in capsys.readouterr().err
    explained.clear()
    monkeypatch.setattr(arrays_module, "explain_array", lambda *a: explained.append(a[1].name) or real(*a))
    assert main([*argv, "--resume"]) == 0
    assert explained == ["s2.npy"]  # the first two were kept
    final = validate(out / "results.json")
    assert [Path(r["path"]).name for r in final["images"]] == ["s0.npy", "s1.npy", "s2.npy"]
    assert final["finished"] is not None and (out / "index.html").exists()


class IndexingVolume(torch.nn.Module):
    """A volume model whose forward indexes its input's depth axis: a photo-shaped probe raises IndexError,
    as the issue's Net3D did (#27 item 12: counting classes fed it a photo)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU())
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dim() == 5, "(B, 1, D, H, W)"
        return self.head(self.features(x).mean(dim=(2, 3, 4)))


def test_labels_of_a_volume_model_are_counted_on_a_volume(tmp_path, capsys):
    np.save(tmp_path / "scan.npy", np.random.default_rng(0).normal(size=(8, 10, 12)).astype(np.float32))
    (tmp_path / "classes.txt").write_text("healthy\ntumour\n")
    out = tmp_path / "out"
    argv = ["explain", str(tmp_path / "scan.npy"), "--model", "py:test_arrays:IndexingVolume", "--labels",
            str(tmp_path / "classes.txt"), "--out", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    record = validate(out / "results.json")["images"][0]
    assert record["predictions"][0]["label"] in ("healthy", "tumour")
    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    assert main([*argv[:5], str(tmp_path / "three.txt"), "--out", str(tmp_path / "o2"), "--quiet"]) == 1
    assert "3 class names for a model with 2" in capsys.readouterr().err
