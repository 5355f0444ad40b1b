"""Score-CAM and Ablation-CAM: hand-computed weights, the tail re-run, the faster modes."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision

import gradcam
from gradcam.methods.perturbation import AblationCAM, ScoreCAM
from gradcam.tail import Tail, TailUnavailable
from tiny_models import HAND_INPUT

A0 = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
A1 = torch.tensor([[0.0, 1.0], [3.0, 0.0]])


def test_ablationcam_by_hand(hand_model):
    # y = 3 (see test_methods_by_hand). Zeroing A0 leaves channel 1's share, 4: w0 = (3 - 4) / 3 = -1/3.
    # Zeroing A1 leaves channel 0's share, -1: w1 = (3 + 1) / 3 = 4/3.
    # -1/3 A0 + 4/3 A1 = [[-1/3, 2/3], [4, -1/3]] -> ReLU
    ex = gradcam.explain(hand_model, HAND_INPUT, "ablationcam", "act")
    torch.testing.assert_close(ex.layer_results[0].weights[0, 0], torch.tensor([-1 / 3, 4 / 3]))
    torch.testing.assert_close(ex.raw[0, 0], torch.tensor([[0.0, 2 / 3], [4.0, 0.0]]))


def test_scorecam_by_hand(hand_model):
    # masks (the map is already input-sized): H0 = A0 / 2, H1 = A1 / 3
    # X * H0 -> ReLU: ch0 [[.5, 2], [0, .5]], ch1 [[0, 1], [0, 0]]; score (.5 - 2) + 1 = -0.5
    # X * H1 -> ReLU: ch0 [[0, 2/3], [0, 0]], ch1 [[0, 1/3], [3, 0]]; score -2/3 + 1/3 + 3 = 8/3
    # w = softmax(-0.5, 8/3)
    e0, e1 = math.exp(-0.5), math.exp(8 / 3)
    w0, w1 = e0 / (e0 + e1), e1 / (e0 + e1)
    ex = gradcam.explain(hand_model, HAND_INPUT, "scorecam", "act")
    torch.testing.assert_close(ex.layer_results[0].weights[0, 0], torch.tensor([w0, w1]))
    torch.testing.assert_close(ex.raw[0, 0], w0 * A0 + w1 * A1)


def test_scorecam_constant_channel_shares_one_zero_image_pass(hand_model):
    # channel 1 constant: its mask is all zero, so it is scored on the zero image (score 0)
    x = HAND_INPUT.clone()
    x[0, 1] = 2.0
    calls = []
    handle = hand_model.head.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    ex = gradcam.explain(hand_model, x, ScoreCAM(), "act")
    handle.remove()
    assert calls == [1, 1, 1]  # the explained forward, channel 0's masked image, the zero image
    # channel 0: X * A0/2 -> ch0 [[.5, 2], [0, .5]], ch1 = 2 * H0 = [[1, 2], [0, 1]]; score -1.5 + (2 + 0 + 1) = 1.5
    e0, e1 = math.exp(1.5), math.exp(0.0)
    torch.testing.assert_close(ex.layer_results[0].weights[0, 0], torch.tensor([e0 / (e0 + e1), e1 / (e0 + e1)]))


def seeded_resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


def test_scorecam_chunking_does_not_change_the_result():
    model, x = seeded_resnet(), torch.randn(2, 3, 32, 32)
    small = gradcam.explain(model, x, ScoreCAM(batch_size=7), "layer4", targets="top-2")
    large = gradcam.explain(model, x, ScoreCAM(batch_size=512), "layer4", targets="top-2")
    torch.testing.assert_close(small.maps, large.maps, rtol=1e-4, atol=1e-5)


def test_faster_scorecam_scores_only_the_strongest_channels():
    model, x = seeded_resnet(), torch.randn(1, 3, 64, 64)
    calls = []
    handle = model.fc.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    fast = gradcam.explain(model, x, ScoreCAM(batch_size=1000, top_channels=64), "layer4")
    handle.remove()
    assert sum(calls) == 1 + 64
    weights = fast.layer_results[0].weights[0, 0]
    assert int((weights > 0).sum()) == 64
    full = gradcam.explain(model, x, "scorecam", "layer4")
    r = torch.corrcoef(torch.stack([fast.maps.flatten(), full.maps.flatten()]))[0, 1]
    assert r > 0.8


@pytest.mark.parametrize("layer", ["layer4", "layer4.1.conv1", "layer3"])
def test_tail_reproduces_the_model(layer):
    model, x = seeded_resnet(), torch.randn(2, 3, 64, 64)
    captured = {}
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: captured.setdefault("a", o.clone()))
    with torch.no_grad():
        expected = model(x)
    handle.remove()
    tail = Tail(model, layer, x)
    with torch.no_grad():
        torch.testing.assert_close(tail(captured["a"], torch.tensor([0, 1])), expected)
        torch.testing.assert_close(tail(captured["a"][[1, 1]], torch.tensor([1, 1])), expected[[1, 1]])


def test_ablation_without_a_tail_falls_back_to_whole_passes():
    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = seeded_resnet()

        def forward(self, x):
            if x.sum() > 1e9:  # data-dependent control flow: torch.fx cannot trace this
                return x
            return self.net(x)

    model, x = Branchy().eval(), torch.randn(2, 3, 32, 32)
    with pytest.raises(TailUnavailable):
        Tail(model, "net.layer4", x)
    with pytest.warns(UserWarning, match="re-runs the whole model"):
        slow = gradcam.explain(model, x, AblationCAM(batch_size=64), "net.layer4", targets=[1, 2])
    fast = gradcam.explain(model.net, x, "ablationcam", "layer4", targets=[1, 2])
    torch.testing.assert_close(slow.maps, fast.maps, rtol=1e-4, atol=1e-5)


def test_bad_options():
    with pytest.raises(ValueError, match="batch_size"):
        ScoreCAM(batch_size=0)
    with pytest.raises(ValueError, match="top_channels"):
        ScoreCAM(top_channels=0)


def test_tail_needs_no_trace_of_the_prefix():
    """timm's same-padding convolutions cannot be traced by torch.fx; they sit before the layer, are kept
    as opaque calls, and the tail still reproduces the model."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    captured = {}
    handle = model.bn2.register_forward_hook(lambda m, i, o: captured.setdefault("a", o.clone()))
    with torch.no_grad():
        expected = model(x)
    handle.remove()
    tail = Tail(model, "bn2", x)
    assert [node.name for node in tail.downstream] == ["global_pool", "classifier", "output"]
    with torch.no_grad():
        torch.testing.assert_close(tail(captured["a"], torch.tensor([0, 1])), expected)


def test_one_sscam_instance_serves_interleaved_calls():
    """SS-CAM kept its noise on the instance: a second call on the same instance (another thread, or as
    here from inside the first through a callable target) replaced it, with another image size's noise."""
    from gradcam.methods.perturbation import SSCAM
    from tiny_models import TinyCNN

    torch.manual_seed(0)
    model, other = TinyCNN().eval(), TinyCNN().eval()
    x, small = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 24, 24)
    method = SSCAM(samples=3, batch_size=4)
    alone = gradcam.explain(model, x, method, targets=lambda logits: logits[:, 1])
    interleaved, calls = [], []

    def target(logits):
        calls.append(1)
        if len(calls) == 2:  # the first masked batch: the outer call's noise is drawn by now
            interleaved.append(gradcam.explain(other, small, method, targets=2))
        return logits[:, 1]

    together = gradcam.explain(model, x, method, targets=target)
    assert interleaved and torch.allclose(together.maps, alone.maps, atol=1e-6)
