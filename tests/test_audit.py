"""`gradcam audit` (issue 16): the measures by hand, the clustering, the flags, the planted shortcut found
from the command line, comparisons, boxes, wrong predictions, bad input and the page."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import gradcam
from conftest import audit_planted
from gradcam.apps.cli import main
from gradcam.audits import AuditError
from gradcam.audits.clusters import spectral_clusters
from gradcam.audits.findings import FLAG_CORNER, flags
from gradcam.audits.measure import box_mask, energy_shares, grid_maps, rank_correlation, top_share_iou
from gradcam.io.images import Geometry
from gradcam.io.models import load_model, read_labels, with_labels
from manifest_check import validate_audit as validate

CLEAN = ["cat", "coffee", "astronaut", "rocket", "motorcycle"]


# --- the measures, by hand -------------------------------------------------------------------------------------


def test_energy_shares_by_hand():
    maps = torch.zeros(3, 16, 16)
    maps[0, 12:, 12:] = 1.0  # all in the bottom-right corner (a corner is 4 x 4 of 16 x 16)
    maps[1, 7:9, 7:9] = 2.0  # all in the middle
    maps[1, 0, 0] = 8.0  # ... and as much again in the top-left pixel, on the border
    boxes = torch.zeros(3, 16, 16)
    boxes[1, 6:10, 6:10] = 1  # photo 1's box holds the middle blob: 8 of its 16
    shares = energy_shares(maps, boxes)
    assert shares.corners[0].tolist() == [0, 0, 0, 1]
    assert shares.border[0] == pytest.approx(12 / 16)  # the outer 2 cells of the 4 x 4 corner: 16 - 4 = 12
    assert shares.corners[1, 0] == pytest.approx(0.5) and shares.border[1] == pytest.approx(0.5)
    assert shares.in_boxes[1] == pytest.approx(0.5)
    assert math.isnan(shares.in_boxes[0]) and shares.empty.tolist() == [False, False, True]
    assert math.isnan(shares.border[2])
    assert shares.peak[1].tolist() == [pytest.approx(0.5 / 16), pytest.approx(0.5 / 16)]
    grids = grid_maps(maps, 4)
    assert grids[0, 3, 3] == pytest.approx(1) and grids[0].sum() == pytest.approx(1) and grids[2].sum() == 0


def test_box_mask_follows_the_resize_and_crop():
    # a 400 x 200 photo, shorter side resized to 100 (200 x 100), centre crop 100 x 100 starting at x = 50
    geometry = Geometry(original=(200, 400), resized=(100, 200), crop_origin=(0, 50), crop=(100, 100))
    mask = box_mask([[100, 0, 200, 100]], (400, 200), geometry, (100, 100))  # x 100..200 -> 50..100 -> 0..50
    assert mask[:50, :50].all() and mask.sum() == 50 * 50
    outside = box_mask([[0, 0, 80, 80]], (400, 200), geometry, (100, 100))  # cut away by the crop
    assert outside.sum() == 0


def test_rank_correlation_and_top_iou_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(5, 8, 8, generator=generator)
    b = torch.rand(5, 8, 8, generator=generator)
    b[:, :2] = 0  # ties
    a[0] = b[0]
    mine = rank_correlation(a, b)
    for row in range(5):
        assert float(mine[row]) == pytest.approx(stats.spearmanr(a[row].flatten(), b[row].flatten())[0], abs=1e-6)
    assert top_share_iou(a, a).tolist() == [1.0] * 5
    assert float(rank_correlation(a[:1], -a[:1])) == pytest.approx(-1)
    disjoint = torch.zeros(1, 10)
    other = torch.zeros(1, 10)
    disjoint[0, 0], other[0, 9] = 1, 1
    assert float(top_share_iou(disjoint, other, 0.1)) == 0


def _blobs(centres, count, generator, size=16):
    y, x = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    maps = []
    for i in range(count):
        cy, cx = centres[i % len(centres)]
        cy, cx = (
            cy + 0.6 * float(torch.randn(1, generator=generator)),
            cx + 0.6 * float(torch.randn(1, generator=generator)),
        )
        maps.append(torch.exp(-((y - cy) ** 2 + (x - cx) ** 2) / 8))
    return grid_maps(torch.stack(maps), size)


def test_spectral_clusters_find_the_strategies_and_their_number():
    generator = torch.Generator().manual_seed(1)
    centred = _blobs([(8, 8)], 30, generator)
    corner = _blobs([(14, 14)], 12, generator)
    labels = spectral_clusters(torch.cat([centred, corner]))
    assert labels[:30].unique().tolist() == [0] and labels[30:].unique().tolist() == [1]
    assert spectral_clusters(_blobs([(8, 8)], 40, generator)).unique().tolist() == [0]  # one strategy: one cluster
    three = torch.cat([_blobs([c], 15, generator) for c in [(3, 3), (3, 13), (13, 8)]])
    assert len(spectral_clusters(three).unique()) == 3
    big = torch.cat([_blobs([(8, 8)], 300, generator), _blobs([(2, 14)], 100, generator)])
    sampled = spectral_clusters(big, sample_size=120)  # clustered on a sample, the rest joins the nearest mean
    assert sampled[:300].unique().tolist() == [0] and sampled[300:].unique().tolist() == [1]


def _figures(border=0.3, corner=0.05, inside=None, area=None):
    corners = {"top_left": 0.05, "top_right": 0.05, "bottom_left": 0.05, "bottom_right": corner}
    return {"energy_border": border, "energy_corners": corners, "energy_in_boxes": inside, "box_area": area}


def test_each_rule_flags_with_its_reason_and_a_centred_object_is_not_flagged():
    reasons, score = flags(_figures(corner=FLAG_CORNER + 0.05), None, (0.5, 0.5))
    assert score > 1 and "bottom-right corner" in reasons[0]
    assert "border" in flags(_figures(border=0.7), None, (0.5, 0.5))[0][0]
    assert "inside the object's boxes" in flags(_figures(inside=0.2, area=0.4), None, (0.5, 0.5))[0][0]
    # a small object's map spills out of its box but is still 5x denser inside: not flagged
    assert flags(_figures(inside=0.25, area=0.05), None, (0.5, 0.5))[0] == []
    assert "same off-centre place" in flags(_figures(), 0.9, (0.1, 0.85))[0][0]
    reasons, score = flags(_figures(), 1.0, (0.5, 0.55))  # always in the centre: photographers centre objects
    assert reasons == [] and score < 1


# --- the planted shortcut, from the command line ---------------------------------------------------------------


@pytest.fixture(scope="module")
def planted_audit(planted_shortcut, tmp_path_factory):
    out = tmp_path_factory.mktemp("audit") / "audit"
    data = planted_shortcut
    return out, audit_planted(data, out)


def test_the_planted_shortcut_is_flagged_in_its_corner_and_clean_classes_are_not(planted_audit):
    out, report = planted_audit
    by_name = {entry["name"]: entry for entry in report["classes"]}
    stamped = by_name["stamped"]
    assert stamped["flagged"] and report["classes"][0]["name"] == "stamped"  # first by shortcut score
    flagged = [c for c in stamped["clusters"] if c["flagged"]]
    assert flagged
    for cluster in flagged:
        corner = max(cluster["energy_corners"], key=cluster["energy_corners"].get)
        assert corner == "bottom_right" and any("bottom-right corner" in r for r in cluster["reasons"])
    assert not any(by_name[name]["flagged"] for name in CLEAN), [by_name[n]["reasons"] for n in CLEAN]
    assert max(by_name[n]["shortcut_score"] for n in CLEAN) < 1 <= stamped["shortcut_score"]
    assert report["summary"]["accuracy"] == 1.0 and report["summary"]["flagged_classes"] == 1
    maps = np.load(out / "maps.npy")
    assert maps.shape == (144, report["grid"], report["grid"]) and maps.dtype == np.float16
    assert all(p["map_row"] == i for i, p in enumerate(report["photos"]))
    for entry in report["classes"]:
        assert (out / entry["picture"]).is_file()
        assert all((out / c["picture"]).is_file() for c in entry["clusters"])
    # the stamped photos' mean map peaks in the bottom-right quarter of the frame
    rows = [p["map_row"] for p in report["photos"] if p["truth"]["label"] == "stamped"]
    mean = maps[rows].astype(np.float32).mean(0)
    y, x = np.unravel_index(mean.argmax(), mean.shape)
    assert y >= report["grid"] // 2 and x >= report["grid"] // 2


def test_the_page_is_self_contained_and_escapes_names(planted_audit):
    out, report = planted_audit
    html = (out / "audit.html").read_text()
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html
    assert html.count("data:image/") >= 6
    assert 'id="class-' in html and "bottom-right corner" in html


# --- comparisons, boxes, wrong predictions ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_classes(planted_shortcut, tmp_path_factory):
    """The stamped class and one clean class, 48 photos: enough for the comparisons, quicker."""
    root = tmp_path_factory.mktemp("two") / "photos"
    for name in ("stamped", "cat"):
        (root / name).mkdir(parents=True)
        for photo in sorted((planted_shortcut.photos / name).glob("*.jpg")):
            (root / name / photo.name).write_bytes(photo.read_bytes())
    return root


def _bundle(planted_shortcut):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model("efficientnet_lite0", str(planted_shortcut.weights))
    return with_labels(model, read_labels(planted_shortcut.labels))


def test_a_model_compared_with_itself_agrees_and_with_a_randomised_copy_does_not(
    planted_shortcut, two_classes, tmp_path
):
    bundle = _bundle(planted_shortcut)
    same = gradcam.audit(two_classes, bundle, truth=two_classes, compare=bundle, out=tmp_path / "same", workers=0)
    comparison = validate(same.report)["comparison"]
    assert comparison["rank_correlation"] == 1.0 and comparison["top20_iou"] == 1.0
    assert comparison["prediction_changes"] == 0
    assert all(p["rank_correlation"] == 1.0 and p["top20_iou"] == 1.0 for p in comparison["photos"])
    assert np.array_equal(np.load(tmp_path / "same" / "compared_maps.npy"), np.load(tmp_path / "same" / "maps.npy"))

    import copy

    randomised = copy.deepcopy(bundle)
    torch.manual_seed(0)
    for module in randomised.model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    other = gradcam.audit(two_classes, bundle, truth=two_classes, compare=randomised, out=tmp_path / "other", workers=0)
    comparison = validate(other.report)["comparison"]
    assert comparison["rank_correlation"] < 0.5 and comparison["top20_iou"] < 0.5
    assert comparison["prediction_changes"] > 0
    classes = comparison["classes"]
    assert {c["name"] for c in classes} == {"stamped", "cat"}
    for entry in classes:  # the photos sorted by disagreement: rank correlation ascending
        values = {p["key"]: p["rank_correlation"] for p in comparison["photos"]}
        ordered = [values[k] if values[k] is not None else 2 for k in entry["by_disagreement"]]
        assert ordered == sorted(ordered)
    html = (tmp_path / "other" / "audit.html").read_text()
    assert 'id="compare-' in html and "Predictions that changed" in html


def test_boxes_find_photos_right_for_the_wrong_reason(planted_shortcut, two_classes, tmp_path):
    # the stamped photos' "object": a box above and left of the logo (the class looks at the logo); the cat
    # photos' object: the whole photo (whatever they look at is inside)
    sides = {"stamped": [56, 56, 160, 160], "cat": [0, 0, 256, 256]}
    boxes = {f"{name}/{p.name}": [sides[name]] for name in sides for p in (two_classes / name).glob("*.jpg")}
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    # the boxes file names photos relative to the photo folder given on the command line
    result = gradcam.audit(two_classes, _bundle(planted_shortcut), truth=two_classes, boxes=tmp_path / "boxes.json",
                           out=tmp_path / "out", workers=0)  # fmt: skip
    report = validate(result.report)
    photos = {p["key"]: p for p in report["photos"]}
    stamped = [p for k, p in photos.items() if k.startswith("stamped/")]
    cat = [p for k, p in photos.items() if k.startswith("cat/")]
    assert all(p["box_area"] == pytest.approx((104 / 224) ** 2, abs=0.01) for p in stamped)
    assert all(p["box_area"] == 1 and p["energy_in_boxes"] == pytest.approx(1) for p in cat)
    assert sum(p["right_for_wrong_reason"] for p in stamped) >= 0.8 * len(stamped)
    assert not any(p["right_for_wrong_reason"] for p in cat)
    by_name = {c["name"]: c for c in report["classes"]}
    assert any("inside the object's boxes" in r for r in by_name["stamped"]["reasons"])
    assert by_name["stamped"]["energy_in_boxes"] < by_name["cat"]["energy_in_boxes"]
    assert report["summary"]["right_for_wrong_reason"] >= 0.8 * len(stamped)
    assert "Right for the wrong reason" in result.html.read_text()


def test_wrong_predictions_keep_the_true_and_the_predicted_class_maps(planted_shortcut, two_classes, tmp_path):
    truth = tmp_path / "truth.csv"
    photos = sorted(two_classes.rglob("*.jpg"))
    wrong = {p.name for p in photos if p.parent.name == "cat"}
    with open(truth, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "class"])
        for photo in photos:  # every cat photo labelled 'coffee' (class 1 by index): the model says cat
            writer.writerow(
                [
                    f"{photo.parent.name}/{photo.name}",
                    "1" if photo.name in wrong and photo.parent.name == "cat" else photo.parent.name,
                ]
            )
    result = gradcam.audit(two_classes, _bundle(planted_shortcut), truth=truth, out=tmp_path / "out", workers=0)
    report = validate(result.report)
    wrong_photos = [p for p in report["photos"] if p["right"] is False]
    assert len(wrong_photos) == 24 and all(
        p["truth"]["label"] == "coffee" and p["predicted"]["label"] == "cat" for p in wrong_photos
    )
    predicted = np.load(tmp_path / "out" / "predicted_maps.npy")
    maps = np.load(tmp_path / "out" / "maps.npy")
    assert predicted.shape[0] == 24
    for photo in wrong_photos:  # the map of the true class (coffee) is not the map of the said class (cat)
        assert not np.array_equal(maps[photo["map_row"]], predicted[photo["predicted_map_row"]])
    assert all(p["predicted_map_row"] is None for p in report["photos"] if p["right"])
    page = result.html.read_text()
    assert "Wrong predictions (24)" in page
    # #27 item 8: each pair names its photo; captions break between words (long names anywhere), not mid-word
    first = wrong_photos[0]["key"]
    assert f"<figcaption>{first}: true coffee</figcaption>" in page
    assert "word-break:break-all" not in page and "overflow-wrap:anywhere" in page


# --- bad input, the model left as it was --------------------------------------------------------------------------


def test_an_unreadable_photo_is_reported_and_the_rest_audited(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    examples = Path(gradcam.__file__).parent / "examples"
    for name in ("coffee.jpg", "chelsea.jpg"):
        (folder / name).write_bytes((examples / name).read_bytes())
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    code = main(["audit", str(folder), "--out", str(tmp_path / "out"), "--quiet", "--workers", "0"])
    assert code == 1
    assert "broken.jpg" in capsys.readouterr().err
    report = validate(json.loads((tmp_path / "out" / "audit.json").read_text()))
    assert report["summary"]["audited"] == 2 and report["failed"][0]["key"] == "broken"
    assert report["truth"] is None and all(p["right"] is None for p in report["photos"])
    assert "Unreadable photos (1)" in (tmp_path / "out" / "audit.html").read_text()
    # an earlier audit is never replaced without --overwrite
    assert main(["audit", str(folder), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("image,class\ncoffee.jpg,espreso\n", "did you mean 'espresso'"),
        ("photo,label\ncoffee.jpg,1\n", "expected a CSV with the columns image,class"),
        ("image,class\ncoffee.jpg,5000\n", "out of range"),
    ],
)
def test_a_bad_truth_file_is_one_line_naming_it(tmp_path, capsys, content, message):
    truth = tmp_path / "truth.csv"
    truth.write_text(content)
    examples = Path(gradcam.__file__).parent / "examples"
    code = main(["audit", str(examples / "coffee.jpg"), "--truth", str(truth), "--out", str(tmp_path / "o"), "--quiet"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and message in error and str(truth) in error and len(error.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_names_are_escaped_in_the_page(tmp_path):
    from gradcam.io.models import LoadedModel, Preprocessing
    from tiny_models import TinyCNN

    hostile = ["<script>alert(1)</script>", "<img src=x onerror=alert(2)>", "a&b", "c"]
    model = TinyCNN(classes=4)
    bundle = LoadedModel("tiny", model, Preprocessing(resize=32, crop=(32, 32)), hostile, None, "random")
    folder = tmp_path / "<b>photos"
    folder.mkdir()
    examples = Path(gradcam.__file__).parent / "examples"
    (folder / "<i>x.jpg").write_bytes((examples / "coffee.jpg").read_bytes())
    result = gradcam.audit(folder, bundle, out=tmp_path / "out", workers=0)
    html = result.html.read_text()
    assert "<script>alert" not in html and "<img src=x" not in html and "<i>x" not in html
    assert "&lt;i&gt;x" in html


def test_the_model_is_left_as_it_was(tmp_path):
    from gradcam.io.models import LoadedModel, Preprocessing
    from tiny_models import TinyCNN

    model = TinyCNN(classes=3).train()
    model.features[0].weight.requires_grad_(False)
    before = {name: p.detach().clone() for name, p in model.state_dict().items()}
    bundle = LoadedModel("tiny", model, Preprocessing(resize=32, crop=(32, 32)), None, None, "random")
    examples = Path(gradcam.__file__).parent / "examples"
    gradcam.audit(examples, bundle, out=tmp_path / "out", workers=0)
    assert model.training and not model.features[0].weight.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[n], p) for n, p in model.state_dict().items())
    assert not model._forward_hooks and not any(m._forward_hooks or m._backward_hooks for m in model.modules())


def test_a_method_that_cannot_explain_the_model_is_one_line(tmp_path, capsys):
    examples = Path(gradcam.__file__).parent / "examples"
    code = main(
        ["audit", str(examples), "--method", "gradeclip", "--out", str(tmp_path / "o"), "--quiet", "--workers", "0"]
    )
    error = capsys.readouterr().err.strip()
    assert code == 2 and "gradeclip" in error and "attention" in error and len(error.splitlines()) == 1


def test_bad_arguments(tmp_path):
    examples = Path(gradcam.__file__).parent / "examples"
    with pytest.raises(AuditError, match="no such file"):
        gradcam.audit(tmp_path / "nowhere", out=tmp_path / "o")
    with pytest.raises(AuditError, match="--layer nope"):
        gradcam.audit(examples, layer="nope", out=tmp_path / "o")
    with pytest.raises(AuditError, match="engine"):
        gradcam.audit(examples, engine="spark", out=tmp_path / "o")


def test_the_page_in_a_browser_sorts_and_shows_every_picture(planted_audit):
    from browser import headless_page

    out, report = planted_audit
    requests: list[str] = []
    errors: list[str] = []
    with headless_page() as page:
        page.on("request", lambda request: requests.append(request.url))
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto((out / "audit.html").as_uri())
        page.wait_for_function("[...document.images].every(i => i.complete)")
        broken = page.evaluate("[...document.images].filter(i => i.naturalWidth === 0).length")
        assert broken == 0
        names = page.locator("#class-table tbody td.name").all_inner_texts()
        assert names[0] == "stamped" and sorted(names) == sorted(c["name"] for c in report["classes"])
        assert page.locator("#class-table tbody tr.flagged").count() == 1
        page.locator("#class-table th", has_text="Class").click()  # a new column sorts descending first
        assert page.locator("#class-table tbody td.name").all_inner_texts() == sorted(names, reverse=True)
        page.locator("#class-table th", has_text="Class").click()  # the same column again: ascending
        assert page.locator("#class-table tbody td.name").all_inner_texts() == sorted(names)
        page.locator("#class-table th", has_text="Shortcut score").click()
        assert page.locator("#class-table tbody td.name").first.inner_text() == "stamped"
        page.locator("#class-table a", has_text="stamped").click()
        flagged = page.locator("#class-5 .cluster.flagged")
        assert flagged.count() >= 1 and "bottom-right corner" in flagged.first.inner_text()
        assert flagged.first.locator("img").count() >= 2  # its mean map and its typical photos
        shot = page.screenshot()
    assert errors == []
    assert all(url.startswith(("file://", "data:")) for url in requests)  # no network
    import io

    from PIL import Image

    assert np.asarray(Image.open(io.BytesIO(shot)).convert("L"), dtype=np.float32).std() > 20


def test_a_folder_of_only_unreadable_photos_still_gives_a_valid_report(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"")
    (folder / "b.png").write_bytes(b"\x89PNG broken")
    assert main(["audit", str(folder), "--out", str(tmp_path / "out"), "--quiet", "--workers", "0"]) == 1
    report = validate(json.loads((tmp_path / "out" / "audit.json").read_text()))
    assert report["summary"]["audited"] == 0 and len(report["failed"]) == 2 and report["classes"] == []
    assert np.load(tmp_path / "out" / "maps.npy").shape[0] == 0


def test_methods_that_make_their_own_maps_audit_true_and_predicted_classes(tmp_path):
    """FullGrad (like SESS and LeGrad) takes class indices, not the audit's callable targets: it failed
    with 'give class targets ... not callables' whenever --truth was given."""
    examples = Path(gradcam.__file__).parent / "examples"
    for folder, photo in (("tiger cat", "chelsea.jpg"), ("tabby", "coffee.jpg")):
        (tmp_path / "photos" / folder).mkdir(parents=True)
        (tmp_path / "photos" / folder / photo).write_bytes((examples / photo).read_bytes())
    out = tmp_path / "o"
    argv = ["audit", str(tmp_path / "photos"), "--truth", str(tmp_path / "photos"), "--method", "fullgrad",
            "--out", str(out), "--quiet", "--workers", "0"]  # fmt: skip
    assert main(argv) == 0
    report = validate(json.loads((out / "audit.json").read_text()))
    photos = {Path(p["path"]).name: p for p in report["photos"]}
    assert report["method"] == "fullgrad"
    assert photos["chelsea.jpg"]["explained"]["label"] == "tiger cat" and photos["chelsea.jpg"]["right"]
    coffee = photos["coffee.jpg"]  # truth "tabby", predicted espresso: both maps kept
    assert coffee["explained"]["label"] == "tabby" and coffee["predicted"]["label"] == "espresso"
    assert not coffee["right"] and coffee["predicted_map_row"] == 0
    assert np.load(out / "predicted_maps.npy").shape[0] == 1


def test_counts_of_photos_read_as_english():
    """#27 item 8: the page said "1 photos"."""
    from gradcam.render.audit_page import _photos

    assert (_photos(1), _photos(2), _photos(0)) == ("1 photo", "2 photos", "0 photos")
