"""The Ray engine on a local 2-CPU instance: same results as the local engine, nothing lost or doubled
when an actor dies, object-store style URIs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'gradcam[ray]')")

from gradcam.apps.cli import main  # noqa: E402
from gradcam.pipeline.options import RunOptions  # noqa: E402
from gradcam.pipeline.ray import explain_dataset  # noqa: E402
from manifest_check import assert_same_record  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# 2 CPUs: two half-CPU actors leave a CPU for Ray Data's own tasks (two 1-CPU actors would starve them)
POOL = {"actors": 2, "cpus_per_actor": 0.5}


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    # the workers import py: models as the driver does: tests/ on their path (tiny_models)
    tests = str(Path(__file__).resolve().parent)
    path = os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH", "")) if p)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
             runtime_env={"env_vars": {"PYTHONPATH": path}})  # fmt: skip
    yield
    ray.shutdown()


def photo_folder(root: Path, copies: int = 1, bad: bool = False) -> Path:
    folder = root / "photos"
    folder.mkdir()
    for photo in sorted(EXAMPLES.glob("*.jpg")):
        for i in range(copies):
            shutil.copy(photo, folder / f"{photo.stem}{i}.jpg")
    if bad:
        (folder / "broken.jpg").write_text("not a jpeg")
    return folder


def entries_by_name(manifest: Path) -> dict[str, dict]:
    return {Path(e["path"]).name: e for e in json.loads(manifest.read_text())["images"]}


def test_same_results_as_the_local_engine(tmp_path):
    folder = photo_folder(tmp_path, bad=True)
    local, distributed = tmp_path / "local", tmp_path / "ray"
    assert main(["explain", str(folder), "--out", str(local), "--workers", "0", "--quiet", "--per-channel", "2"]) == 1
    options = RunOptions(out=distributed, batch_size=2, per_channel=2)
    result = explain_dataset(str(folder), str(distributed), options=options, **POOL)
    assert (result.images, result.ok, result.failed) == (4, 3, 1)
    ours, theirs = entries_by_name(local / "results.json"), entries_by_name(distributed / "results.json")
    assert set(ours) == set(theirs)
    assert theirs["broken.jpg"]["status"] == "error" and "not a readable image" in theirs["broken.jpg"]["error"]
    for name, entry in ours.items():
        if entry["status"] != "ok":
            continue
        other = theirs[name]
        assert [p["index"] for p in entry["predictions"]] == [p["index"] for p in other["predictions"]]
        np.testing.assert_allclose(
            [p["probability"] for p in entry["predictions"]],
            [p["probability"] for p in other["predictions"]],
            atol=1e-5,
        )
        assert_same_record(entry, other)
    assert (distributed / "summary.json").exists() and list((distributed / "manifest").glob("*.parquet"))


def actor_processes() -> list[int]:
    """PIDs of live explain actors (Ray titles them ``ray::MapWorker(MapBatches(ExplainActor))``)."""
    import psutil

    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        command = " ".join(process.info["cmdline"] or [])
        if "ExplainActor" in command and process.info["pid"] != os.getpid():
            found.append(process.info["pid"])
    return found


def test_an_actor_killed_mid_run_loses_and_doubles_nothing(tmp_path):
    folder = photo_folder(tmp_path, copies=8)  # 24 photos
    out = tmp_path / "out"
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = explain_dataset(
                str(folder), str(out), options=RunOptions(out=out, batch_size=2), **POOL
            )
        except Exception as error:  # surfaced below
            outcome["error"] = error

    worker = threading.Thread(target=run)
    worker.start()
    killed = None
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and worker.is_alive():
        written = list(out.glob("*.gradcam.*.jpg"))
        alive = actor_processes()
        if written and alive:
            killed = alive[0]
            os.kill(killed, signal.SIGKILL)
            break
        time.sleep(0.2)
    worker.join(timeout=300)
    assert killed is not None, "no actor was seen alive while outputs were being written"
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    paths = [e.path for e in result.entries]
    assert len(paths) == len(set(paths)) == 24  # every photo exactly once
    assert result.ok == 24
    import pyarrow.parquet as pq

    table = pq.read_table(out / "manifest")
    assert table.num_rows == 24 and len(set(table.column("path").to_pylist())) == 24


def test_uri_input_and_output(tmp_path):
    folder = photo_folder(tmp_path)
    out_uri = f"file://{tmp_path / 'remote-out'}"
    result = explain_dataset(f"file://{folder}", out_uri, options=RunOptions(out=Path("."), batch_size=2), **POOL)
    assert result.ok == 3
    written = sorted(p.name for p in (tmp_path / "remote-out").glob("*.gradcam.*.jpg"))
    assert written == ["astronaut0.gradcam.560-football_helmet.jpg", "chelsea0.gradcam.282-tiger_cat.jpg",
                       "coffee0.gradcam.967-espresso.jpg"]  # fmt: skip
    assert len(list((tmp_path / "remote-out").glob("*.photo.jpg"))) == 3  # the thumbnails travel too
    assert result.entries is not None
    overlay = result.entries[0].targets[0].files["overlay"]
    assert overlay.startswith("file://")
    assert json.loads((tmp_path / "remote-out" / "summary.json").read_text())["ok"] == 3


def test_cli_engine_ray_and_no_silent_overwrite(tmp_path, capsys):
    folder = photo_folder(tmp_path)
    out = tmp_path / "out"
    argv = ["explain", str(folder), "--engine", "ray", "--actors", "1", "--cpus-per-actor", "0.5", "--out", str(out)]
    assert main(argv) == 0
    assert "3 explained, 0 failed" in capsys.readouterr().out
    assert main(argv) == 2
    assert "holds an earlier run; pass --resume" in capsys.readouterr().err
    shutil.copy(EXAMPLES / "coffee.jpg", folder / "extra.jpg")
    assert main([*argv, "--resume"]) == 0
    assert "4 explained, 0 failed" in capsys.readouterr().out
    import pyarrow.parquet as pq

    paths = pq.read_table(out / "manifest").column("path").to_pylist()
    assert len(paths) == len(set(paths)) == 4  # the 3 done photos carried over once, the new one added


def test_a_ray_dataset_as_input(tmp_path):
    folder = photo_folder(tmp_path)
    dataset = ray.data.read_binary_files(str(folder), include_paths=True)
    out = tmp_path / "out"
    result = explain_dataset(dataset, str(out), options=RunOptions(out=out, batch_size=2), **POOL)
    assert result.ok == 3
    assert sorted(p.name for p in out.glob("*.gradcam.*.jpg"))[0] == "astronaut0.gradcam.560-football_helmet.jpg"


def test_same_named_files_without_a_manifest_are_not_overwritten(tmp_path):
    """Issue 10, case 6: the local engine refused, Ray silently overwrote."""
    from gradcam.pipeline.options import UsageError

    folder = photo_folder(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    mine = out / "chelsea0.gradcam.282-tiger_cat.jpg"
    mine.write_bytes(b"the user's own file")
    with pytest.raises(UsageError, match="chelsea0.gradcam.282-tiger_cat.jpg exists; pass --overwrite"):
        explain_dataset(str(folder), str(out), options=RunOptions(out=out), **POOL)
    assert mine.read_bytes() == b"the user's own file"
    result = explain_dataset(str(folder), str(out), options=RunOptions(out=out, overwrite=True), **POOL)
    assert result.ok == 3 and mine.read_bytes() != b"the user's own file"


def test_an_interrupted_resume_keeps_the_earlier_manifest_and_resume_reads_a_local_run(tmp_path, monkeypatch):
    import gradcam.pipeline.ray as distributed

    folder = photo_folder(tmp_path)
    out = tmp_path / "out"
    assert main(["explain", str(folder / "chelsea0.jpg"), "--out", str(out), "--workers", "0", "--quiet"]) == 0
    local_overlay = next(out.glob("chelsea0.gradcam.*.jpg"))
    written_locally = local_overlay.stat().st_mtime_ns
    resumed = RunOptions(out=out, resume=True)
    result = explain_dataset(str(folder), str(out), options=resumed, **POOL)
    assert (result.images, result.ok) == (3, 3)
    assert local_overlay.stat().st_mtime_ns == written_locally  # the local run's photo was not redone
    assert next(out.glob("coffee0.gradcam.*.jpg")).stat().st_mtime_ns > written_locally
    before = sorted(p.name for p in (out / "manifest").iterdir())

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(distributed, "_swap_in", interrupted)
    (folder / "more.jpg").write_bytes((EXAMPLES / "coffee.jpg").read_bytes())
    with pytest.raises(KeyboardInterrupt):
        explain_dataset(str(folder), str(out), options=resumed, **POOL)
    assert sorted(p.name for p in (out / "manifest").iterdir()) == before
    monkeypatch.undo()
    result = explain_dataset(str(folder), str(out), options=resumed, **POOL)
    assert (result.images, result.ok) == (4, 4)


def test_text_prompts_on_ray_equal_the_local_engine(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    import torch

    torch.manual_seed(0)
    weights = tmp_path / "clip.pt"  # the same random weights in both engines
    torch.save(open_clip.create_model("ViT-S-32").state_dict(), weights)
    folder = photo_folder(tmp_path)
    local, distributed = tmp_path / "local", tmp_path / "ray"
    model = ["--model", "clip:ViT-S-32", "--weights", str(weights), "--prompt", "a cat", "--prompt", "a cup"]
    assert main(["explain", str(folder), *model, "--out", str(local), "--workers", "0", "--quiet"]) == 0
    options = RunOptions(out=distributed, batch_size=2, prompts=("a cat", "a cup"))
    pool = {"actors": 1, "cpus_per_actor": 0.5}
    result = explain_dataset(
        str(folder), str(distributed), model="clip:ViT-S-32", weights=str(weights), options=options, **pool
    )
    assert (result.images, result.ok) == (3, 3)
    ours, theirs = entries_by_name(local / "results.json"), entries_by_name(distributed / "results.json")
    for name, entry in ours.items():
        assert (
            [t["label"] for t in theirs[name]["targets"]]
            == [t["label"] for t in entry["targets"]]
            == ["a cat", "a cup"]
        )
        np.testing.assert_allclose(
            [p["similarity"] for p in entry["predictions"]], [p["similarity"] for p in theirs[name]["predictions"]],
            atol=1e-5,
        )  # fmt: skip
        assert_same_record(entry, theirs[name])


def test_one_photo_gives_the_same_record_locally_on_ray_and_in_the_web_app(tmp_path):
    """The three engines used to build their records three ways (the Ray manifest said layer null and
    dropped the smoothing keys; the web app's JSON had other key names); now one writer builds them all."""
    from manifest_check import validate

    folder = photo_folder(tmp_path, bad=True)
    local, distributed = tmp_path / "local", tmp_path / "ray"
    argv = ["explain", str(folder), "--out", str(local), "--workers", "0", "--quiet", "--save", "overlay,map"]
    assert main([*argv, "--format", "png"]) == 1
    options = RunOptions(out=distributed, batch_size=2, save=("overlay", "map"), format="png")
    explain_dataset(str(folder), str(distributed), options=options, **POOL)
    ours, theirs = validate(local / "results.json"), validate(distributed / "results.json")
    assert theirs["engine"] == "ray" and theirs["layer"] == ours["layer"] == "bn2"
    # the Ray manifest is filled like the local one (#25: it left model_source, started and finished empty);
    # the times differ and ``options`` records each run's own mechanics (--workers here, batch_size there)
    apart = ("engine", "images", "started", "finished", "options")
    assert {k: v for k, v in ours.items() if k not in apart} == {k: v for k, v in theirs.items() if k not in apart}
    assert theirs["model_source"] == ours["model_source"] and ours["model_source"]
    assert theirs["started"] and theirs["finished"] and theirs["kind"] == ours["kind"] == "photo"
    by_name = {Path(e["path"]).name: e for e in theirs["images"]}
    for entry in ours["images"]:
        other = by_name[Path(entry["path"]).name]
        if entry["status"] == "ok":
            assert_same_record(entry, other)
        else:
            assert other["status"] == "error" and other["error"] == entry["error"]
    pytest.importorskip("gradio")
    from gradcam.apps.web import explain_photo

    coffee = next(e for e in ours["images"] if e["path"].endswith("coffee0.jpg"))
    result = explain_photo(coffee["path"], "efficientnet_lite0", ["gradcam"], None, "", 0.5, "jet", per_channel=0,
                           out_dir=tmp_path / "web")  # fmt: skip
    web = validate(Path(next(f for f in result.files if f.endswith(".json"))))["images"][0]
    assert_same_record(coffee, web)


def test_an_audit_on_ray_finds_what_the_local_engine_finds(planted_shortcut, tmp_path):
    """`gradcam audit --engine ray`: the same maps, clusters, flags and photos as the local engine, and the
    same followed classes (--classes)."""
    from gradcam.apps.cli import main

    data = planted_shortcut
    common = ["audit", str(data.photos), "--weights", str(data.weights), "--labels", str(data.labels),
              "--truth", str(data.photos), "--quiet", "--batch-size", "8", "--classes", "stamped,cat"]  # fmt: skip
    assert main([*common, "--out", str(tmp_path / "local"), "--workers", "0"]) == 0
    assert main([*common, "--out", str(tmp_path / "ray"), "--engine", "ray", "--cpus-per-actor", "0.5"]) == 0
    local = json.loads((tmp_path / "local" / "audit.json").read_text())
    distributed = json.loads((tmp_path / "ray" / "audit.json").read_text())
    from manifest_check import validate_audit

    validate_audit(distributed)
    assert distributed["engine"] == "ray" and local["engine"] == "local"
    for report in (local, distributed):
        report.pop("engine"), report.pop("seconds")
    np.testing.assert_allclose(
        np.load(tmp_path / "local" / "maps.npy").astype(np.float32),
        np.load(tmp_path / "ray" / "maps.npy").astype(np.float32), atol=1e-3,
    )  # fmt: skip
    assert [c["name"] for c in distributed["classes"] if c["flagged"]] == ["stamped"]
    assert [f["name"] for f in distributed["followed"]] == ["stamped", "cat"]
    np.testing.assert_allclose(
        np.load(tmp_path / "local" / "followed_maps.npy").astype(np.float32),
        np.load(tmp_path / "ray" / "followed_maps.npy").astype(np.float32), atol=1e-3,
    )  # fmt: skip
    assert _rounded(local, 2) == _rounded(distributed, 2)


def _rounded(value, digits):
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v, digits) for v in value]
    return value


def _same_maps(local: Path, distributed: Path) -> None:
    ours, theirs = (
        json.loads((local / "results.json").read_text()),
        json.loads((distributed / "results.json").read_text()),
    )
    assert (
        ours["kind"] == theirs["kind"] and theirs["engine"] == "ray" and theirs["model_source"] == ours["model_source"]
    )
    by_name = {Path(e["path"]).name: e for e in theirs["images"]}
    assert len(by_name) == len(ours["images"])
    for entry in ours["images"]:
        other = by_name[Path(entry["path"]).name]
        assert other["status"] == entry["status"] == "ok"
        for s, t in zip(entry["targets"], other["targets"], strict=True):
            assert {k: Path(v).name for k, v in s["files"].items()} == {k: Path(v).name for k, v in t["files"].items()}
            if s["files"]["map"].endswith(".npy"):
                np.testing.assert_allclose(np.load(s["files"]["map"]), np.load(t["files"]["map"]), atol=1e-5)


def test_signals_and_volumes_on_ray_give_the_local_maps(tmp_path):
    """#25: `--engine ray` refused volumes and signals; now every kind runs on Ray, with the same maps."""
    folder = tmp_path / "signals"
    folder.mkdir()
    for i in range(3):
        np.save(folder / f"s{i}.npy", np.random.default_rng(i).normal(size=(2, 64)).astype(np.float32))
    model = ["--model", "py:tiny_models:TinySignal", "--quiet", "--counterfactual"]
    assert main(["explain", str(folder), "--out", str(tmp_path / "local"), *model]) == 0
    assert (
        main(["explain", str(folder), "--out", str(tmp_path / "ray"), "--engine", "ray", "--actors", "1", *model]) == 0
    )
    _same_maps(tmp_path / "local", tmp_path / "ray")
    assert json.loads((tmp_path / "ray" / "results.json").read_text())["counterfactual"] is True
    volumes = tmp_path / "volumes"
    volumes.mkdir()
    np.save(volumes / "v.npy", np.random.default_rng(5).normal(size=(8, 10, 12)).astype(np.float32))
    model = ["--model", "py:tiny_models:TinyVolume", "--quiet", "--eigen-smooth"]
    assert main(["explain", str(volumes), "--out", str(tmp_path / "vlocal"), *model]) == 0
    assert (
        main(["explain", str(volumes), "--out", str(tmp_path / "vray"), "--engine", "ray", "--actors", "1", *model])
        == 0
    )
    _same_maps(tmp_path / "vlocal", tmp_path / "vray")


def test_image_arrays_on_ray_give_the_local_maps(tmp_path):
    folder = tmp_path / "arrays"
    folder.mkdir()
    for i in range(2):
        np.save(folder / f"spec{i}.npy", np.random.default_rng(i).random((96, 128)).astype(np.float32))
    common = ["--kind", "image", "--quiet", "--save", "overlay,map"]
    assert main(["explain", str(folder), "--out", str(tmp_path / "local"), *common]) == 0
    assert main(["explain", str(folder), "--out", str(tmp_path / "ray"), "--engine", "ray", *common]) == 0
    _same_maps(tmp_path / "local", tmp_path / "ray")


def test_a_video_on_ray_gives_the_local_record(tmp_path):
    pytest.importorskip("av", reason="the video extra is not installed")
    from test_video import moving_square

    folder = tmp_path / "videos"
    folder.mkdir()
    moving_square(folder / "square.mp4", frames=8)
    common = ["--model", "py:test_video:Brightness", "--target", "1", "--quiet", "--every", "2", "--tint", "heat"]
    assert main(["explain", str(folder), "--out", str(tmp_path / "local"), *common]) == 0
    assert main(["explain", str(folder), "--out", str(tmp_path / "ray"), "--engine", "ray", *common]) == 0
    ours, theirs = (json.loads((tmp_path / side / "results.json").read_text()) for side in ("local", "ray"))
    assert theirs["kind"] == ours["kind"] == "video" and theirs["options"] == ours["options"] == {
        "tint": "heat", "video.every": 2}  # fmt: skip
    (mine,), (yours,) = ours["images"], theirs["images"]
    assert mine["frames"] == yours["frames"] == 4 and mine["fps"] == yours["fps"]
    assert abs(mine["targets"][0]["score"] - yours["targets"][0]["score"]) < 1e-4
    assert {k: Path(v).name for k, v in mine["targets"][0]["files"].items()} == {
        k: Path(v).name for k, v in yours["targets"][0]["files"].items()
    }
