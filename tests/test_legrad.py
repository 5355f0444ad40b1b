"""LeGrad (vision transformers): by hand with the attention probabilities written out, against torchcam's
LeGrad (test oracle only), on timm and Hugging Face ViTs, from the command line, and the model left as it was."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gradcam
from gradcam.apps.cli import main
from gradcam.methods.legrad import LeGrad
from gradcam.result import normalise, upsample
from test_model_state import assert_same, snapshot


def torchvision_vit(size: int = 64) -> torch.nn.Module:
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(image_size=size, patch_size=8, num_layers=5, num_heads=4, hidden_dim=32,
                              mlp_dim=64, num_classes=6)  # fmt: skip
    torch.nn.init.normal_(model.heads.head.weight, std=0.5)
    return model.eval()


def by_hand(model, x: torch.Tensor, target: int, chosen: range) -> torch.Tensor:
    """The torchvision ViT's forward pass written out with its attention probabilities ``A`` as tensors,
    ``s^l = heads(ln(mean z^l))`` and ``mean_l mean_{h,q} ReLU(ds^l/dA^l)`` at the patch keys."""
    with torch.enable_grad():
        tokens = model._process_input(x)
        h = torch.cat([model.class_token.expand(len(x), -1, -1), tokens], dim=1) + model.encoder.pos_embedding
        total = 0
        for index, block in enumerate(model.encoder.layers):
            a = block.ln_1(h)
            mha = block.self_attention
            q, k, v = F.linear(a, mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)
            heads, d = mha.num_heads, a.shape[-1] // mha.num_heads
            q, k, v = (t.unflatten(-1, (heads, d)).transpose(1, 2) for t in (q, k, v))
            attention = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
            mixed = (attention @ v).transpose(1, 2).flatten(2)
            x1 = mha.out_proj(mixed) + h
            z = x1 + block.mlp(block.ln_2(x1))
            if index in chosen:
                s = model.heads(model.encoder.ln(z.mean(dim=1)))[:, target].sum()
                (gradient,) = torch.autograd.grad(s, attention, retain_graph=True)
                total = total + gradient.clamp(min=0).mean(dim=(1, 2))[:, 1:]
            h = z
    side = math.isqrt(total.shape[-1])
    grid = (total / len(chosen)).reshape(len(x), 1, side, side).detach()
    return normalise(upsample(normalise(grid), tuple(x.shape[-2:])))


def test_legrad_by_hand_on_a_torchvision_vit():
    model, x = torchvision_vit(), torch.randn(2, 3, 64, 64)
    ex = gradcam.explain(model, x, "legrad", targets=4)
    assert ex.layer == "encoder.layers.encoder_layer_1 ... encoder.layers.encoder_layer_4 (4 blocks)"
    torch.testing.assert_close(ex.maps, by_hand(model, x, 4, range(1, 5)), atol=1e-5, rtol=1e-4)
    every = gradcam.explain(model, x, LeGrad(depth=10), targets=2)  # more than there are: all 5
    torch.testing.assert_close(every.maps, by_hand(model, x, 2, range(0, 5)), atol=1e-5, rtol=1e-4)
    listed = gradcam.explain(model, x, "legrad", layer=["encoder.layers.encoder_layer_0.ln_1",
                                                         "encoder.layers.encoder_layer_2"], targets=2)  # fmt: skip
    torch.testing.assert_close(listed.maps, by_hand(model, x, 2, range(0, 3, 2)), atol=1e-5, rtol=1e-4)


def test_legrad_matches_torchcam():
    from torchcam.methods import LeGrad as TorchcamLeGrad

    model = torchvision_vit()
    torch.manual_seed(1)
    x = torch.randn(2, 3, 64, 64)
    ours = gradcam.explain(model, x, "legrad", targets=[[3, 5], [1, 0]])
    for b, classes in enumerate([[3, 5], [1, 0]]):
        for j, k in enumerate(classes):
            with TorchcamLeGrad(model, list(model.encoder.layers)[-4:]) as cam:
                theirs = cam(k, model(x[b : b + 1]))[0]
            theirs = normalise(upsample(theirs[None], (64, 64)))[0, 0]
            r = np.corrcoef(theirs.flatten().numpy(), ours.maps[b, j].flatten().numpy())[0, 1]
            assert r >= 0.999, (b, k, r)


def test_legrad_on_timm_against_its_own_attention_probabilities():
    """timm's unfused attention hands its probabilities to ``attn_drop``: read them there and take the
    gradients directly, an independent check of ``dS/dA = (dS/do) V^T`` with timm's fused qkv."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5, img_size=64, patch_size=8,
                              depth=3).eval()  # fmt: skip
    x = torch.randn(1, 3, 64, 64)
    ours = gradcam.explain(model, x, "legrad", targets=2)
    assert ours.layer == "blocks.0 ... blocks.2 (3 blocks)"
    probabilities, outputs = [], []
    hooks = []
    for block in model.blocks:
        block.attn.fused_attn = False
        hooks.append(block.attn.attn_drop.register_forward_hook(lambda m, i, o: probabilities.append(o)))
        hooks.append(block.register_forward_hook(lambda m, i, o: outputs.append(o)))
    with torch.enable_grad():
        model(x)
        total = 0
        for attention, z in zip(probabilities, outputs, strict=True):
            s = model.head(model.fc_norm(model.norm(z.mean(dim=1))))[:, 2].sum()
            (gradient,) = torch.autograd.grad(s, attention, retain_graph=True)
            total = total + gradient.clamp(min=0).mean(dim=(1, 2))[:, 1:]
    for hook in hooks:
        hook.remove()
    expected = normalise(upsample(normalise(total.reshape(1, 1, 8, 8)), (64, 64)))
    torch.testing.assert_close(ours.maps, expected, atol=1e-5, rtol=1e-4)


def test_legrad_on_a_hugging_face_vit():
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(image_size=64, patch_size=8, hidden_size=32, num_hidden_layers=3,
                                    num_attention_heads=4, intermediate_size=64, num_labels=4)  # fmt: skip
    torch.manual_seed(0)
    model = transformers.ViTForImageClassification(config).eval()
    ex = gradcam.explain(model, torch.randn(2, 3, 64, 64), "legrad", targets="top-2")
    assert ex.maps.shape == (2, 2, 64, 64) and ex.layer.endswith("(3 blocks)")
    assert float(ex.maps.amax()) == 1.0 and float(ex.maps.std()) > 0.05


def test_legrad_leaves_the_model_as_it_was_also_when_it_raises():
    model = torchvision_vit().train()
    model.encoder.layers[0].ln_1.weight.requires_grad_(False)
    model.heads.head.weight.grad = torch.ones_like(model.heads.head.weight)
    before = snapshot(model)
    gradcam.explain(model, torch.randn(1, 3, 64, 64), "legrad")
    assert_same(before, snapshot(model))

    def broken(tokens):
        raise RuntimeError("projection failed")

    with pytest.raises(RuntimeError, match="projection failed"):
        gradcam.explain(model, torch.randn(1, 3, 64, 64), LeGrad(projection=broken))
    assert_same(before, snapshot(model))


def test_legrad_refuses_what_it_cannot_explain_in_one_line():
    import torchvision

    with pytest.raises(ValueError, match="legrad explains vision transformers: layer 'layer4'"):
        gradcam.explain(torchvision.models.resnet18().eval(), torch.randn(1, 3, 64, 64), "legrad")
    with pytest.raises(ValueError, match="depth must be a whole number"):
        LeGrad(depth=0)
    with pytest.raises(ValueError, match="not 1-D inputs"):
        gradcam.explain(torchvision_vit(), torch.randn(1, 3, 64), "legrad")


def test_legrad_from_the_command_line(tmp_path, capsys):
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(photo)
    out = tmp_path / "out"
    argv = ["explain", str(photo), "--model", "py:tiny_models:TinyViT", "--method", "legrad",
            "--method-option", "depth=2", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    record = __import__("json").loads((out / "results.json").read_text())["images"][0]
    assert record["layer"] == "encoder.layers.encoder_layer_1 ... encoder.layers.encoder_layer_2 (2 blocks)"
    overlay = Image.open(record["targets"][0]["files"]["overlay"])
    assert overlay.width == 320 and overlay.height > 240  # the photo's own size, its legend below


def test_legrad_and_fullgrad_run_the_model_once():
    """The classes are chosen from the method's own forward pass: no second pass just to pick them."""
    import torchvision

    for model, method in [(torchvision_vit(), "legrad"), (torchvision.models.resnet18().eval(), "fullgrad")]:
        calls: list[int] = []
        handle = model.register_forward_hook(lambda m, i, o, calls=calls: calls.append(1))
        try:
            ex = gradcam.explain(model, torch.randn(2, 3, 64, 64), method, targets="top-2")
        finally:
            handle.remove()
        assert len(calls) == 1, method
        assert ex.targets.shape == (2, 2) and torch.equal(ex.targets[:, 0], ex.logits.argmax(dim=1))
