"""Semantic segmentation (#29 item 8): every class a segmentation model paints gets its own map, the Grad-CAM
of its summed logit over its own painted region. Checked by hand with plain hooks on a SegFormer built from a
config (random weights, offline); on a hand-weighted two-colour model each class's map falls on its own object
and follows it; ``hf:FOLDER`` runs from the command line and the web app's detector path."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from by_hand import leaf_gradcam
from gradcam.apps.cli import main
from gradcam.detection import explain_boxes
from gradcam.io.letterbox import squashed
from gradcam.segmentation import SegmentationDetector
from gradcam.targets import SegmentationScore
from manifest_check import validate

transformers = pytest.importorskip("transformers")
NAMES = {0: "sky", 1: "road", 2: "car", 3: "tree"}


@pytest.fixture(scope="module")
def segformer_folder(tmp_path_factory):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    torch.manual_seed(0)
    config = SegformerConfig(num_labels=4, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1],
                             num_attention_heads=[1, 1, 2, 2], decoder_hidden_size=32, id2label=NAMES,
                             label2id={v: k for k, v in NAMES.items()})  # fmt: skip
    folder = tmp_path_factory.mktemp("segformer")
    SegformerForSemanticSegmentation(config).save_pretrained(folder)
    processor = {"size": {"height": 128, "width": 96}, "image_mean": [0.5] * 3, "image_std": [0.25] * 3}
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return folder


@pytest.fixture(scope="module")
def photo():
    torch.manual_seed(2)
    pixels = (torch.rand(3, 12, 16) * 255).to(torch.uint8)
    big = F.interpolate(pixels[None].float(), size=(150, 200), mode="bilinear")[0].round().to(torch.uint8)
    return Image.fromarray(big.permute(1, 2, 0).numpy())


def _seg_gradcam_by_hand(net, x, layer, label):
    """Grad-CAM of class ``label``'s logits summed over the pixels the model paints with it, one plain hook."""

    def region_score():
        logits = net(x).logits
        return (logits[:, label] * (logits.argmax(1) == label).float()).sum()

    return leaf_gradcam(net, [layer], region_score, tuple(x.shape[2:]))


def test_each_class_map_is_seg_gradcam_by_hand_over_its_painted_region(segformer_folder, photo):
    import gradcam

    bundle = gradcam.load_model(f"hf:{segformer_folder}")
    assert bundle.extra["task"] == "segment" and bundle.is_detector
    assert bundle.default_layer == "segformer.stages.3"  # the backbone's last map, not the decode head
    x, frame = bundle.extra["frame"](photo)
    assert x.shape == (3, 128, 96)  # squashed to the processor's height and width
    found = explain_boxes(bundle.model, x[None], SegmentationDetector(conf=0.0), layer=bundle.default_layer)
    with torch.no_grad():
        painted = bundle.model(x[None]).logits.argmax(1)[0]
    classes, counts = painted.unique(return_counts=True)
    assert [d.label for d in found.detections] == classes[counts.argsort(descending=True)].tolist()
    assert len(found.detections) >= 2
    for k, detection in enumerate(found.detections):
        assert torch.equal(detection.region, painted == detection.label)
        rows, columns = detection.region.nonzero().T
        scale = 128 / painted.shape[0]
        assert detection.box == (columns.min() * scale, rows.min() * scale, (columns.max() + 1) * scale,
                                 (rows.max() + 1) * scale)  # fmt: skip
        by_hand = _seg_gradcam_by_hand(bundle.model, x[None], bundle.default_layer, detection.label)
        torch.testing.assert_close(found.maps[k], by_hand, atol=1e-5, rtol=1e-4)


def test_the_region_score_equals_segmentation_score_on_a_hugging_face_output(segformer_folder):
    """``SegmentationScore`` read a Hugging Face output (a dict without "out") as torchvision's and failed with
    KeyError 'out'; both targets now give the same value."""
    import gradcam

    bundle = gradcam.load_model(f"hf:{segformer_folder}")
    x = torch.rand(1, 3, 128, 96)
    with torch.no_grad():
        output = bundle.model(x)
    painted = output.logits.argmax(1)[0] == 2
    detection = SegmentationDetector(conf=0.0).detect(output, (128, 96))[0]
    (car,) = [d for d in detection if d.label == 2] or [None]
    target = SegmentationScore(2, mask=painted.float())
    assert float(target(output)) == pytest.approx(float((output.logits[0, 2] * painted).sum()), rel=1e-6)
    if car is not None:
        assert float(SegmentationDetector().score(car)(output)) == pytest.approx(float(target(output)), rel=1e-6)


class TwoColours(nn.Module):
    """Hand-weighted segmentation: features say red and blue at each pixel (3 x 3 convolutions), the classifier
    paints background (a constant), "red" where red is strong, "blue" where blue is."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 2, 3, padding=1)
        self.classifier = nn.Conv2d(2, 3, 1)
        with torch.no_grad():
            self.features.weight.zero_()
            self.features.weight[0, 0, 1, 1], self.features.weight[0, 1, 1, 1] = 4.0, -2.0
            self.features.weight[1, 2, 1, 1], self.features.weight[1, 1, 1, 1] = 4.0, -2.0
            self.features.bias.zero_()
            self.classifier.weight.zero_()
            self.classifier.weight[1, 0], self.classifier.weight[2, 1] = 1.0, 1.0
            self.classifier.bias.copy_(torch.tensor([1.0, 0.0, 0.0]))

    def forward(self, x):
        return {"out": self.classifier(F.relu(self.features(x)))}


def _scene(red_at, blue_at):
    x = torch.full((1, 3, 64, 64), 0.2)
    if red_at is not None:
        top, left = red_at
        x[0, :, top : top + 16, left : left + 16] = torch.tensor([0.9, 0.1, 0.1]).view(3, 1, 1)
    if blue_at is not None:
        top, left = blue_at
        x[0, :, top : top + 16, left : left + 16] = torch.tensor([0.1, 0.1, 0.9]).view(3, 1, 1)
    return x


@pytest.mark.filterwarnings("ignore:.*zero")  # the background is a constant: its map is zero
def test_each_class_map_falls_on_its_own_object_and_follows_it():
    net = TwoColours().eval()
    for red_at, blue_at in (((8, 8), (40, 36)), ((36, 40), (6, 10))):
        found = explain_boxes(net, _scene(red_at, blue_at), SegmentationDetector(conf=0.0), layer="features")
        by_label = {d.label: k for k, d in enumerate(found.detections)}
        assert set(by_label) == {0, 1, 2}
        for label, (top, left) in ((1, red_at), (2, blue_at)):
            heat = found.maps[by_label[label]]
            inside = heat[top : top + 16, left : left + 16].mean()
            assert inside > 4 * heat.mean() and heat[top + 8, left + 8] > 0.9
            assert found.detections[by_label[label]].box == (left, top, left + 16, top + 16)
    # the blue square removed: its class is no longer painted, and the red one's map stays on red
    found = explain_boxes(net, _scene((8, 8), None), SegmentationDetector(conf=0.0), layer="features")
    assert [d.label for d in found.detections] == [0, 1]
    assert found.maps[1][8:24, 8:24].mean() > 4 * found.maps[1].mean()


def test_the_squash_is_carried_back_to_the_photo():
    photo = Image.new("RGB", (200, 150))
    x, frame = squashed(photo, (128, 96), (0.5,) * 3, (0.25,) * 3)
    assert x.shape == (3, 128, 96)
    assert frame.box_to_photo((0, 0, 96, 128)) == pytest.approx((0, 0, 200, 150))
    assert frame.box_to_photo((24, 64, 48, 96)) == pytest.approx((50, 75, 100, 112.5))
    assert frame.map_to_photo(torch.ones(1, 128, 96)).shape == (1, 150, 200)


def test_the_cli_explains_every_painted_class(segformer_folder, photo, tmp_path):
    photo.save(tmp_path / "street.png")
    out = tmp_path / "o"
    code = main(["explain", str(tmp_path / "street.png"), "--model", f"hf:{segformer_folder}", "--conf", "0",
                 "--max-boxes", "3", "--out", str(out)])  # fmt: skip
    assert code == 0
    manifest = json.loads((out / "results.json").read_text())
    validate(manifest)
    (record,) = manifest["images"]
    assert manifest["kind"] == "detection" and record["layer"] == "segformer.stages.3"
    assert 2 <= len(record["targets"]) <= 3
    for target in record["targets"]:
        assert target["label"] in NAMES.values() and 0 < target["area"] <= 1
        x1, y1, x2, y2 = target["box"]
        assert 0 <= x1 < x2 <= 200 and 0 <= y1 < y2 <= 150  # the region's box on the photo
        assert Image.open(target["files"]["overlay"]).size == (400, 300)  # a 200 px photo drawn 2x, legible
    assert (out / "street.gradcam.boxes.png").is_file()
    page = (out / "index.html").read_text()
    assert "street.gradcam.boxes.png" in page
    # the page said every detector's photo was letterboxed (SegFormer's is squashed) and scored by box confidence
    assert "letterboxed" not in page and "as the model&#x27;s own predictor resizes it" in page
    assert "mean probability over the pixels" in page


def test_the_web_app_explains_a_segmentation_model_class_by_class(segformer_folder, photo, tmp_path):
    import gradcam
    from gradcam.apps.web_detect import explain_detector_photo

    photo.save(tmp_path / "street.png")
    bundle = gradcam.load_model(f"hf:{segformer_folder}")
    overlays, found, files, layer = explain_detector_photo(
        bundle, "hf:seg", tmp_path / "street.png", ["gradcam"], 0.5, "jet", tmp_path / "web", "conf=0 max_boxes=2"
    )
    assert layer == "segformer.stages.3" and len(found) == 2
    assert all("% of the image" in caption for caption in found)
    assert len(overlays) == 3  # every class's picture, then one per class


def test_an_empty_map_is_drawn_as_the_photo_and_said_in_the_caption(tmp_path):
    """A class whose map is zero (the background of TwoColours: a constant) was drawn as the colour map's lowest
    colour over the whole photo, as if the model looked nowhere in a deep-blue way; now the photo shows."""
    from gradcam.render.detections import box_picture, boxes_picture

    photo = Image.new("RGB", (64, 48), (120, 130, 140))
    heat = torch.zeros(48, 64)
    picture = box_picture(photo, heat, (0, 0, 64, 48), "background 1.00", frame=False)
    assert picture.getpixel((40, 40)) == (120, 130, 140)
    regions = [torch.ones(48, 64, dtype=torch.bool)]
    picture = boxes_picture(photo, heat[None], [(0, 0, 64, 48)], ["bg"], regions=regions, fill_regions=True)
    assert picture.getpixel((40, 30)) == (120, 130, 140)
    net = TwoColours().eval()
    x = _scene((8, 8), None)
    Image.fromarray((x[0].permute(1, 2, 0) * 255).round().byte().numpy()).save(tmp_path / "scene.png")
    from functools import partial

    from gradcam.io.letterbox import squashed
    from gradcam.io.models import LoadedModel, Preprocessing
    from gradcam.pipeline.detect import explain_detections
    from gradcam.pipeline.options import DetectionSettings, RunOptions

    frame = partial(squashed, size=(64, 64), mean=(0.0,) * 3, std=(1.0,) * 3)
    bundle = LoadedModel("two-colours", net, Preprocessing(64, (64, 64), (0.0,) * 3, (1.0,) * 3),
                         labels=["background", "red", "blue"], default_layer="features",
                         extra={"detector": SegmentationDetector(), "frame": frame})  # fmt: skip
    with pytest.warns(UserWarning, match="zero"):
        record = explain_detections(bundle, tmp_path / "scene.png", "scene",
                                    RunOptions(out=tmp_path / "o", detection=DetectionSettings(0.0, 5)))  # fmt: skip
    background = next(t for t in record.targets if t.label == "background")
    shown = Image.open(background.files["overlay"]).convert("RGB")
    scene = Image.open(tmp_path / "scene.png").convert("RGB")
    factor = shown.width // scene.width  # a small photo is drawn enlarged, each pixel a block
    assert factor >= 2 and shown.size == (scene.width * factor, scene.height * factor)
    assert shown.getpixel((50 * factor, 50 * factor)) == scene.getpixel((50, 50))


def test_a_torchvision_segmentation_model_agrees_with_pytorch_grad_cam(tmp_path):
    """torchvision's segmentation models by name (``--weights none`` here: offline) are explained class by class;
    each class's map equals pytorch-grad-cam's semantic segmentation path (GradCAM with a
    SemanticSegmentationTarget on the painted mask, at the same layer), the reference its tutorial uses."""
    import gradcam

    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    torch.manual_seed(0)
    bundle = gradcam.load_model("lraspp_mobilenet_v3_large", weights="none")
    with torch.no_grad():  # random heads paint one class everywhere: sharpened, they paint several
        bundle.model.classifier.high_classifier.weight.mul_(30)
        bundle.model.classifier.low_classifier.weight.mul_(30)
    assert bundle.is_detector and bundle.extra["task"] == "segment" and bundle.default_layer == "backbone.16"
    assert bundle.labels is not None and bundle.labels[0] == "__background__" and len(bundle.labels) == 21
    photo = Image.fromarray((torch.rand(60, 80, 3) * 255).byte().numpy())
    x, frame = bundle.extra["frame"](photo)
    assert x.shape[1] == 520  # the shorter side to 520, as its weights' transforms resize
    found = explain_boxes(bundle.model, x[None], SegmentationDetector(conf=0.0, min_area=0.0), layer="backbone.16")
    with torch.no_grad():
        painted = bundle.model(x[None])["out"].argmax(1)[0]
    assert len(found.detections) == len(painted.unique()) >= 5

    class Out(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, images):
            return self.net(images)["out"]

    peer = GradCAM(Out(bundle.model), [bundle.model.get_submodule("backbone.16")])
    for k, detection in enumerate(found.detections):
        mask = (painted == detection.label).float().numpy()
        theirs = torch.from_numpy(peer(x[None], targets=[SemanticSegmentationTarget(detection.label, mask)])[0])
        assert torch.corrcoef(torch.stack([found.maps[k].flatten(), theirs.flatten()]))[0, 1] > 0.999


def test_a_torchvision_segmentation_model_runs_from_the_command_line(tmp_path):
    photo = Image.fromarray((torch.rand(60, 80, 3) * 255).byte().numpy())
    photo.save(tmp_path / "a.png")
    code = main(["explain", str(tmp_path / "a.png"), "--model", "lraspp_mobilenet_v3_large", "--weights", "none",
                 "--conf", "0", "--out", str(tmp_path / "o"), "--quiet"])  # fmt: skip
    assert code == 0
    data = json.loads((tmp_path / "o" / "results.json").read_text())
    validate(data)
    assert data["kind"] == "detection" and data["images"][0]["layer"] == "backbone.16"
    assert all(0 < t["area"] <= 1 for t in data["images"][0]["targets"])


def test_a_masking_method_scores_its_copies_on_the_region_first_painted():
    """Score-CAM's masked copies are scored over the pixels painted on the photo itself (a fixed mask, as
    pytorch-grad-cam's SemanticSegmentationTarget); the region was painted again from each copy's output, so a
    copy that painted the class elsewhere was scored somewhere else."""
    net = TwoColours().eval()
    x = _scene((8, 8), (40, 36))
    with torch.no_grad():
        output = net(x)
    (red,) = [d for d in SegmentationDetector(conf=0.0).detect(output, (64, 64))[0] if d.label == 1]
    moved = _scene((40, 8), (8, 36))  # the red square elsewhere: its logits are high outside the first region
    with torch.no_grad():
        other = net(moved)["out"]
    expected = (other[0, 1] * red.region.float()).sum()
    assert float(SegmentationDetector().score(red)({"out": other})) == pytest.approx(float(expected), rel=1e-6)
    found = explain_boxes(net, x, SegmentationDetector(conf=0.0), "scorecam", layer="features")
    by_label = {d.label: k for k, d in enumerate(found.detections)}
    heat = found.maps[by_label[1]]
    assert heat[8:24, 8:24].mean() > 4 * heat.mean()


def test_a_region_s_area_is_its_share_of_the_photo_not_of_the_padded_input(tmp_path):
    """A letterboxed input has padding; a class painted on the whole photo covers 100% of it (it was counted
    against the padded input: 50% here)."""
    from functools import partial

    from gradcam.io.letterbox import letterbox
    from gradcam.io.models import LoadedModel, Preprocessing
    from gradcam.pipeline.detect import explain_detections
    from gradcam.pipeline.options import DetectionSettings, RunOptions

    class RedAnywhere(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Conv2d(3, 2, 1)
            with torch.no_grad():
                self.features.weight.zero_()
                self.features.weight[1, 0] = 1.0  # class 1 where red > 0.5: the photo, not the grey padding
                self.features.bias.copy_(torch.tensor([0.0, -0.5]))

        def forward(self, x):
            return {"out": self.features(x)}

    Image.new("RGB", (64, 32), (255, 0, 0)).save(tmp_path / "red.png")
    frame = partial(letterbox, size=64, stride=64)  # 64 x 32 photo in a 64 x 64 input
    bundle = LoadedModel("red", RedAnywhere().eval(), Preprocessing(64, (64, 64), (0.0,) * 3, (1.0,) * 3),
                         labels=["background", "red"], default_layer="features",
                         extra={"detector": SegmentationDetector(), "frame": frame})  # fmt: skip
    with pytest.warns(UserWarning):
        record = explain_detections(bundle, tmp_path / "red.png", "red",
                                    RunOptions(out=tmp_path / "o", detection=DetectionSettings(0.0, 5)))  # fmt: skip
    red = next(t for t in record.targets if t.label == "red")
    assert red.area == 1.0 and red.box == (0, 0, 64, 32)


def test_only_the_named_classes_regions_are_explained():
    net = TwoColours().eval()
    with torch.no_grad():
        output = net(_scene((8, 8), (40, 36)))
    assert sorted(d.label for d in SegmentationDetector(conf=0.0).detect(output, (64, 64))[0]) == [0, 1, 2]
    assert [d.label for d in SegmentationDetector(conf=0.0, only=(2,)).detect(output, (64, 64))[0]] == [2]


def test_the_default_model_s_kind_is_decided_without_importing_torchvision():
    """Asking whether a plain name is one of torchvision's segmentation models imported torchvision (1.5 s) on
    every run of the embedded model, which never needs it."""
    import subprocess
    import sys

    code = ("import sys; from gradcam.pipeline.kinds import PHOTO, for_model; "
            "for_model(PHOTO, 'efficientnet_lite0'); print('torchvision' in sys.modules)")  # fmt: skip
    seen = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert seen.strip() == "False"
