"""Hugging Face object detectors (#29 item 7): ``hf:FOLDER`` of a DETR checkpoint (built here from a config with
random weights, offline) gets one map per box; each equals Grad-CAM by hand at the query's class probability;
the boxes are the model's own post-processing's; the CLI writes them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from by_hand import leaf_gradcam, token_gradcam
from gradcam.apps.cli import main
from gradcam.detection import explain_boxes
from gradcam.io.hf_detection import HfDetector
from manifest_check import validate

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def detr_folder(tmp_path_factory):
    from transformers import DetrConfig, DetrForObjectDetection, ResNetConfig

    torch.manual_seed(0)
    backbone = ResNetConfig(num_channels=3, embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1],
                            out_features=["stage4"])  # fmt: skip
    config = DetrConfig(
        use_timm_backbone=False, backbone_config=backbone, use_pretrained_backbone=False, d_model=32,
        encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=12, num_labels=3,
        id2label={0: "cat", 1: "dog", 2: "cup"}, label2id={"cat": 0, "dog": 1, "cup": 2},
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("detr")
    DetrForObjectDetection(config).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({"size": {"shortest_edge": 96, "longest_edge": 160}}))
    return folder


@pytest.fixture(scope="module")
def photo():
    torch.manual_seed(2)
    pixels = (torch.rand(3, 12, 16) * 255).to(torch.uint8)
    big = F.interpolate(pixels[None].float(), size=(120, 160), mode="bilinear")[0].round().to(torch.uint8)
    return Image.fromarray(big.permute(1, 2, 0).numpy())


def test_detr_boxes_equal_gradcam_by_hand_and_its_own_post_processing(detr_folder, photo):
    import gradcam

    bundle = gradcam.load_model(f"hf:{detr_folder}")
    assert bundle.labels == ("cat", "dog", "cup") or list(bundle.labels) == ["cat", "dog", "cup"]
    assert bundle.default_layer == "model.input_projection"
    x, frame = bundle.extra["frame"](photo)
    assert x.shape == (3, 96, 128) and frame.inner == (96, 128)  # the shorter side to 96
    detector = HfDetector(conf=0.0, max_boxes=4)
    found = explain_boxes(bundle.model, x[None], detector)
    assert len(found.detections) == 4
    with torch.no_grad():
        output = bundle.model(x[None])
    probabilities = output.logits.softmax(-1)[0, :, :-1]
    best = probabilities.max(-1)
    # the post-processing of DETR's image processor: each query's best class, the most confident first
    processor = transformers.DetrImageProcessor()
    theirs = processor.post_process_object_detection(output, threshold=0.0, target_sizes=[(96, 128)])[0]
    order = theirs["scores"].argsort(descending=True)[:4]
    assert [d.confidence for d in found.detections] == pytest.approx(theirs["scores"][order].tolist(), rel=1e-5)
    assert [d.label for d in found.detections] == theirs["labels"][order].tolist()
    for detection, box in zip(found.detections, theirs["boxes"][order].tolist(), strict=True):
        assert detection.box == pytest.approx(tuple(box), abs=1e-3)
        assert detection.confidence == pytest.approx(float(best.values[detection.anchor]), rel=1e-5)
    # each map: Grad-CAM by hand with a plain hook at the query's class probability
    for k, detection in enumerate(found.detections):

        def score(d=detection):
            return bundle.model(pixel_values=x[None]).logits.softmax(-1)[0, d.anchor, d.label]

        expected = leaf_gradcam(bundle.model, ["model.input_projection"], score, tuple(x.shape[1:]))
        torch.testing.assert_close(found.maps[k], expected, atol=1e-4, rtol=1e-4)


def test_the_cli_explains_a_detr_folder_box_by_box(detr_folder, photo, tmp_path):
    photo.save(tmp_path / "room.png")
    out = tmp_path / "out"
    code = main(["explain", str(tmp_path / "room.png"), "--model", f"hf:{detr_folder}", "--conf", "0",
                 "--max-boxes", "3", "--out", str(out), "--quiet"])  # fmt: skip
    assert code == 0
    data = json.loads((out / "results.json").read_text())
    validate(data)
    record = data["images"][0]
    assert data["kind"] == "detection" and len(record["targets"]) == 3
    assert {t["label"] for t in record["targets"]} <= {"cat", "dog", "cup"}
    for target in record["targets"]:
        x1, y1, x2, y2 = target["box"]
        assert 0 <= x1 <= x2 <= 160 and 0 <= y1 <= y2 <= 120  # on the photo's own pixels
        assert Image.open(target["files"]["overlay"]).size == (320, 240)  # a 160 px photo drawn 2x, legible


def test_sigmoid_heads_keep_the_top_query_class_pairs():
    logits = torch.tensor([[[2.0, -3.0], [0.5, 1.5], [-4.0, -4.0]]])  # 3 queries, 2 classes
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.25, 0.25, 0.5, 0.5], [0.9, 0.9, 0.1, 0.1]]])
    found = HfDetector(sigmoid=True, conf=0.5, max_boxes=2).detect({"logits": logits, "pred_boxes": boxes}, (10, 20))[0]
    assert [(d.anchor, d.label) for d in found] == [(0, 0), (1, 1)]
    assert found[0].box == pytest.approx((8.0, 4.0, 12.0, 6.0))
    assert found[0].confidence == pytest.approx(float(torch.sigmoid(torch.tensor(2.0))))


@pytest.fixture(scope="module")
def rtdetr_folder(tmp_path_factory):
    from transformers import RTDetrConfig, RTDetrForObjectDetection, RTDetrResNetConfig

    torch.manual_seed(0)
    backbone = RTDetrResNetConfig(embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1],
                                  out_features=["stage2", "stage3", "stage4"], layer_type="basic")  # fmt: skip
    config = RTDetrConfig(
        backbone_config=backbone, encoder_hidden_dim=32, encoder_in_channels=[32, 64, 128], d_model=32,
        encoder_ffn_dim=64, decoder_ffn_dim=64, decoder_layers=1, encoder_layers=1, num_queries=20, num_labels=3,
        decoder_in_channels=[32, 32, 32], num_feature_levels=3, encoder_attention_heads=2, decoder_attention_heads=2,
        id2label={0: "cat", 1: "dog", 2: "cup"}, label2id={"cat": 0, "dog": 1, "cup": 2},
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("rtdetr")
    RTDetrForObjectDetection(config).save_pretrained(folder)
    # RT-DETR's processor resizes to a fixed height and width (640 x 640 for the published checkpoints)
    (folder / "preprocessor_config.json").write_text(json.dumps({"size": {"height": 128, "width": 96},
                                                                 "do_normalize": False}))  # fmt: skip
    return folder


def test_rt_detr_from_a_config_boxes_equal_its_post_processing_and_gradcam_by_hand(rtdetr_folder, photo):
    """#29 item 7: RT-DETR (a sigmoid head reading three scales) built from a config: the photo squashed to the
    processor's height and width (it was resized by its shorter side, and the model failed on the odd size), the
    boxes are its own processor's, every scale's projection is explained, and each box's map equals Grad-CAM by
    hand at its query's class probability."""
    import gradcam

    bundle = gradcam.load_model(f"hf:{rtdetr_folder}")
    assert bundle.extra["detector"].sigmoid
    layers = bundle.default_layer.split(",")
    assert layers == ["model.encoder_input_proj.0", "model.encoder_input_proj.1", "model.encoder_input_proj.2"]
    x, frame = bundle.extra["frame"](photo)
    assert x.shape == (3, 128, 96) and frame.box_to_photo((0, 0, 96, 128)) == pytest.approx((0, 0, 160, 120))
    found = explain_boxes(bundle.model, x[None], HfDetector(sigmoid=True, conf=0.0, max_boxes=3))
    assert len(found.detections) == 3
    with torch.no_grad():
        output = bundle.model(pixel_values=x[None])
    processor = transformers.RTDetrImageProcessor()
    theirs = processor.post_process_object_detection(output, threshold=0.0, target_sizes=[(128, 96)])[0]
    order = theirs["scores"].argsort(descending=True)[:3]
    assert [d.confidence for d in found.detections] == pytest.approx(theirs["scores"][order].tolist(), rel=1e-5)
    assert [d.label for d in found.detections] == theirs["labels"][order].tolist()
    for detection, box in zip(found.detections, theirs["boxes"][order].tolist(), strict=True):
        assert detection.box == pytest.approx(tuple(box), abs=1e-3)
    for k, d in enumerate(found.detections):
        expected = leaf_gradcam(bundle.model, layers,
                                lambda d=d: bundle.model(pixel_values=x[None]).logits[0, d.anchor, d.label].sigmoid(),
                                tuple(x.shape[1:]))  # fmt: skip
        torch.testing.assert_close(found.maps[k], expected, atol=1e-4, rtol=1e-4)


@pytest.mark.filterwarnings("ignore:.*zero")
def test_yolos_boxes_equal_gradcam_by_hand_on_its_patch_tokens_only(photo):
    """#29 item 7: YOLOS (a ViT whose tokens are a class token, the patches, then its detection tokens) built
    from a config. Before, its tokens were laid on a grid by guessing a prefix of 11 (the 10 detection tokens
    taken for a prefix, every patch shifted); now the detection tokens trail the grid, and each box's map equals
    Grad-CAM by hand on the patch tokens alone, at the last block's first norm."""
    from transformers import YolosConfig, YolosForObjectDetection

    torch.manual_seed(0)
    config = YolosConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         image_size=[96, 128], patch_size=16, num_detection_tokens=10, num_labels=3)  # fmt: skip
    net = YolosForObjectDetection(config).eval()
    x = torch.rand(1, 3, 96, 144)  # 6 x 9 patches: 1 + 54 + 10 tokens
    detector = HfDetector(conf=0.0, max_boxes=3)
    layer = detector.default_layer(net)
    assert layer == "vit.encoder.layer.1.layernorm_before"
    found = explain_boxes(net, x, detector)
    assert len(found.detections) == 3
    captured = {}
    handle = net.get_submodule(layer).register_forward_hook(lambda m, i, o: captured.setdefault("a", o))
    try:
        output = net(pixel_values=x)
    finally:
        handle.remove()
    tokens = captured["a"]
    assert tokens.shape[1] == 65
    for k, d in enumerate(found.detections):
        score = output.logits.softmax(-1)[0, d.anchor, d.label]
        (grad,) = torch.autograd.grad(score, tokens, retain_graph=True)
        expected = token_gradcam(tokens, grad, (6, 9), (96, 144))  # the 10 detection tokens after the grid left out
        torch.testing.assert_close(found.maps[k], expected, atol=1e-4, rtol=1e-4)


def owl_folder(folder, kind="owlvit"):
    """A tiny OWL-ViT or OWLv2 saved from a config, with a small word-level tokenizer (offline)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["[PAD]", "[UNK]", "[EOS]", "a", "cat", "cup", "of", "coffee", "tree"]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                                eos_token="[EOS]", model_max_length=16)  # fmt: skip
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=16,
                max_position_embeddings=16, bos_token_id=1, eos_token_id=2, pad_token_id=0)  # fmt: skip
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=64,
                  patch_size=16)  # fmt: skip
    torch.manual_seed(0)
    if kind == "owlv2":
        config = transformers.Owlv2Config(text_config=text, vision_config=vision, projection_dim=32)
        model = transformers.Owlv2ForObjectDetection(config)
    else:
        config = transformers.OwlViTConfig(text_config=text, vision_config=vision, projection_dim=32)
        model = transformers.OwlViTForObjectDetection(config)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({"size": {"height": 64, "width": 64}}))
    return folder


@pytest.fixture(scope="module")
def owlvit_folder(tmp_path_factory):
    return owl_folder(tmp_path_factory.mktemp("owlvit"))


def _owl_box_by_hand(bundle, net, x, detection):
    """A box's probability and its Grad-CAM by hand: one plain hook on the image tower's last block's first norm,
    whose tokens are a class token, then 4 x 4 patches."""
    captured: dict = {}
    layer = bundle.model.get_submodule(bundle.default_layer)
    handle = layer.register_forward_hook(lambda m, i, o: captured.setdefault("a", o))
    try:
        output = bundle.model(input_ids=net.input_ids, pixel_values=x[None], attention_mask=net.attention_mask)
    finally:
        handle.remove()
    score = output.logits[0, detection.anchor, detection.label].sigmoid()
    (grad,) = torch.autograd.grad(score, captured["a"])
    return float(score), token_gradcam(captured["a"], grad, (4, 4), tuple(x.shape[1:]))


def test_owl_vit_text_queries_are_its_classes_and_each_box_is_gradcam_by_hand(owlvit_folder, photo):
    """#29 item 7: OWL-ViT from a config with text queries: the queries are the classes, the boxes the top
    (patch, query) pairs of its sigmoid head, each box's map Grad-CAM by hand at its patch's probability for its
    query, on the image tower's patch tokens; the model is the OWL model's own modules (nothing copied)."""
    import gradcam
    from gradcam.io.hf_owl import TextQueries

    bundle = gradcam.load_model(f"hf:{owlvit_folder}")
    assert bundle.default_layer == "owlvit.vision_model.encoder.layers.1.layer_norm1"
    net = bundle.extra["queries"](["a cat", "a cup of coffee"])
    assert isinstance(net, TextQueries) and net.owlvit is bundle.model.owlvit
    x, frame = bundle.extra["frame"](photo)
    assert x.shape == (3, 64, 64)
    found = explain_boxes(net, x[None], HfDetector(sigmoid=True, conf=0.0, max_boxes=3), layer=bundle.default_layer)
    assert len(found.detections) == 3 and {d.label for d in found.detections} <= {0, 1}
    for k, d in enumerate(found.detections):
        score, expected = _owl_box_by_hand(bundle, net, x, d)
        assert score == pytest.approx(d.confidence, rel=1e-5)
        torch.testing.assert_close(found.maps[k], expected, atol=1e-4, rtol=1e-4)


def test_an_owl_processor_that_does_not_normalise_is_followed(tmp_path, photo):
    """The OWL loader read the processor's mean and std itself and ignored ``do_normalize: false`` (every other
    Hugging Face loader follows it); where the processor names none, CLIP's, as OWL's processors do."""
    import gradcam

    folder = owl_folder(tmp_path)
    assert gradcam.load_model(f"hf:{folder}").preprocessing.mean == transformers.OwlViTImageProcessor().image_mean
    (folder / "preprocessor_config.json").write_text(json.dumps({"size": {"height": 64, "width": 64},
                                                                 "do_normalize": False}))  # fmt: skip
    bundle = gradcam.load_model(f"hf:{folder}")
    assert (bundle.preprocessing.mean, bundle.preprocessing.std) == ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    x, _ = bundle.extra["frame"](photo)
    plain = torch.from_numpy(np.asarray(photo.convert("RGB").resize((64, 64), Image.BICUBIC))).permute(2, 0, 1) / 255
    assert x.min() >= 0 and (x - plain).abs().mean() < 0.02  # the photo's own pixels, squashed, not normalised


def test_the_cli_explains_an_owl_vit_folder_for_its_prompts(owlvit_folder, photo, tmp_path, capsys):
    photo.save(tmp_path / "room.png")
    out = tmp_path / "out"
    code = main(["explain", str(tmp_path / "room.png"), "--model", f"hf:{owlvit_folder}", "--prompt", "a cat",
                 "--prompt", "a tree", "--conf", "0", "--max-boxes", "2", "--out", str(out), "--quiet"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    data = json.loads((out / "results.json").read_text())
    validate(data)
    assert {t["label"] for t in data["images"][0]["targets"]} <= {"a cat", "a tree"}
    assert len(data["images"][0]["targets"]) == 2
    code = main(["explain", str(tmp_path / "room.png"), "--model", f"hf:{owlvit_folder}", "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--prompt" in err and len(err.splitlines()) == 1


def test_owlv2_pads_the_photo_to_a_square_and_its_boxes_are_gradcam_by_hand(tmp_path):
    """OWLv2 (it was refused): its processor pads the photo at the bottom and right to a square, then resizes; the
    frame does the same (tested against Owlv2ImageProcessor's pixels), boxes and maps come back to the photo, and
    each box's map equals Grad-CAM by hand on its image tower's patch tokens."""
    import gradcam

    owl_folder(tmp_path, "owlv2")
    bundle = gradcam.load_model(f"hf:{tmp_path}")
    assert bundle.default_layer == "owlv2.vision_model.encoder.layers.1.layer_norm1"
    photo = Image.fromarray((torch.rand(30, 60, 3) * 255).byte().numpy())
    x, frame = bundle.extra["frame"](photo)
    theirs = transformers.Owlv2ImageProcessor(size={"height": 64, "width": 64})(photo, return_tensors="pt")
    assert x.shape == (3, 64, 64) and frame.inner == (32, 64)
    assert (x[:, 34:] - theirs["pixel_values"][0, :, 34:]).abs().max() < 1e-4  # the padding, below the photo
    assert (x[:, :30] - theirs["pixel_values"][0, :, :30]).abs().mean() < 0.1  # PIL's resize, not torchvision's
    assert frame.box_to_photo((0, 0, 64, 32)) == pytest.approx((0, 0, 60, 30))
    net = bundle.extra["queries"](["a cat"])
    found = explain_boxes(net, x[None], HfDetector(sigmoid=True, conf=0.0, max_boxes=2), layer=bundle.default_layer)
    for k, d in enumerate(found.detections):
        _, expected = _owl_box_by_hand(bundle, net, x, d)
        torch.testing.assert_close(found.maps[k], expected, atol=1e-4, rtol=1e-4)


def test_the_web_app_looks_for_an_owl_vit_s_text_queries(owlvit_folder, photo, tmp_path, monkeypatch):
    """OWL-ViT in the web app: the queries are typed in Target (separated by ;), as for CLIP; none is a message."""
    pytest.importorskip("gradio")
    from gradcam.apps import web
    from gradcam.apps.web_state import AppError

    photo.save(tmp_path / "room.png")
    name = f"hf:{owlvit_folder}"
    monkeypatch.setattr(web, "SHELF", web.ModelShelf([name]))
    result = web.explain_photo(str(tmp_path / "room.png"), name, ["gradcam"], None, "a cat; a tree", 0.5, "jet",
                               out_dir=tmp_path / "out", method_options="conf=0 max_boxes=2")  # fmt: skip
    assert len(result.overlays) == 3 and all(label.split(" (box")[0] in ("a cat", "a tree") for label in result.top5)
    assert result.frame == "the whole photo, as the model's own predictor resizes it"  # not the Frame choice's
    with pytest.raises(AppError, match="type it in Target"):
        web.explain_photo(str(tmp_path / "room.png"), name, ["gradcam"], None, "", 0.5, "jet",
                          out_dir=tmp_path / "o2", method_options="conf=0")  # fmt: skip


def test_only_the_named_classes_boxes_are_kept_by_either_head():
    logits = torch.tensor([[[2.0, -3.0], [0.5, 1.5], [-4.0, -4.0]]])  # 3 queries, 2 classes
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.25, 0.25, 0.5, 0.5], [0.9, 0.9, 0.1, 0.1]]])
    output = {"logits": logits, "pred_boxes": boxes}
    sigmoid = HfDetector(sigmoid=True, conf=0.0, max_boxes=2, only=(1,)).detect(output, (10, 20))[0]
    assert [(d.anchor, d.label) for d in sigmoid] == [(1, 1), (0, 1)]
    with_no_object = {"logits": torch.cat([logits, torch.zeros(1, 3, 1)], -1), "pred_boxes": boxes}
    softmax = HfDetector(conf=0.0, max_boxes=3, only=(1,)).detect(with_no_object, (10, 20))[0]
    assert [(d.anchor, d.label) for d in softmax] == [(1, 1)]  # query 0's best class is 0: not re-labelled
