"""One record, one writer: every engine's manifest validates against the shipped JSON Schema; the maps
kept in the record give back the maps explained; earlier manifests still read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import gradcam
from gradcam.apps.cli import main
from gradcam.pipeline.records import PhotoRecord, RunManifest, StoredMap, full_map, read_manifest_file
from manifest_check import assert_same_record, validate

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(*argv: str) -> int:
    return main(["explain", *argv, "--workers", "0", "--quiet"])


def folder_with_a_broken_photo(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("chelsea.jpg", "coffee.jpg"):
        (folder / name).write_bytes((EXAMPLES / name).read_bytes())
    (folder / "broken.jpg").write_text("not a jpeg")
    return folder


def test_the_local_manifest_validates_with_every_output_and_a_failure(tmp_path):
    out = tmp_path / "out"
    folder = folder_with_a_broken_photo(tmp_path)
    assert run(str(folder), "--out", str(out), "--save", "overlay,map,channels,guided", "--target", "top2") == 1
    data = validate(out / "results.json")
    assert data["version"] == 2 and data["engine"] == "local" and data["methods"] == ["gradcam"]
    assert data["layer"] == "bn2" and data["save"] == ["channels", "guided", "map", "overlay"]
    ok = [e for e in data["images"] if e["status"] == "ok"]
    assert len(ok) == 2 and {e["status"] for e in data["images"]} == {"ok", "error"}
    assert set(ok[0]["targets"][0]["files"]) == {"overlay", "map", "channels", "guided"}
    assert ok[0]["targets"][0]["files"]["overlay"].endswith(".jpg")


def test_the_default_outputs_are_a_jpeg_overlay_and_the_map_in_the_record(tmp_path):
    out = tmp_path / "out"
    assert run(str(EXAMPLES / "coffee.jpg"), "--out", str(out)) == 0
    entry = validate(out / "results.json")["images"][0]
    files = entry["targets"][0]["files"]
    assert set(files) == {"overlay"} and Image.open(files["overlay"]).format == "JPEG"
    stored = entry["targets"][0]["map"]
    assert stored["grid"] == "layer" and stored["shape"] == [7, 7] and len(stored["float16"]) < 200
    assert run(str(EXAMPLES / "coffee.jpg"), "--out", str(tmp_path / "png"), "--format", "png") == 0
    png = json.loads((tmp_path / "png" / "results.json").read_text())["images"][0]["targets"][0]["files"]["overlay"]
    assert png.endswith(".png") and Image.open(png).format == "PNG"
    assert run(str(EXAMPLES / "coffee.jpg"), "--out", str(tmp_path / "x"), "--save", "overlay,heat") == 2


def test_full_map_gives_back_the_explained_map_on_the_input_and_on_the_photo(tmp_path):
    out = tmp_path / "out"
    assert run(str(EXAMPLES / "coffee.jpg"), "--out", str(out), "--save", "overlay,map") == 0
    record = read_manifest_file(out / "results.json").images[0]
    saved = np.load(record.targets[0].files["map"])
    np.testing.assert_allclose(full_map(record).numpy(), saved, atol=2e-3)  # float16 at the layer's 7 x 7 grid
    on_photo = full_map(record, on="photo")
    assert tuple(on_photo.shape) == (400, 600)  # the photo's (height, width)
    assert float(on_photo[:, :100].max()) == 0.0  # the margin the centre crop cut away
    assert float(on_photo.max()) > 0.99


def test_maps_that_are_not_an_upsampled_layer_map_are_kept_at_the_input_size():
    final = torch.rand(224, 224)
    stored = StoredMap.best(torch.rand(7, 7), final)
    assert stored.grid == "input" and stored.shape == (224, 224)
    np.testing.assert_allclose(stored.tensor().numpy(), final.numpy(), atol=1e-3)
    raw = torch.rand(7, 7)
    final = gradcam.result.normalise(gradcam.result.upsample(raw[None, None], (224, 224)))[0, 0]
    assert StoredMap.best(raw, final).grid == "layer"


def test_a_batch_keeps_each_map_as_the_map_alone_would_be_kept():
    """The writer's maps are decided for a whole batch at once (PhotoWriter.prepare): the same choice of
    grid and the same float16 values as one map at a time, for maps of both kinds in one batch."""
    raw = torch.rand(3, 2, 7, 7)
    final = gradcam.result.normalise(gradcam.result.upsample(raw, (224, 224)))
    final[1, 0] = torch.rand(224, 224)  # not an upsampled layer map: kept at the input size
    batch = StoredMap.best_of_batch(raw, final)
    for b in range(3):
        for k in range(2):
            assert batch[b][k] == StoredMap.best(raw[b, k], final[b, k])
    assert batch[1][0].grid == "input" and batch[0][0].grid == batch[2][1].grid == "layer"


def test_records_round_trip_and_version_1_manifests_still_read(tmp_path):
    out = tmp_path / "out"
    assert run(str(EXAMPLES / "chelsea.jpg"), "--out", str(out)) == 0
    data = json.loads((out / "results.json").read_text())
    assert RunManifest.from_json(data).to_json() == data
    assert PhotoRecord.from_json(data["images"][0]).to_json() == data["images"][0]
    old = {"tool": "gradcam", "model": "efficientnet_lite0", "method": "gradcam", "layer": "bn2", "target": None,
           "images": [{"path": "a.jpg", "status": "ok", "predictions": [{"index": 1, "label": "x", "probability": 0.5}],
                       "targets": [{"index": 1, "label": "x", "score": 2.0, "files": {"overlay": "a.png"}}],
                       "layer": "bn2", "size": [3, 2]}]}  # fmt: skip
    manifest = RunManifest.from_json(old)
    assert manifest.methods == ["gradcam"] and manifest.images[0].targets[0].files == {"overlay": "a.png"}


def test_a_run_resumes_from_a_version_1_manifest(tmp_path):
    """An earlier session's results.json (``method``, no ``version``) is continued, not refused."""
    out = tmp_path / "out"
    assert run(str(EXAMPLES / "chelsea.jpg"), "--out", str(out)) == 0
    data = json.loads((out / "results.json").read_text())
    data.pop("version")
    data["method"] = data.pop("methods")[0]
    (out / "results.json").write_text(json.dumps(data))
    assert run(str(EXAMPLES / "chelsea.jpg"), str(EXAMPLES / "coffee.jpg"), "--out", str(out), "--resume") == 0
    assert validate(out / "results.json")["summary"] == {"images": 2, "ok": 2, "failed": 0}


def test_the_web_app_and_photo_save_write_the_same_manifest_form(tmp_path):
    pytest.importorskip("gradio")
    from gradcam.apps.web import explain_photo

    result = explain_photo(str(EXAMPLES / "coffee.jpg"), "efficientnet_lite0", ["gradcam", "gradcam++"], None,
                           "top2", 0.5, "jet", out_dir=tmp_path / "web")  # fmt: skip
    (manifest,) = [Path(f) for f in result.files if f.endswith(".json")]
    data = validate(manifest)
    assert data["engine"] == "web" and data["methods"] == ["gradcam", "gradcam++"]
    assert [e["method"] for e in data["images"]] == ["gradcam", "gradcam++"]
    assert len(result.overlays) == 4 and Path(result.grid).exists()
    written = gradcam.explain_image(EXAMPLES / "coffee.jpg", targets="top-2").save(tmp_path / "py")
    data = validate(written[-1])
    assert data["engine"] == "python" and len(data["images"][0]["targets"]) == 2


def test_one_photo_gives_the_same_record_from_the_command_line_the_web_app_and_python(tmp_path):
    pytest.importorskip("gradio")
    from gradcam.apps.web import explain_photo

    out = tmp_path / "cli"
    assert run(str(EXAMPLES / "coffee.jpg"), "--out", str(out), "--save", "overlay,map", "--format", "png") == 0
    cli = validate(out / "results.json")["images"][0]
    result = explain_photo(str(EXAMPLES / "coffee.jpg"), "efficientnet_lite0", ["gradcam"], None, "", 0.5, "jet",
                           per_channel=0, out_dir=tmp_path / "web")  # fmt: skip
    web = validate(Path(next(f for f in result.files if f.endswith(".json"))))["images"][0]
    assert_same_record(cli, web)
    python = validate(gradcam.explain_image(EXAMPLES / "coffee.jpg").save(tmp_path / "py", "coffee")[-1])["images"][0]
    assert_same_record(cli, python)
