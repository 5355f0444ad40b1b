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
    for method in ("scorecam", "shapleycam", "finercam"):  # per-class work beyond one gradient each
        with pytest.raises(ValueError, match=f"{method} is not supported"):
            gradcam.explain(model, x, method, targets="all")


def test_the_model_is_left_as_found():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).train()
    gradcam.explain(model, torch.randn(1, 3, 64, 64), targets="all")
    assert model.training and all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks for m in model.modules())


def test_cli_target_all_writes_one_float16_array_per_photo_and_draws_the_top_classes(tmp_path):
    import json
    from pathlib import Path

    import numpy as np

    from gradcam.apps.cli import main
    from gradcam.io.images import preprocess, read_image
    from gradcam.io.models import load_model

    photo = Path(__file__).resolve().parents[1] / "examples" / "coffee.jpg"
    out = tmp_path / "out"
    assert main(["explain", str(photo), "--target", "all", "--out", str(out), "--workers", "0", "--quiet"]) == 0
    entry = json.loads((out / "results.json").read_text())["images"][0]
    every = np.load(entry["all_classes"])
    assert every.shape == (1000, 7, 7) and every.dtype == np.float16
    assert [t["label"] for t in entry["targets"]] == ["espresso", "cup", "consomme"]
    assert all(Path(t["files"]["overlay"]).exists() for t in entry["targets"])
    bundle = load_model()
    pixels, _ = preprocess(read_image(photo), bundle.preprocessing)
    asked = gradcam.explain(bundle.model, pixels[None], targets=[[968, 500]])
    np.testing.assert_allclose(every[[968, 500]].astype(np.float32), asked.raw[0].numpy(), rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("method", ["gradcam", "hirescam", "cam", "layercam"])
def test_the_linear_head_shortcut_equals_the_general_path(method, monkeypatch):
    """On a global-pool + linear head every class's gradient is W_k times one shared map, so Grad-CAM,
    CAM and HiRes-CAM are one matrix product; the shortcut must give the general path's maps."""
    import gradcam.all_classes as all_classes

    torch.manual_seed(0)
    model, x = torchvision.models.resnet18(num_classes=30).eval(), torch.randn(2, 3, 96, 96)
    calls = []
    original = all_classes._closed_form
    monkeypatch.setattr(all_classes, "_closed_form", lambda *a: calls.append(1) or original(*a))
    fast = gradcam.explain(model, x, method, "layer4", targets="all")
    assert bool(calls) == (method != "layercam")
    monkeypatch.setattr(all_classes, "CLOSED_FORM", ())
    general = gradcam.explain(model, x, method, "layer4", targets="all")
    torch.testing.assert_close(fast.raw, general.raw, rtol=1e-4, atol=1e-6)


def test_a_head_that_is_not_linear_takes_the_general_path(monkeypatch):
    import gradcam.all_classes as all_classes

    torch.manual_seed(0)
    model = torchvision.models.vgg11(num_classes=10).eval()  # three fully connected layers after features
    calls = []
    monkeypatch.setattr(all_classes, "_closed_form", lambda *a: calls.append(1))
    every = gradcam.explain(model, torch.randn(1, 3, 64, 64), "gradcam", "features.19", targets="all")
    assert not calls and every.raw.shape == (1, 10, 4, 4)


def test_every_class_from_the_same_forward_pass():
    """explain(every_class=True): the maps asked for as before, and every class's maps equal to
    explain_all's, from one forward pass; methods without one gradient per class say so."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    for method in ("gradcam", "gradcam++"):
        plain = gradcam.explain(model, x, method, "layer4", targets="top-2")
        calls: list[int] = []
        handle = model.register_forward_hook(lambda m, i, o, calls=calls: calls.append(1))
        try:
            both = gradcam.explain(model, x, method, "layer4", targets="top-2", every_class=True)
        finally:
            handle.remove()
        assert len(calls) == 1
        torch.testing.assert_close(both.maps, plain.maps)
        torch.testing.assert_close(both.class_maps.raw, gradcam.explain_all(model, x, method, "layer4").raw)
    with pytest.raises(ValueError, match='targets="all": scorecam is not supported'):
        gradcam.explain(model, x, "scorecam", "layer4", every_class=True)
    # a method that makes its own maps ignored every_class silently; two layers failed after the forward pass
    with pytest.raises(ValueError, match='targets="all": fullgrad is not supported'):
        gradcam.explain(model, x, "fullgrad", every_class=True)
    calls = []
    handle = model.register_forward_hook(lambda m, i, o: calls.append(1))
    try:
        with pytest.raises(ValueError, match="every_class: .* one layer"):
            gradcam.explain(model, x, "gradcam", ["layer3", "layer4"], every_class=True)
    finally:
        handle.remove()
    assert not calls
