"""Targets: every shorthand, K targets from one forward, batches equal single images, errors."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torchvision

import gradcam
from gradcam.targets import class_index, imagenet_labels
from tiny_models import CNN_METHODS, TinyCNN


def test_top1_by_default(tiny_cnn, tiny_images):
    ex = gradcam.explain(tiny_cnn, tiny_images)
    assert ex.targets.tolist() == tiny_cnn(tiny_images).argmax(1, keepdim=True).tolist()
    torch.testing.assert_close(ex.scores, tiny_cnn(tiny_images).max(1, keepdim=True).values)


@pytest.mark.parametrize("method", CNN_METHODS)
def test_k_targets_equal_k_separate_calls(method, tiny_cnn, tiny_images):
    together = gradcam.explain(tiny_cnn, tiny_images, method, targets="top-3")
    assert together.maps.shape == (3, 3, 32, 32)
    for k in range(3):
        alone = gradcam.explain(tiny_cnn, tiny_images, method, targets=together.targets[:, k].tolist())
        torch.testing.assert_close(together.maps[:, k], alone.maps[:, 0])
        torch.testing.assert_close(together.raw[:, k], alone.raw[:, 0])


@pytest.mark.parametrize("method", CNN_METHODS)
def test_batch_equals_images_one_by_one(method, tiny_cnn, tiny_images):
    batch = gradcam.explain(tiny_cnn, tiny_images, method, targets="top-2")
    for i in range(len(tiny_images)):
        single = gradcam.explain(tiny_cnn, tiny_images[i : i + 1], method, targets="top-2")
        torch.testing.assert_close(batch.maps[i], single.maps[0], rtol=1e-4, atol=1e-5)
        assert batch.targets[i].tolist() == single.targets[0].tolist()


def test_shorthands(tiny_cnn, tiny_images):
    assert gradcam.explain(tiny_cnn, tiny_images, targets=4).targets.tolist() == [[4]] * 3
    assert gradcam.explain(tiny_cnn, tiny_images, targets=[1, 2, 3]).targets.tolist() == [[1], [2], [3]]
    nested = gradcam.explain(tiny_cnn, tiny_images, targets=[[1, 2], [3, 4], [5, 6]])
    assert nested.targets.tolist() == [[1, 2], [3, 4], [5, 6]]
    assert gradcam.explain(tiny_cnn, tiny_images, targets="top3").maps.shape[1] == 3
    assert gradcam.explain(tiny_cnn, tiny_images, targets=torch.tensor([0, 1, 2])).targets.tolist() == [[0], [1], [2]]


def test_callable_targets(tiny_cnn, tiny_images):
    by_index = gradcam.explain(tiny_cnn, tiny_images, targets=5)
    by_fn = gradcam.explain(tiny_cnn, tiny_images, targets=gradcam.ClassScore(5))
    assert by_fn.targets is None
    torch.testing.assert_close(by_fn.maps, by_index.maps)
    two = gradcam.explain(tiny_cnn, tiny_images, targets=[gradcam.ClassScore(5), lambda y: y[:, 1] - y[:, 2]])
    assert two.maps.shape[1] == 2
    torch.testing.assert_close(two.maps[:, 0], by_index.maps[:, 0])


def test_class_names_with_labels(tiny_cnn, tiny_images):
    labels = [f"class {i}" for i in range(10)]
    ex = gradcam.explain(tiny_cnn, tiny_images, targets="CLASS 3", labels=labels)
    assert ex.targets.tolist() == [[3]] * 3
    with pytest.raises(ValueError, match="did you mean 'class 3'"):
        gradcam.explain(tiny_cnn, tiny_images, targets="clas 3", labels=labels)
    with pytest.raises(ValueError, match="labels are unknown"):
        gradcam.explain(tiny_cnn, tiny_images, targets="cat")


def test_imagenet_names_for_1000_class_models():
    assert len(imagenet_labels()) == 1000
    assert class_index("Tiger Cat", imagenet_labels()) == 282
    with pytest.raises(ValueError, match="did you mean 'tiger cat'"):
        class_index("tigre cat", imagenet_labels())
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    ex = gradcam.explain(model, torch.randn(1, 3, 64, 64), targets="espresso")
    assert ex.targets.tolist() == [[967]]


@pytest.mark.parametrize(
    "targets, message",
    [
        ([1, 2], "2 targets given for a batch of 3"),
        ([[1], [2, 3], [4]], "same number of classes"),
        (10, "out of range"),
        ("top-11", "the model has 10"),
        (True, "not a bool"),
        ([], "empty"),
    ],
)
def test_bad_targets(tiny_cnn, tiny_images, targets, message):
    with pytest.raises((ValueError, TypeError), match=message):
        gradcam.explain(tiny_cnn, tiny_images, targets=targets)


def test_callable_returning_wrong_shape(tiny_cnn, tiny_images):
    with pytest.raises(ValueError, match=r"one score per image, shape \(3,\)"):
        gradcam.explain(tiny_cnn, tiny_images, targets=lambda y: y)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda y: (y, y * 0),
        lambda y: {"logits": y, "aux": y * 0},
        lambda y: {"out": y},
        lambda y: SimpleNamespace(logits=y),
    ],
    ids=["tuple", "dict-logits", "dict-out", "object-logits"],
)
def test_structured_outputs(wrap, tiny_cnn, tiny_images):
    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = tiny_cnn

        def forward(self, x):
            return wrap(self.inner(x))

    expected = gradcam.explain(tiny_cnn, tiny_images).maps
    torch.testing.assert_close(gradcam.explain(Wrapped(), tiny_images, layer="inner.features.6").maps, expected)


def test_custom_output_selector(tiny_cnn, tiny_images):
    class Pair(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = tiny_cnn

        def forward(self, x):
            return [None, self.inner(x)]

    with pytest.raises(TypeError, match="pass output="):
        gradcam.explain(Pair(), tiny_images, layer="inner.features.6")
    ex = gradcam.explain(Pair(), tiny_images, layer="inner.features.6", output=lambda out: out[1])
    torch.testing.assert_close(ex.maps, gradcam.explain(tiny_cnn, tiny_images).maps)


def test_a_batch_of_the_wrong_dimension_is_named_when_the_model_refuses_it():
    """A 4-D batch is checked against the convolutions only when the forward pass fails (no cost on the
    normal path): the message still names the shape the model takes."""
    clips = torch.nn.Sequential(torch.nn.Conv3d(3, 4, 3), torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten())
    with pytest.raises(ValueError, match=r"take float tensor \(B, C, D, H, W\), not 2-D inputs"):
        gradcam.explain(clips, torch.randn(1, 3, 12, 12), layer="0")
    signals = torch.nn.Sequential(torch.nn.Conv1d(3, 4, 3), torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten())
    with pytest.raises(ValueError, match=r"take float tensor \(B, C, L\), not 2-D inputs"):
        gradcam.explain(signals, torch.randn(1, 3, 12, 12), layer="0")


def test_bad_images(tiny_cnn):
    with pytest.raises(ValueError, match=r"float tensor \(B, C, H, W\).*images\[None\]"):
        gradcam.explain(tiny_cnn, torch.randn(3, 32, 32))  # a (B, C, L) signal to a 2-D CNN: the batch forgotten
    with pytest.raises(ValueError, match=r"float tensor \(B, C, H, W\), not 3-D inputs"):
        gradcam.explain(tiny_cnn, torch.randn(1, 3, 4, 32, 32))
    with pytest.raises(ValueError, match="float tensor"):
        gradcam.explain(tiny_cnn, torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_unknown_method(tiny_cnn, tiny_images):
    with pytest.raises(ValueError, match="did you mean 'gradcam'"):
        gradcam.explain(tiny_cnn, tiny_images, method="gradcma")
    assert gradcam.get_method("GradCAM++").name == "gradcam++"
    assert gradcam.get_method("grad-cam").name == "gradcam"


def test_counterfactual_is_different(tiny_cnn, tiny_images):
    usual = gradcam.explain(tiny_cnn, tiny_images, "hirescam")
    against = gradcam.explain(tiny_cnn, tiny_images, "hirescam", counterfactual=True)
    assert against.counterfactual
    # HiRes-CAM's pre-ReLU map flips sign, so the two maps never overlap where both are positive
    both = (usual.raw > 0) & (against.raw > 0)
    assert not both.any()


def test_new_model_instance_is_independent():
    a, b = TinyCNN().eval(), TinyCNN().eval()
    x = torch.randn(2, 3, 32, 32)
    assert gradcam.explain(a, x).layer == gradcam.explain(b, x).layer == "features.6"
