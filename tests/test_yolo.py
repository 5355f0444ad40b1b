"""Ultralytics YOLO detectors (#29 items 6, 9): per-box maps equal Grad-CAM written out by hand with plain hooks
at the box's anchor; each box's score is its confidence; the letterbox is carried back to the photo exactly;
the CLI writes a picture per box, the boxes and the maps, and refuses what a detector cannot take in one line.
Offline: the architecture from ``yolov8n.yaml`` with random weights."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gradcam.apps.cli import main
from gradcam.detection import explain_boxes
from gradcam.io.yolo import YoloDetector, letterbox
from gradcam.result import normalise
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
    """Grad-CAM of ``output[0][:, row, anchor]`` with plain forward hooks, each layer's raw map summed."""
    captured = {}
    handles = [
        net.get_submodule(name).register_forward_hook(lambda m, i, o, name=name: captured.__setitem__(name, o))
        for name in layer_names
    ]
    try:
        with torch.enable_grad():
            score = net(x)[0][0, row, anchor]
            grads = torch.autograd.grad(score, [captured[n] for n in layer_names])
    finally:
        for handle in handles:
            handle.remove()
    total = 0
    for name, grad in zip(layer_names, grads, strict=True):
        weights = grad.mean(dim=(2, 3), keepdim=True)
        raw = F.relu((weights * captured[name]).sum(1, keepdim=True))
        total = total + F.interpolate(raw, size=x.shape[2:], mode="bilinear", align_corners=False)
    return normalise(total[0, 0].detach())


def test_each_box_map_is_gradcam_by_hand_at_its_anchor(yolo, photo):
    x, _ = letterbox(photo, 320)
    detector = YoloDetector(classes=80, conf=0.0, max_boxes=3)
    for layers in (["model.21"], yolo.default_layer.split(",")):
        found = explain_boxes(yolo.model, x[None], detector, "gradcam", ",".join(layers))
        assert len(found.detections) == 3 and found.maps.shape == (3, *x.shape[1:])
        for k, detection in enumerate(found.detections):
            expected = _by_hand(yolo.model, x[None], layers, 4 + detection.label, detection.anchor)
            torch.testing.assert_close(found.maps[k], expected, atol=1e-4, rtol=1e-4)
        # each box's explained score is the detector's own confidence for it
        scores = found.explanation.scores[0].tolist()
        assert scores == pytest.approx([d.confidence for d in found.detections], rel=1e-5)


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
        (["--target", "person"], "--target: not for a detector's photos"),
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
