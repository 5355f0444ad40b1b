"""Hugging Face transformers classifiers as hf:FOLDER / hf:ORG/NAME: tiny models from configs, random weights."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

import gradcam
from gradcam.apps.cli import main
from gradcam.io.models import ModelLoadError, load_model

transformers = pytest.importorskip("transformers")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NAMES = {0: "cat", 1: "dog", 2: "cup", 3: "car", 4: "tree"}
ATTENTION = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def tiny(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    t = transformers
    config, cls = {
        "vit": (t.ViTConfig(**ATTENTION, image_size=64, patch_size=16), t.ViTForImageClassification),
        "deit": (t.DeiTConfig(**ATTENTION, image_size=64, patch_size=16), t.DeiTForImageClassification),
        "swin": (
            t.SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4),
            t.SwinForImageClassification,
        ),
        "convnext": (
            t.ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1]),
            t.ConvNextForImageClassification,
        ),
    }[kind]
    config.num_labels, config.id2label = len(NAMES), dict(NAMES)
    config.label2id = {v: k for k, v in NAMES.items()}
    return cls(config).eval()


def saved(kind: str, folder: Path, processor: object | None = None) -> Path:
    model = tiny(kind)
    model.save_pretrained(folder)
    (processor or transformers.ViTImageProcessor(size={"height": 64, "width": 64})).save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    "kind, layer, grid",
    [
        ("vit", "vit.layers.1.layernorm_before", (4, 4)),  # class token only: the last block's first norm
        ("deit", "deit.layers.1.layernorm_before", (4, 4)),  # class + distillation tokens
        ("swin", "swin.layernorm", (8, 8)),  # all tokens pooled: the final norm
        ("convnext", "convnext.encoder.stages.1", (8, 8)),  # a CNN: the last spatial map
    ],
)
def test_loaded_with_processor_names_and_automatic_layer(tmp_path, kind, layer, grid):
    bundle = load_model(f"hf:{saved(kind, tmp_path)}")
    assert bundle.labels == tuple(NAMES.values())
    assert bundle.preprocessing.crop == (64, 64) and bundle.preprocessing.squash
    x = torch.randn(2, 3, 64, 64)
    ex = gradcam.explain(bundle.model, x, targets="top-2")
    assert ex.layer == layer and ex.layer_results[0].raw.shape == (2, 2, *grid)
    assert float(ex.maps.std()) > 0  # not the empty map of a layer whose patch tokens do not reach the scores
    named = gradcam.explain(bundle.model, x, layer=layer, targets="top-2")
    torch.testing.assert_close(ex.maps, named.maps)


def test_vit_map_equals_grad_cam_by_hand(tmp_path):
    """Grad-CAM on the patch tokens of the last block's first norm, written out with plain torch hooks."""
    model = load_model(f"hf:{saved('vit', tmp_path)}").model
    x = torch.randn(1, 3, 64, 64)
    ex = gradcam.explain(model, x, targets=[3])
    kept = {}
    norm = model.get_submodule("vit.layers.1.layernorm_before")
    handle = norm.register_forward_hook(lambda m, a, out: kept.setdefault("a", out))
    try:
        logits = model(x).logits
    finally:
        handle.remove()
    activations = kept["a"]
    (gradient,) = torch.autograd.grad(logits[0, 3], activations)
    patches, grads = activations[0, 1:].detach(), gradient[0, 1:]  # 16 patch tokens, 32 channels
    weights = grads.mean(dim=0)
    cam = torch.relu(patches @ weights).reshape(4, 4)
    torch.testing.assert_close(ex.layer_results[0].raw[0, 0], cam, rtol=1e-4, atol=1e-6)


def test_a_layer_that_returns_a_tuple_is_explained_by_its_hidden_state(tmp_path):
    model = tiny("swin")
    x = torch.randn(1, 3, 64, 64)
    block = "swin.encoder.layers.1.blocks.0"  # returns (hidden_states, attentions)
    ex = gradcam.explain(model, x, layer=block, targets=[1])
    assert ex.layer_results[0].raw.shape == (1, 1, 8, 8) and float(ex.maps.std()) > 0
    for method in ("ablationcam", "scorecam"):  # the hook hands the tuple back with its hidden state replaced
        assert gradcam.explain(model, x, method, layer=block, targets=[1]).maps.shape == (1, 1, 64, 64)


def test_processor_kinds(tmp_path):
    from gradcam.io.hf import processor_preprocessing

    convnext = transformers.ConvNextImageProcessor(size={"shortest_edge": 224}, crop_pct=0.875)
    convnext.save_pretrained(tmp_path / "c")
    spec = processor_preprocessing(str(tmp_path / "c"), None, {})
    assert (spec.resize, spec.crop, spec.squash, spec.interpolation) == (256, (224, 224), False, "bicubic")
    cropped = transformers.ViTImageProcessor(size={"height": 256, "width": 256}, do_center_crop=True)
    cropped.crop_size = {"height": 224, "width": 224}
    cropped.save_pretrained(tmp_path / "v")
    spec = processor_preprocessing(str(tmp_path / "v"), None, {})
    assert (spec.resize, spec.crop, spec.squash) == (256, (224, 224), False)


def test_placeholder_label_names_are_not_names(tmp_path):
    model = tiny("vit")
    model.config.id2label = {i: f"LABEL_{i}" for i in range(5)}
    model.save_pretrained(tmp_path)
    transformers.ViTImageProcessor(size={"height": 64, "width": 64}).save_pretrained(tmp_path)
    assert load_model(f"hf:{tmp_path}").labels is None


def test_offline_hub_id_fails_at_once_naming_it(unreachable_hub):
    with pytest.raises(ModelLoadError, match=r"hf:nobody/no-such-model .*--weights FILE"):
        load_model("hf:nobody/no-such-model")
    start = time.monotonic()  # again, with transformers imported: what is timed is the hub's answer alone
    with pytest.raises(ModelLoadError):
        load_model("hf:nobody/no-such-model")
    assert time.monotonic() - start < 2  # no client retries
    with pytest.raises(ModelLoadError, match="no such folder"):
        load_model("hf:./not/a/folder")


def test_cli_with_a_fine_tuned_safetensors_head(tmp_path, capsys):
    folder = saved("vit", tmp_path / "base")
    torch.manual_seed(1)
    config = transformers.ViTConfig(**ATTENTION, image_size=64, patch_size=16, num_labels=3)
    from safetensors.torch import save_file

    save_file(transformers.ViTForImageClassification(config).state_dict(), tmp_path / "ft.safetensors")
    labels = tmp_path / "names.txt"
    labels.write_text("red\ngreen\nblue\n")
    out = tmp_path / "out"
    argv = [
        "explain",
        str(EXAMPLES / "chelsea.jpg"),
        "--model",
        f"hf:{folder}",
        "--weights",
        str(tmp_path / "ft.safetensors"),
    ]
    assert main([*argv, "--labels", str(labels), "--out", str(out), "--workers", "0", "--quiet"]) == 0
    assert "a 3-class head" in capsys.readouterr().err
    entry = json.loads((out / "results.json").read_text())["images"][0]
    assert entry["layer"] == "vit.layers.1.layernorm_before"
    assert {p["label"] for p in entry["predictions"]} <= {"red", "green", "blue"}
    out2 = tmp_path / "out2"
    assert main(["explain", str(EXAMPLES / "chelsea.jpg"), "--model", f"hf:{folder}", "--out", str(out2),
                 "--workers", "0", "--quiet"]) == 0  # fmt: skip
    entry = json.loads((out2 / "results.json").read_text())["images"][0]
    assert entry["predictions"][0]["label"] in NAMES.values()


def test_the_web_app_serves_a_hugging_face_folder(tmp_path, monkeypatch):
    pytest.importorskip("gradio")
    from gradcam.apps import web

    name = f"hf:{saved('vit', tmp_path / 'vit')}"
    monkeypatch.setattr(web, "SHELF", web.ModelShelf([name]))
    result = web.explain_photo(str(EXAMPLES / "chelsea.jpg"), name, ["gradcam"], None, "dog", 0.5, "jet",
                               out_dir=tmp_path)  # fmt: skip
    assert set(result.top5) <= set(NAMES.values()) and result.overlays[0][1].startswith("gradcam: dog")
    assert result.overlays[0][0].size == (451, 300)
    names, default = web.layer_choices(name)
    assert default == "vit.layers.1.layernorm_before" and default in names


def test_a_folder_asking_to_run_its_own_code_is_refused_without_trust(tmp_path, capsys):
    """#26 item 1: transformers asked "run the custom code? [y/N]" on the terminal, and one `y` imported the
    folder's Python. Without --trust-weights the folder's code never runs, and nothing asks."""
    folder = saved("vit", tmp_path / "custom")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForImageClassification": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    marker = tmp_path / "ran"
    (folder / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    with pytest.raises(ModelLoadError, match=r"auto_map.*--trust-weights") as refused:
        load_model(f"hf:{folder}")
    assert "\n" not in str(refused.value) and not marker.exists()
    code = main(["explain", str(EXAMPLES / "coffee.jpg"), "--model", f"hf:{folder}", "--out", str(tmp_path / "o")])
    captured = capsys.readouterr()
    assert code == 2 and "auto_map" in captured.err and captured.out == "" and not marker.exists()


def test_a_processor_asking_for_huge_inputs_is_refused(tmp_path):
    """#26 item 7: a preprocessor_config.json can set any working size; it is bounded like a photo."""
    folder = saved("vit", tmp_path / "huge", transformers.ViTImageProcessor(size={"height": 100000, "width": 100000}))
    with pytest.raises(ModelLoadError, match=r"100000 x 100000 inputs.*megapixels") as refused:
        load_model(f"hf:{folder}")
    assert "\n" not in str(refused.value)
