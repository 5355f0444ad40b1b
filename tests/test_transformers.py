"""Vision transformers: token sequences laid back on their grid, channels-last outputs, default layers."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision

import gradcam
from gradcam.spatial import ChannelsLast, LayoutError, Spatial, TokenGrid, infer_layout


@pytest.mark.parametrize(
    "shape, size, expected",
    [
        ((2, 197, 192), (224, 224), TokenGrid(1, 14, 14)),  # ViT: class token
        ((2, 198, 192), (224, 224), TokenGrid(2, 14, 14)),  # DeiT distilled: class + distillation
        ((2, 201, 192), (224, 224), TokenGrid(5, 14, 14)),  # class + 4 register tokens
        ((2, 281, 192), (224, 320), TokenGrid(1, 14, 20)),  # non-square input
        ((2, 145, 192), (192, 192), TokenGrid(1, 12, 12)),  # non-224 size
        ((2, 512, 7, 7), (224, 224), Spatial()),
        ((2, 7, 7, 768), (224, 224), ChannelsLast()),
        ((2, 7, 10, 768), (224, 320), ChannelsLast()),
    ],
)
def test_layout_inference(shape, size, expected):
    assert infer_layout(torch.zeros(shape), size) == expected


def test_layout_round_trip_and_overrides():
    tokens = torch.randn(2, 201, 8)
    layout = infer_layout(tokens, (224, 224))
    torch.testing.assert_close(layout.from_spatial(layout.to_spatial(tokens), tokens), tokens)
    assert infer_layout(tokens, (224, 224), prefix_tokens=9, grid=(16, 12)) == TokenGrid(9, 16, 12)
    with pytest.raises(LayoutError, match="--token-grid"):
        infer_layout(torch.zeros(2, 7, 8), (224, 224), prefix_tokens=0)


def small_vit(**kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, depth=2, **kwargs).eval()


@pytest.mark.parametrize("method", ["gradcam", "layercam", "eigencam", "ablationcam"])
def test_timm_vit(method):
    ex = gradcam.explain(small_vit(), torch.randn(2, 3, 224, 224), method, targets=[1, 2])
    assert ex.layer == "blocks.1.norm1"
    assert ex.raw.shape == (2, 1, 14, 14) and ex.maps.shape == (2, 1, 224, 224)
    assert ex.maps.std() > 0


def test_vit_with_register_tokens_non_square():
    model = small_vit(reg_tokens=4, img_size=(160, 224))
    ex = gradcam.explain(model, torch.randn(1, 3, 160, 224))
    assert ex.raw.shape == (1, 1, 10, 14)


def test_deit_distilled():
    torch.manual_seed(0)
    model = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, num_classes=10, depth=2).eval()
    ex = gradcam.explain(model, torch.randn(1, 3, 224, 224))
    assert ex.raw.shape == (1, 1, 14, 14)


def test_ablation_through_tokens_matches_whole_model_reruns():
    """Ablating a channel of the token grid leaves the class token alone: checked against a re-run of the
    whole model with that feature zeroed on the patch tokens."""
    model, x = small_vit(), torch.randn(1, 3, 224, 224)
    ex = gradcam.explain(model, x, "ablationcam", targets=[4])
    layer = model.get_submodule("blocks.1.norm1")
    with torch.no_grad():
        base = model(x)[0, 4]

        def zero_feature(module, args, output):
            output = output.clone()
            output[:, 1:, 5] = 0
            return output

        handle = layer.register_forward_hook(zero_feature)
        ablated = model(x)[0, 4]
        handle.remove()
    expected = (base - ablated) / base
    torch.testing.assert_close(ex.layer_results[0].weights[0, 0, 5], expected, rtol=1e-4, atol=1e-5)


def test_torchvision_vit_and_swin():
    torch.manual_seed(0)
    vit = torchvision.models.vit_b_16(num_classes=10).eval()
    torch.nn.init.normal_(vit.heads.head.weight)  # torchvision starts the head at zero: no gradient at all
    ex = gradcam.explain(vit, torch.randn(1, 3, 224, 224))
    assert ex.layer == "encoder.layers.encoder_layer_11.ln_1" and ex.raw.shape == (1, 1, 14, 14)
    assert ex.maps.std() > 0
    swin = torchvision.models.swin_t(num_classes=10).eval()
    ex = gradcam.explain(swin, torch.randn(1, 3, 224, 224))
    assert ex.raw.shape == (1, 1, 7, 7) and ex.maps.std() > 0
    # the channels-last stage output works too
    ex = gradcam.explain(swin, torch.randn(1, 3, 224, 224), layer="norm")
    assert ex.raw.shape == (1, 1, 7, 7)


def test_timm_swin_channels_last():
    torch.manual_seed(0)
    model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=10, depths=(1, 1, 1, 1))
    ex = gradcam.explain(model.eval(), torch.randn(1, 3, 224, 224))
    assert ex.layer == "norm" and ex.raw.shape == (1, 1, 7, 7)
