"""Layer resolution: names, modules, several layers, the automatic choice, did-you-mean."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision

import gradcam
from gradcam.layers import list_layers, resolve_layers


@pytest.mark.parametrize(
    "arch, expected",
    [
        ("resnet18", "layer4"),
        ("vgg11", "features.19"),
        ("mobilenet_v3_small", "features"),
        ("densenet121", "features"),
        ("efficientnet_b0", "features"),
    ],
)
def test_automatic_choice(arch, expected):
    model = torchvision.models.get_model(arch, weights=None).eval()
    assert gradcam.auto_layer(model, torch.randn(1, 3, 64, 64)) == expected


def test_automatic_choice_timm_efficientnet_lite():
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    assert gradcam.auto_layer(model, torch.randn(1, 3, 64, 64)) == "bn2"


def test_tiny_cnn_skips_the_pooled_container(tiny_cnn, tiny_images):
    ex = gradcam.explain(tiny_cnn, tiny_images)
    assert ex.layer == "features.6"
    assert ex.raw.shape == (3, 1, 16, 16)


def test_unknown_layer_lists_close_names(tiny_cnn, tiny_images):
    with pytest.raises(ValueError, match=r"unknown layer 'feature\.6'; did you mean 'features\.6'"):
        gradcam.explain(tiny_cnn, tiny_images, layer="feature.6")


def test_module_and_several_layers(tiny_cnn, tiny_images):
    by_module = gradcam.explain(tiny_cnn, tiny_images, layer=tiny_cnn.features[6])
    assert by_module.layer == "features.6"
    fused = gradcam.explain(tiny_cnn, tiny_images, "layercam", layer=["features.2", "features.6"])
    assert fused.layers == ("features.2", "features.6")
    assert fused.layer == "features.2+features.6"
    assert fused.maps.shape == (3, 1, 32, 32)
    assert fused.raw.shape == (3, 1, 32, 32)  # the finer grid of the two
    assert fused.maps.min() >= 0 and fused.maps.max() <= 1
    # the later layer still gets gradients, though the graph starts at the earlier one
    assert fused.layer_results[1].raw.abs().sum() > 0
    alone = gradcam.explain(tiny_cnn, tiny_images, "layercam", layer="features.6")
    torch.testing.assert_close(fused.layer_results[1].raw, alone.raw)


def test_foreign_module_is_an_error(tiny_cnn):
    with pytest.raises(ValueError, match="not part of the model"):
        resolve_layers(tiny_cnn, torch.nn.ReLU())


def test_no_spatial_layer(tiny_images):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 4))
    with pytest.raises(ValueError, match="pass layer="):
        gradcam.explain(model, tiny_images)


def test_list_layers_marks_the_default(tiny_cnn, tiny_images):
    infos = list_layers(tiny_cnn, tiny_images)
    names = [info.name for info in infos]
    assert "features.6" in names and "features.7" not in names and "pool" not in names
    assert [info.name for info in infos if info.default] == ["features.6"]
    assert next(info for info in infos if info.name == "features.6").shape == (16, 16, 16)
