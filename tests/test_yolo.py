"""Ultralytics YOLO detectors (#29 items 6, 9): per-box maps equal Grad-CAM written out by hand with plain hooks
at the box's anchor; each box's score is its confidence; the letterbox is carried back to the photo exactly;
the CLI writes a picture per box, the boxes and the maps, and refuses what a detector cannot take in one line.
Offline: the architecture from ``yolov8n.yaml`` with random weights."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from by_hand import leaf_gradcam
from gradcam.apps.cli import main
from gradcam.detection import explain_boxes
from gradcam.io.letterbox import letterbox
from gradcam.io.yolo import YoloDetector
from manifest_check import validate

pytest.importorskip("ultralytics")


@pytest.fixture(scope="module")
def yolo():
    import gradcam

    torch.manual_seed(0)
    return gradcam.load_model("yolo:yolov8n.yaml")


@pytest.fixture(scope="module")
def photo():
    torch.manual_seed(1)
    pixels = (torch.rand(3, 24, 32) * 255).to(torch.uint8)
    big = F.interpolate(pixels[None].float(), size=(240, 320), mode="bilinear")[0].round().to(torch.uint8)
    return Image.fromarray(big.permute(1, 2, 0).numpy())


def _by_hand(net, x, layer_names, row, anchor):
    """Grad-CAM of ``output[0][:, row, anchor]`` with plain forward hooks, each layer's raw map summed; every
    layer's output handed on as a leaf of its own, so a box's gradient stops at the first one it meets."""
    return leaf_gradcam(net, layer_names, lambda: net(x)[0][0, row, anchor], tuple(x.shape[2:]))


@pytest.mark.filterwarnings("ignore:.*zero")  # model.21 alone: the P3 and P4 boxes have no gradient there
def test_each_box_map_is_gradcam_by_hand_at_its_anchor(yolo, photo):
    x, _ = letterbox(photo, 320)
    detector = YoloDetector(classes=80, conf=0.0, max_boxes=30)
    for layers in (["model.21"], yolo.default_layer.split(",")):
        found = explain_boxes(yolo.model, x[None], detector, "gradcam", ",".join(layers))
        levels = {_level(d.anchor, x.shape[1:]) for d in found.detections}
        assert len(found.detections) == 30 and found.maps.shape == (30, *x.shape[1:])
        assert len(layers) == 1 or levels == {0, 1, 2}, levels  # boxes of every scale are checked
        for k, detection in enumerate(found.detections):
            expected = _by_hand(yolo.model, x[None], layers, 4 + detection.label, detection.anchor)
            torch.testing.assert_close(found.maps[k], expected, atol=1e-4, rtol=1e-4)
        # each box's explained score is the detector's own confidence for it
        scores = found.explanation.scores[0].tolist()
        assert scores == pytest.approx([d.confidence for d in found.detections], rel=1e-5)


def _level(anchor, size, strides=(8, 16, 32)):
    """Which scale an anchor of YOLOv8's output belongs to (P3's anchors first, then P4's, then P5's)."""
    start = 0
    for level, stride in enumerate(strides):
        start += (size[0] // stride) * (size[1] // stride)
        if anchor < start:
            return level
    raise AssertionError(anchor)


def test_the_boxes_are_ultralytics_own(yolo, photo):
    """The same boxes, classes and confidences as Ultralytics' non_max_suppression on the same output."""
    from ultralytics.utils.nms import non_max_suppression

    x, _ = letterbox(photo, 320)
    with torch.no_grad():
        output = yolo.model(x[None])
    theirs = non_max_suppression(output[0], 0.0, 0.45, nc=80, max_det=4)[0]
    ours = YoloDetector(classes=80, conf=0.0, max_boxes=4).detect(output)[0]
    assert [d.box for d in ours] == [tuple(row[:4]) for row in theirs.tolist()]
    assert [d.label for d in ours] == [int(row[5]) for row in theirs.tolist()]


def test_explain_boxes_leaves_the_model_as_it_was(yolo, photo):
    def hook_count(net):
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in net.modules())

    net = yolo.model.train()
    before = hook_count(net)
    try:
        explain_boxes(net, letterbox(photo, 320)[0][None], YoloDetector(80, conf=0.0, max_boxes=2))
        assert net.training and all(m.training for m in net.modules())
        assert all(p.grad is None for p in net.parameters())
        assert hook_count(net) == before
    finally:
        net.eval()


def test_no_box_gives_an_empty_result(yolo, photo):
    found = explain_boxes(yolo.model, letterbox(photo, 320)[0][None], YoloDetector(80, conf=0.99))
    assert found.detections == () and found.maps.shape[0] == 0 and found.explanation is None


def test_the_letterbox_is_carried_back_to_the_photo():
    photo = Image.new("RGB", (451, 300), (10, 200, 30))
    x, box = letterbox(photo, 640)
    assert x.shape == (3, 448, 640)  # 426 rows of photo, padded to a multiple of 32
    assert box.offset == (11, 0) and box.inner == (426, 640)
    assert torch.all(x[:, :11] == 114 / 255) and torch.all(x[:, 437:] == 114 / 255)  # the grey bands
    # a box drawn around the photo area on the input comes back as the whole photo
    assert box.box_to_photo((0, 11, 640, 437)) == pytest.approx((0, 0, 451, 300), abs=0.5)
    heat = torch.zeros(1, 448, 640)
    heat[:, 11 + 213 :, 320:] = 1  # the lower-right quarter of the photo area
    back = box.map_to_photo(heat)[0]
    assert back.shape == (300, 451)
    assert back[160:, 240:].mean() > 0.95 and back[:140, :210].mean() < 0.05


def test_the_cli_explains_every_box_and_writes_a_valid_manifest(tmp_path, photo):
    photo.save(tmp_path / "street.png")
    out = tmp_path / "out"
    code = main(["explain", str(tmp_path / "street.png"), "--model", "yolo:yolov8n.yaml", "--conf", "0",
                 "--max-boxes", "2", "--out", str(out), "--quiet"])  # fmt: skip
    assert code == 0
    data = json.loads((out / "results.json").read_text())
    validate(data)
    assert data["kind"] == "detection" and data["options"] == {"detection.conf": 0.0, "detection.max_boxes": 2}
    record = data["images"][0]
    assert len(record["targets"]) == 2 and record["size"] == [320, 240]
    for target in record["targets"]:
        x1, y1, x2, y2 = target["box"]
        assert 0 <= x1 < x2 <= 320 and 0 <= y1 < y2 <= 240
        assert Image.open(target["files"]["overlay"]).size == (320, 240)
    import numpy as np

    maps = np.load(record["targets"][0]["files"]["map"])
    assert maps.shape == (2, 480, 640) and maps.dtype == np.float16  # the photo's frame at the model's 640 px
    assert (out / "index.html").exists()
    # a second run into the same folder is refused; the files are never overwritten silently
    again = main(
        ["explain", str(tmp_path / "street.png"), "--model", "yolo:yolov8n.yaml", "--out", str(out), "--quiet"]
    )  # noqa: E501
    assert again == 2


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["--target", "top3"], "name the classes to keep"),
        (["--per-channel", "4"], "--per-channel: not for a detector's photos"),
        (["--conf", "1.5"], "--conf 1.5: between 0 and 1"),
    ],
)
def test_what_a_detector_cannot_take_is_refused_in_one_line(tmp_path, photo, capsys, extra, said):
    photo.save(tmp_path / "a.png")
    code = main(["explain", str(tmp_path / "a.png"), "--model", "yolo:yolov8n.yaml", "--out", str(tmp_path / "o"),
                 *extra])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and said in err and len(err.splitlines()) == 1


def test_a_checkpoint_needs_trust_and_the_conf_reaches_the_detector(tmp_path, capsys, photo):
    (tmp_path / "best.pt").write_bytes(b"not really")
    photo.save(tmp_path / "a.png")
    code = main(["explain", str(tmp_path / "a.png"), "--model", f"yolo:{tmp_path / 'best.pt'}",
                 "--out", str(tmp_path / "o")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--trust-weights" in err and len(err.splitlines()) == 1
    assert replace(YoloDetector(80), conf=0.5).conf == 0.5


def test_a_callable_target_on_a_tuple_output_gets_one_score_per_image(yolo, photo):
    """explain() took the output tuple's length (2) as the batch: "expects 2 scores for a batch of 1"."""
    import gradcam

    x, _ = letterbox(photo, 320)
    ex = gradcam.explain(yolo.model, x[None], layer="model.15", targets=lambda output: output[0][:, 4, 100])
    assert ex.maps.shape == (1, 1, *x.shape[1:]) and ex.scores.shape == (1, 1)


def test_boxes_are_explained_after_a_prediction_under_inference_mode(photo):
    """Ultralytics caches its anchor grid; made under inference_mode (any prediction) it broke explain's
    autograd ("Inference tensors cannot be saved for backward")."""
    import gradcam

    net = gradcam.load_model("yolo:yolov8n.yaml").model
    x, _ = letterbox(photo, 320)
    with torch.inference_mode():
        net(x[None])
    found = explain_boxes(net, x[None], YoloDetector(80, conf=0.0, max_boxes=2))
    assert len(found.detections) == 2 and found.maps.shape[0] == 2


class TwoColourDetector(torch.nn.Module):
    """A hand-weighted detector with YOLO's output layout (B, 4 + 2, anchors) on a 64 x 64 photo, stride 8:
    class 0 is red, class 1 is blue; each 8 x 8 cell proposes a 16 x 16 box at its centre."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Conv2d(3, 2, 8, stride=8)
        self.head = torch.nn.Conv2d(2, 2, 3, padding=1)
        with torch.no_grad():
            self.features.weight.zero_()
            self.features.weight[0, 0], self.features.weight[0, 2] = 1 / 64, -1 / 64  # red minus blue
            self.features.weight[1, 2], self.features.weight[1, 0] = 1 / 64, -1 / 64  # blue minus red
            self.features.bias.zero_()
            self.head.weight.zero_()
            self.head.weight[0, 0] = 0.1
            self.head.weight[1, 1] = 0.1
            self.head.weight[0, 0, 1, 1] = self.head.weight[1, 1, 1, 1] = 1.0
            self.head.bias.fill_(-0.2)

    def forward(self, x):
        features = torch.relu(self.features(x))
        scores = torch.sigmoid(8 * self.head(features)).flatten(2)  # (B, 2, 64)
        rows, columns = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
        centres = torch.stack([columns.flatten() * 8 + 4, rows.flatten() * 8 + 4]).float()
        boxes = torch.cat([centres, torch.full((2, 64), 16.0)])[None].expand(len(x), -1, -1)
        return torch.cat([boxes, scores], dim=1), {}


def _two_squares(red=True, blue=True):
    x = torch.full((1, 3, 64, 64), 0.5)
    if red:
        x[0, :, 8:24, 8:24] = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    if blue:
        x[0, :, 40:56, 40:56] = torch.tensor([0.0, 0.0, 1.0]).view(3, 1, 1)
    return x


def test_each_box_map_falls_on_its_own_object_and_follows_it():
    net = TwoColourDetector().eval()
    detector = YoloDetector(classes=2, conf=0.5, iou=0.1, max_boxes=5)
    found = explain_boxes(net, _two_squares(), detector, "gradcam", "features")
    labels = [d.label for d in found.detections]
    assert sorted(labels) == [0, 1], found.detections
    for detection, heat in zip(found.detections, found.maps, strict=True):
        red, blue = heat[8:24, 8:24].mean(), heat[40:56, 40:56].mean()
        assert (red > 3 * blue) if detection.label == 0 else (blue > 3 * red), (detection, red, blue)
        x1, y1, x2, y2 = detection.box
        assert (x1 < 24 and y1 < 24) if detection.label == 0 else (x2 > 40 and y2 > 40)
    # the red square removed: no red box is kept, and the blue box's map stays on the blue square
    alone = explain_boxes(net, _two_squares(red=False), detector, "gradcam", "features")
    assert [d.label for d in alone.detections] == [1]
    assert alone.maps[0, 40:56, 40:56].mean() > 3 * alone.maps[0, 8:24, 8:24].mean()


def test_a_broken_photo_gets_our_message_after_ultralytics_patched_pil(tmp_path):
    """Importing Ultralytics replaces PIL's Image.open by a wrapper that tries to pip-install a HEIF plugin on
    any file PIL cannot read: a folder's broken file said "No module named 'pi_heif'" instead of ours."""
    import ultralytics.utils.patches  # noqa: F401  (applies the patch, as loading a yolo: model does)
    from PIL import Image as PILImage

    from gradcam.io.images import ImageReadError, read_image

    assert PILImage.open.__module__.startswith("ultralytics")
    (tmp_path / "text.jpg").write_text("not a photo")
    with pytest.raises(ImageReadError, match="not a readable image"):
        read_image(tmp_path / "text.jpg")


def test_the_web_app_explains_every_box_of_a_detector(tmp_path, monkeypatch, photo):
    """#29: a detector in the web app gets the command line's pictures (every box, then each), the boxes with
    their confidences beside them and a manifest; conf and max_boxes come with the method options."""
    pytest.importorskip("gradio")
    from gradcam.apps import web
    from gradcam.apps.web_state import AppError

    photo.save(tmp_path / "street.png")
    monkeypatch.setattr(web, "SHELF", web.ModelShelf(["yolo:yolov8n.yaml"]))
    result = web.explain_photo(str(tmp_path / "street.png"), "yolo:yolov8n.yaml", ["gradcam", "eigencam"], None, "",
                               0.5, "jet", out_dir=tmp_path / "out", method_options="conf=0 max_boxes=2")  # fmt: skip
    assert len(result.overlays) == 6 and result.targets == 3  # per method: every box, box 0, box 1
    assert result.overlays[0][1] == "gradcam: every box (2)" and result.overlays[4][1].startswith("eigencam: ")
    assert len(result.top5) == 2 and all(Image.open(path).size == (320, 240) for path, _ in result.overlays)
    data = json.loads(Path(result.files[-1]).read_text())
    validate(data)
    assert data["engine"] == "web" and data["kind"] == "detection" and data["methods"] == ["gradcam", "eigencam"]
    with pytest.raises(AppError, match="kept no box at conf 0.99"):
        web.explain_photo(str(tmp_path / "street.png"), "yolo:yolov8n.yaml", ["gradcam"], None, "", 0.5, "jet",
                          out_dir=tmp_path / "o2", method_options="conf=0.99")  # fmt: skip
    kept = web.explain_photo(str(tmp_path / "street.png"), "yolo:yolov8n.yaml", ["gradcam"], None, "person", 0.5,
                             "jet", out_dir=tmp_path / "o4", method_options="conf=0 max_boxes=2")  # fmt: skip
    assert len(kept.top5) == 2 and all(label.startswith("person (box") for label in kept.top5)  # Target: classes
    with pytest.raises(AppError, match="max_boxes between 1 and 12"):
        web.explain_photo(str(tmp_path / "street.png"), "yolo:yolov8n.yaml", ["gradcam"], None, "", 0.5, "jet",
                          out_dir=tmp_path / "o3", method_options="max_boxes=50")  # fmt: skip


def test_serve_loads_a_yolo_checkpoint_only_when_the_operator_trusts_it(tmp_path, monkeypatch):
    pytest.importorskip("gradio")
    from gradcam.apps import web
    from gradcam.io.weights import ModelLoadError

    (tmp_path / "best.pt").write_bytes(b"a pickle, as Ultralytics saves")
    with pytest.raises(ModelLoadError, match="--trust-weights"):
        web.ModelShelf([f"yolo:{tmp_path / 'best.pt'}"]).get(f"yolo:{tmp_path / 'best.pt'}")
    shelves = []
    monkeypatch.setattr(web, "serve", lambda host, port, examples, models, **_: shelves.append(models))
    assert main(["serve", "--models", "yolo:yolov8n.yaml", "--trust-weights"]) == 0
    assert shelves[-1].trust_weights and not web.ModelShelf(["yolo:yolov8n.yaml"]).trust_weights


def test_the_local_score_equals_the_full_head_at_every_edge_and_scale(yolo, photo):
    """A box's score recomputed from its anchor's neighbourhood (the class branch's reach) equals the full
    head's output, and so do its gradients, at the corners and edges of every scale's map."""
    x, _ = letterbox(photo, 320)
    detector = YoloDetector(classes=80).prepare(yolo.model)
    assert detector.head is not None and detector.radii == (2, 2, 2)
    with torch.enable_grad():
        output = yolo.model(x[None].requires_grad_())
    features = output[1]["feats"]
    anchors, start = [], 0
    for feature in features:
        height, width = feature.shape[-2:]
        for row, column in ((0, 0), (0, width - 1), (height - 1, 0), (height - 1, width - 1), (1, 1), (height // 2, 1)):
            anchors.append(start + row * width + column)
        start += height * width
    from gradcam.detection import Detection

    for anchor in anchors:
        box = Detection((0.0, 0.0, 1.0, 1.0), 7, 0.0, anchor)
        local = detector.score(box)(output)
        full = output[0][:, 4 + 7, anchor]
        torch.testing.assert_close(local, full, atol=1e-6, rtol=1e-5)
        ours = torch.autograd.grad(local.sum(), features, retain_graph=True, allow_unused=True)
        theirs = torch.autograd.grad(full.sum(), features, retain_graph=True, allow_unused=True)
        for a, b in zip(ours, theirs, strict=True):
            if b is None or not b.any():
                assert a is None or not a.any()
            else:
                torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def test_a_segment_model_gets_its_boxes_explained_the_same_way(photo):
    """A segment head's output nests its predictions one level deeper, ((y, prototypes), extras); its boxes
    are explained by the same path, and its score equals the full output's."""
    import gradcam

    bundle = gradcam.load_model("yolo:yolov8n-seg.yaml")
    assert bundle.extra["task"] == "segment"
    x, _ = letterbox(photo, 320)
    detector = replace(bundle.extra["detector"], conf=0.0, max_boxes=3)
    found = explain_boxes(bundle.model, x[None], detector)
    assert len(found.detections) == 3 and found.maps.shape == (3, *x.shape[1:])
    with torch.no_grad():
        output = bundle.model(x[None])
    plain = YoloDetector(classes=80)  # not bound to the head: the score read from the output itself
    for detection, score in zip(found.detections, found.explanation.scores[0], strict=True):
        assert float(plain.score(detection)(output)) == pytest.approx(float(score), rel=1e-5)


def _gradcam_by_hand_on_logits(net, x, layer, label):
    """Grad-CAM of logit ``label`` at ``layer`` with one plain forward hook (no gradcam code)."""
    return leaf_gradcam(net, [layer], lambda: net(x)[1][0, label], tuple(x.shape[2:]))


def test_a_classify_model_is_explained_on_its_logits_like_any_classifier(photo):
    """#29 item 6: ``yolo:yolov8n-cls.yaml`` is a classifier. Its Classify head returns (softmax, logits) in
    eval mode; the map explains the logit of the top class at the head's last convolution, equal to Grad-CAM by
    hand on the Ultralytics model itself, and the model is left as it was."""
    import gradcam
    from gradcam.io.yolo import YoloClassifier

    torch.manual_seed(3)
    bundle = gradcam.load_model("yolo:yolov8n-cls.yaml")
    assert isinstance(bundle.model, YoloClassifier) and bundle.extra["task"] == "classify"
    assert not bundle.is_detector and bundle.default_layer == "model.9.conv"
    assert bundle.preprocessing.crop == (224, 224) and bundle.preprocessing.mean == (0.0, 0.0, 0.0)
    assert bundle.labels[285] == "Egyptian cat"  # a config's 1,000 placeholder names are ImageNet's
    net = bundle.model._net
    assert [n for n, _ in bundle.model.named_parameters()] == [n for n, _ in net.named_parameters()]
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        probabilities, logits = net(x)
    torch.testing.assert_close(bundle.model(x), logits)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    ex = gradcam.explain(bundle.model, x, "gradcam", bundle.default_layer)
    label = int(logits.argmax())
    assert ex.targets[0].tolist() == [label]
    assert float(ex.scores[0, 0]) == pytest.approx(float(logits[0, label]), rel=1e-5)  # the logit, not p
    torch.testing.assert_close(ex.maps[0, 0], _gradcam_by_hand_on_logits(net, x, "model.9.conv", label),
                               atol=1e-5, rtol=1e-4)  # fmt: skip
    assert not net.training and all(p.grad is None for p in net.parameters())
    assert all(torch.equal(before[n], p) for n, p in net.named_parameters())


def test_the_cli_explains_a_photo_with_a_classify_model(tmp_path, photo):
    """The classify model runs the photo path: an overlay and a record with the class name."""
    photo.save(tmp_path / "a.png")
    out = tmp_path / "o"
    code = main(["explain", str(tmp_path / "a.png"), "--model", "yolo:yolov8n-cls.yaml", "--out", str(out),
                 "--no-legend"])  # fmt: skip
    assert code == 0
    manifest = json.loads((out / "results.json").read_text())
    validate(manifest)
    (record,) = manifest["images"]
    assert record["status"] == "ok" and record["layer"] == "model.9.conv"
    overlay = Path(record["targets"][0]["files"]["overlay"])
    assert Image.open(overlay).size == photo.size


def test_a_classify_checkpoint_whose_name_says_nothing_runs_as_a_classifier(tmp_path, photo, capsys):
    """A ``best.pt`` of a classify run looks like a detector by its name; once loaded it is known to classify,
    and the run is a photo run (its --target is taken) instead of a refusal or boxes."""
    from ultralytics import YOLO

    torch.manual_seed(4)
    YOLO("yolov8n-cls.yaml").save(str(tmp_path / "best.pt"))
    photo.save(tmp_path / "a.png")
    out = tmp_path / "o"
    code = main(["explain", str(tmp_path / "a.png"), "--model", f"yolo:{tmp_path / 'best.pt'}", "--trust-weights",
                 "--target", "tabby", "--out", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    manifest = json.loads((out / "results.json").read_text())
    (record,) = manifest["images"]
    assert manifest["kind"] == "photo" and record["targets"][0]["label"] == "tabby"
    assert "box" not in record["targets"][0]


def test_a_segment_models_instances_carry_their_masks_as_ultralytics_makes_them(photo, tmp_path):
    """#29 item 8: each box of a segment model is an instance with its own mask (coefficients x prototypes,
    cropped to its box), equal to Ultralytics' ``process_mask``; the pictures outline it and the record says
    how much of the image it covers."""
    from ultralytics.utils.ops import process_mask

    import gradcam

    torch.manual_seed(5)
    bundle = gradcam.load_model("yolo:yolov8n-seg.yaml")
    x, _ = letterbox(photo, 320)
    detector = replace(bundle.extra["detector"], conf=0.0, max_boxes=4)
    with torch.no_grad():
        output = bundle.model(x[None])
    found = detector.detect(output, tuple(x.shape[1:]))[0]
    assert len(found) == 4 and all(d.region is not None for d in found)
    predictions, prototypes = output[0]
    coefficients = torch.stack([predictions[0, 84:, d.anchor] for d in found])
    boxes = torch.tensor([d.box for d in found])
    theirs = process_mask(prototypes[0], coefficients, boxes, tuple(x.shape[1:]), upsample=False) > 0
    assert torch.equal(torch.stack([d.region for d in found]), theirs)
    unsized = detector.detect(output)[0]  # without the input's size (it read the raw output's shape as one)
    assert torch.equal(torch.stack([d.region for d in unsized]), theirs)
    photo.save(tmp_path / "a.png")
    code = main(["explain", str(tmp_path / "a.png"), "--model", "yolo:yolov8n-seg.yaml", "--conf", "0",
                 "--max-boxes", "2", "--out", str(tmp_path / "o")])  # fmt: skip
    assert code == 0
    (record,) = json.loads((tmp_path / "o" / "results.json").read_text())["images"]
    assert all(0 <= t["area"] <= 1 for t in record["targets"])


@pytest.mark.parametrize(("config", "layers"), [("yolo11n.yaml", "model.16,model.19,model.22"),
                                                ("yolov5nu.yaml", "model.17,model.20,model.23")])  # fmt: skip
def test_the_v5u_and_11_layouts_give_gradcam_by_hand_at_each_anchor(photo, config, layers):
    """#29 item 6: the v5u and 11 layouts (not only v8): the head's inputs by default, each box's map Grad-CAM
    by hand at its anchor."""
    import gradcam

    torch.manual_seed(6)
    bundle = gradcam.load_model(f"yolo:{config}")
    assert bundle.default_layer == layers
    x, _ = letterbox(photo, 320)
    found = explain_boxes(bundle.model, x[None], YoloDetector(classes=80, conf=0.0, max_boxes=6))
    assert len(found.detections) == 6
    for k, detection in enumerate(found.detections):
        expected = _by_hand(bundle.model, x[None], layers.split(","), 4 + detection.label, detection.anchor)
        torch.testing.assert_close(found.maps[k], expected, atol=1e-4, rtol=1e-4)


def test_target_keeps_only_the_named_classes_boxes(tmp_path, photo):
    """``--target person,dog`` for a detector keeps those classes' boxes (Ultralytics' NMS told the classes, so
    --max-boxes counts them alone); it was refused for detectors."""
    photo.save(tmp_path / "a.png")
    out = tmp_path / "o"
    code = main(["explain", str(tmp_path / "a.png"), "--model", "yolo:yolov8n.yaml", "--conf", "0", "--max-boxes",
                 "4", "--target", "person,dog", "--out", str(out), "--quiet"])  # fmt: skip
    assert code == 0
    (record,) = json.loads((out / "results.json").read_text())["images"]
    assert len(record["targets"]) == 4 and {t["label"] for t in record["targets"]} <= {"person", "dog"}
