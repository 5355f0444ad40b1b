"""The user's model is left exactly as it was: mode, requires_grad, .grad, hooks; also on errors."""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision

import gradcam
from tiny_models import CNN_METHODS, TinyCNN


def snapshot(model: torch.nn.Module) -> dict:
    return {
        "modes": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()],
        "state": {k: v.clone() for k, v in model.state_dict().items()},
    }


def assert_same(before: dict, after: dict) -> None:
    assert before["modes"] == after["modes"]
    assert before["requires_grad"] == after["requires_grad"]
    assert before["hooks"] == after["hooks"]
    for a, b in zip(before["grads"], after["grads"], strict=False):
        assert (a is None and b is None) or torch.equal(a, b)
    for key in before["state"]:
        torch.testing.assert_close(before["state"][key], after["state"][key], rtol=0, atol=0)


def varied_model() -> TinyCNN:
    """Train mode (so BatchNorm would update its statistics), a frozen layer and a stale .grad."""
    torch.manual_seed(0)
    model = TinyCNN().train()
    model.features[0].weight.requires_grad_(False)
    model.classifier[2].weight.grad = torch.ones_like(model.classifier[2].weight)
    model.features[3].eval()
    return model


@pytest.mark.parametrize("method", CNN_METHODS)
def test_model_unchanged(method, tiny_images):
    model = varied_model()
    before = snapshot(model)
    gradcam.explain(model, tiny_images, method, targets="top-2")
    assert_same(before, snapshot(model))


def test_model_unchanged_when_a_target_raises(tiny_images):
    model = varied_model()
    before = snapshot(model)

    def broken_target(logits):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        gradcam.explain(model, tiny_images, targets=broken_target)
    assert_same(before, snapshot(model))
    assert torch.is_grad_enabled()


def test_model_unchanged_when_the_forward_raises():
    model = varied_model()
    before = snapshot(model)
    with pytest.raises(RuntimeError):
        gradcam.explain(model, torch.randn(1, 5, 32, 32), layer="features.6")  # wrong channel count
    assert_same(before, snapshot(model))


def test_model_unchanged_on_bad_target_count(tiny_images):
    model = varied_model()
    before = snapshot(model)
    with pytest.raises(ValueError, match="2 targets given for a batch of 3"):
        gradcam.explain(model, tiny_images, targets=[1, 2])
    assert_same(before, snapshot(model))


def test_existing_user_hooks_still_fire(tiny_cnn, tiny_images):
    seen = []
    handle = tiny_cnn.features.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    gradcam.explain(tiny_cnn, tiny_images, layer="features.6")
    handle.remove()
    assert seen == [torch.Size([3, 16, 8, 8])]  # once: an explicit layer needs no probe pass


def test_inplace_relu_layer_vgg19_is_14x14_and_untouched():
    torch.manual_seed(0)
    model = torchvision.models.vgg19().eval()
    assert model.features[35].inplace
    before = snapshot(model)
    ex = gradcam.explain(model, torch.randn(1, 3, 224, 224), layer="features.35")
    assert ex.raw.shape == (1, 1, 14, 14)
    assert ex.maps.shape == (1, 1, 224, 224)
    assert gradcam.auto_layer(model, torch.randn(1, 3, 224, 224)) == "features.35"
    assert_same(before, snapshot(model))


def test_layer_followed_by_inplace_relu(tiny_cnn, tiny_images):
    # features.3 is a conv whose output an in-place ReLU overwrites next
    ex = gradcam.explain(tiny_cnn, tiny_images, layer="features.3")
    assert (ex.layer_results[0].activations < 0).any()  # the pre-ReLU values were kept
    assert torch.isfinite(ex.maps).all()


def test_works_under_no_grad_and_inference_mode(tiny_cnn, tiny_images):
    expected = gradcam.explain(tiny_cnn, tiny_images).maps
    with torch.no_grad():
        torch.testing.assert_close(gradcam.explain(tiny_cnn, tiny_images).maps, expected)
        assert not torch.is_grad_enabled()
    with torch.inference_mode():
        inference_images = tiny_images.clone()
        torch.testing.assert_close(gradcam.explain(tiny_cnn, inference_images).maps, expected)


def test_zero_gradient_gives_zero_map_and_a_warning(tiny_cnn, tiny_images):
    with pytest.warns(UserWarning, match="zero"):
        ex = gradcam.explain(tiny_cnn, tiny_images, targets=lambda logits: logits.sum(1) * 0)
    assert torch.equal(ex.maps, torch.zeros_like(ex.maps))
    assert not torch.isnan(ex.raw).any()


def test_layer_that_does_not_reach_the_scores_warns(tiny_cnn, tiny_images):
    class TwoHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = tiny_cnn
            self.side = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x):
            self.side(x)
            return self.net(x)

    with pytest.warns(UserWarning, match="zero"):
        ex = gradcam.explain(TwoHeads().eval(), tiny_images, layer="side")
    assert torch.equal(ex.maps, torch.zeros_like(ex.maps))


def test_bfloat16_model(tiny_cnn, tiny_images):
    reference = gradcam.explain(tiny_cnn, tiny_images)
    model = TinyCNN().eval()
    model.load_state_dict(tiny_cnn.state_dict())
    model = model.to(torch.bfloat16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ex = gradcam.explain(model, tiny_images.to(torch.bfloat16), targets=reference.targets.tolist())
    assert ex.maps.dtype == torch.float32 and ex.raw.dtype == torch.float32
    r = torch.corrcoef(torch.stack([ex.maps.flatten(), reference.maps.flatten()]))[0, 1]
    assert r > 0.95
