"""Every class's map from one forward pass (targets="all")."""

from __future__ import annotations

import pytest
import torch
import torchvision

import gradcam
from tiny_models import HAND_INPUT, HandModel


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "gradcam-elementwise",
                                    "eigengradcam", "segeigencam"])  # fmt: skip
def test_every_class_equals_asking_for_it(method):
    torch.manual_seed(0)
    model, x = torchvision.models.resnet18(num_classes=20).eval(), torch.randn(2, 3, 96, 96)
    every = gradcam.explain(model, x, method, "layer4", targets="all")
    assert isinstance(every, gradcam.ClassMaps) and every.raw.shape == (2, 20, 3, 3)
    classes = [0, 7, 19]
    asked = gradcam.explain(model, x, method, "layer4", targets=[classes, classes])
    torch.testing.assert_close(every.raw[:, classes], asked.raw, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(every.maps(classes), asked.maps, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(every.maps(), gradcam.explain(model, x, method, "layer4").maps, rtol=1e-4, atol=1e-5)


def test_by_hand_and_in_chunks(monkeypatch):
    """The hand model's class 0 is tests/test_methods_by_hand.py's Grad-CAM; class 1's gradient is 0.1
    everywhere: w = (0.1, 0.1), 0.1 * (A0 + A1) = [[0.1, 0.3], [0.3, 0.1]]. One class per chunk too."""
    import gradcam.all_classes as all_classes

    monkeypatch.setattr(all_classes, "CHUNK_BYTES", 1)
    every = gradcam.explain(HandModel(), HAND_INPUT, layer="act", targets="all")
    torch.testing.assert_close(every.raw[0, 0], torch.tensor([[0.5, 1.75], [2.25, 0.5]]))
    torch.testing.assert_close(every.raw[0, 1], torch.tensor([[0.1, 0.3], [0.3, 0.1]]))
    torch.testing.assert_close(every.logits, torch.tensor([[3.0, 0.8]]))


def test_float16_storage_and_what_is_refused():
    torch.manual_seed(0)
    model, x = torchvision.models.resnet18(num_classes=10).eval(), torch.randn(1, 3, 64, 64)
    half = gradcam.explain_all(model, x, "gradcam", "layer4", dtype=torch.float16)
    assert half.raw.dtype == torch.float16
    torch.testing.assert_close(half.raw.float(), gradcam.explain(model, x, targets="all").raw, rtol=1e-2, atol=1e-3)
    assert "10 classes" in repr(half) and half.top(3).shape == (1, 3)
    with pytest.raises(ValueError, match="eigencam is class-agnostic"):
        gradcam.explain(model, x, "eigencam", targets="all")
    with pytest.raises(ValueError, match="scorecam is not supported"):
        gradcam.explain(model, x, "scorecam", targets="all")


def test_the_model_is_left_as_found():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).train()
    gradcam.explain(model, torch.randn(1, 3, 64, 64), targets="all")
    assert model.training and all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks for m in model.modules())
