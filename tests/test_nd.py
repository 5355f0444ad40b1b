"""explain() beyond images: (B, C, L) signals and (B, C, D, H, W) volumes and clips (issue 14, the library
part). The CAM formulas average and sum over positions, so they are the 2-D ones on any grid; the maps
are upsampled linearly along each axis."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradcam
from tiny_models import TinySignal as Signal  # conv (stride 2) -> ReLU -> global pool -> linear


class Volume(nn.Module):
    """A tiny 3-D CNN (a CT-like classifier), with batch norm and an in-place ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv3d(1, 6, 3, stride=2, padding=1), nn.BatchNorm3d(6), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(6, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def by_hand(model: nn.Module, layer: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """Grad-CAM written out: A by a hook, G by autograd, w = mean of G over every position, ReLU(sum w A),
    upsampled by 1-D linear interpolation along each axis in turn, min-max normalised."""
    kept = {}
    handle = layer.register_forward_hook(lambda m, i, o: kept.__setitem__("a", o))
    with torch.enable_grad():
        scores = model(x)
        (gradients,) = torch.autograd.grad(scores[:, target].sum(), kept["a"])
    handle.remove()
    activations = kept["a"].detach()
    spatial = tuple(range(2, activations.dim()))
    weights = gradients.mean(dim=spatial, keepdim=True)
    cam = (weights * activations).sum(dim=1).clamp(min=0)  # (B, *s)
    for axis, size in enumerate(x.shape[2:]):  # separable: one axis at a time
        moved = cam.movedim(axis + 1, -1)
        shape = moved.shape
        moved = F.interpolate(moved.reshape(-1, 1, shape[-1]), size=size, mode="linear", align_corners=False)
        cam = moved.reshape(*shape[:-1], size).movedim(-1, axis + 1)
    flat = cam.flatten(1)
    low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - low) / (high - low)).reshape(cam.shape)


def test_a_signal_map_equals_grad_cam_by_hand():
    torch.manual_seed(0)
    model, x = Signal().eval(), torch.randn(2, 2, 64)
    ex = gradcam.explain(model, x, "gradcam", "act", targets=1)
    assert ex.maps.shape == (2, 1, 64) and ex.raw.shape == (2, 1, 32)
    torch.testing.assert_close(ex.maps[:, 0], by_hand(model, model.act, x, 1), atol=1e-5, rtol=1e-4)
    assert gradcam.explain(model, x).layer == "act"  # found automatically on a signal too


def test_a_volume_map_equals_grad_cam_by_hand_axis_by_axis():
    torch.manual_seed(0)
    model, x = Volume().eval(), torch.randn(2, 1, 8, 12, 16)
    ex = gradcam.explain(model, x, "gradcam", "features", targets=0)
    assert ex.maps.shape == (2, 1, 8, 12, 16) and ex.raw.shape == (2, 1, 4, 6, 8)
    torch.testing.assert_close(ex.maps[:, 0], by_hand(model, model.features, x, 0), atol=1e-5, rtol=1e-4)
    contributions = ex.channel_contributions(top=3)
    assert contributions.maps.shape == (2, 1, 3, 4, 6, 8)
    whole = ex.layer_results[0].weights[..., None, None, None] * ex.layer_results[0].activations.unsqueeze(1)
    torch.testing.assert_close(contributions.grand_total, whole.flatten(2).sum(-1))


@pytest.mark.parametrize("method", ["gradcam++", "xgradcam", "hirescam", "layercam", "eigencam", "fem"])
def test_gradient_and_activation_methods_run_on_signals_and_volumes(method):
    torch.manual_seed(0)
    for model, x in ((Signal().eval(), torch.randn(2, 2, 40)), (Volume().eval(), torch.randn(1, 1, 6, 8, 8))):
        maps = gradcam.explain(model, x, method, targets="top-2").maps
        assert maps.shape == (x.shape[0], 2, *x.shape[2:]) and bool(torch.isfinite(maps).all())
        assert float(maps.amax()) == pytest.approx(1.0) or float(maps.amax()) == 0.0


def test_what_is_written_for_images_says_why_in_one_line():
    model, x = Signal().eval(), torch.randn(1, 2, 32)
    for kwargs, reason in (
        ({"method": "sess"}, "is written for images"),
        ({"aug_smooth": True}, "flips and rescales"),
        ({"targets": "all"}, "targets='all'"),
    ):
        with pytest.raises(ValueError, match=reason) as caught:
            gradcam.explain(model, x, **kwargs)
        assert "signals (B, C, L)" in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(ValueError, match="is not a \\(B, C, .\\) map"):
        gradcam.explain(model, x, layer="head.2")


def test_a_torchvision_video_classifier_on_a_clip_leaves_the_model_as_it_was():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.video.r3d_18(num_classes=5).train()
    model.layer1.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    clip = torch.randn(1, 3, 16, 64, 64)
    ex = gradcam.explain(model, clip, "gradcam")
    assert ex.layer == "layer4" and ex.maps.shape == (1, 1, 16, 64, 64) and ex.raw.shape == (1, 1, 2, 4, 4)
    assert model.training and not any(p.requires_grad for p in model.layer1.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_swin3d_t_channels_last_tokens_equal_grad_cam_by_hand():
    """torchvision's swin3d_t keeps channels last, (B, t, h, w, C); its map is Grad-CAM on (B, C, t, h, w)."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.video.swin3d_t(num_classes=4).eval()
    clip = torch.randn(1, 3, 16, 64, 64)
    ex = gradcam.explain(model, clip, "gradcam", "norm", 2)
    assert ex.maps.shape == (1, 1, 16, 64, 64) and ex.raw.shape == (1, 1, 8, 2, 2)
    kept = {}
    handle = model.norm.register_forward_hook(lambda m, i, o: kept.__setitem__("a", o))
    scores = model(clip)
    (gradients,) = torch.autograd.grad(scores[:, 2].sum(), kept["a"])
    handle.remove()
    activations, gradients = kept["a"].detach().movedim(-1, 1), gradients.movedim(-1, 1)
    by_hand = (gradients.mean(dim=(2, 3, 4), keepdim=True) * activations).sum(dim=1).clamp(min=0)
    torch.testing.assert_close(ex.raw[:, 0], by_hand, rtol=1e-4, atol=1e-6)


def test_mvit_class_token_and_a_3d_token_grid_equal_grad_cam_by_hand():
    """torchvision's mvit_v1_b: (B, 1 + t*h*w, C) tokens, a class token then a (8, 7, 7) grid, time first."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.video.mvit_v1_b(num_classes=3).eval()
    clip = torch.randn(1, 3, 16, 224, 224)
    layer = model.blocks[15].norm1
    kept = {}
    handle = layer.register_forward_hook(lambda m, i, o: kept.__setitem__("a", o))
    scores = model(clip)
    (gradients,) = torch.autograd.grad(scores[:, 1].sum(), kept["a"])
    handle.remove()
    ex = gradcam.explain(model, clip, "gradcam", "blocks.15.norm1", 1)
    assert ex.maps.shape == (1, 1, 16, 224, 224) and ex.raw.shape == (1, 1, 8, 7, 7)
    grid = lambda tokens: tokens[:, 1:].reshape(1, 8, 7, 7, -1).movedim(-1, 1)  # noqa: E731
    activations, gradients = grid(kept["a"].detach()), grid(gradients)
    by_hand = (gradients.mean(dim=(2, 3, 4), keepdim=True) * activations).sum(dim=1).clamp(min=0)
    torch.testing.assert_close(ex.raw[:, 0], by_hand, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("kind", ["signal", "volume"])
def test_score_cam_and_ablation_cam_in_1d_and_3d_equal_their_formulas_by_hand(kind):
    """Score-CAM: each channel's map upsampled (linear / trilinear) to the input, min-max scaled, the input
    masked by it and scored; softmax over channels. Ablation-CAM: (y - y_c) / y with channel c zeroed."""
    torch.manual_seed(0)
    model, x = (Signal(), torch.randn(2, 2, 40)) if kind == "signal" else (Volume(), torch.randn(2, 1, 8, 10, 12))
    model.eval()
    layer = model.act if kind == "signal" else model.features
    kept = {}
    handle = layer.register_forward_hook(lambda m, i, o: kept.__setitem__("a", o.detach().clone()))
    with torch.no_grad():
        scores = model(x)
    handle.remove()
    activations = kept["a"]
    target = 1
    mode = "linear" if kind == "signal" else "trilinear"
    score_weights, ablation_weights = [], []
    for image in range(2):
        channel_scores, ablated = [], []
        for channel in range(activations.shape[1]):
            upsampled = F.interpolate(activations[image, channel][None, None], size=x.shape[2:], mode=mode)
            low, high = upsampled.min(), upsampled.max()
            mask = (upsampled - low) / (high - low)
            with torch.no_grad():
                channel_scores.append(model(x[image : image + 1] * mask)[0, target])
            zeroed = activations[image : image + 1].clone()
            zeroed[:, channel] = 0
            replace = layer.register_forward_hook(lambda m, i, o, z=zeroed: z)
            with torch.no_grad():
                ablated.append(model(x[image : image + 1])[0, target])
            replace.remove()
        score_weights.append(torch.softmax(torch.stack(channel_scores), dim=0))
        y = scores[image, target]
        ablation_weights.append((y - torch.stack(ablated)) / y)
    for method, weights in (("scorecam", score_weights), ("ablationcam", ablation_weights)):
        ex = gradcam.explain(model, x, method, "act" if kind == "signal" else "features", target)
        stacked = torch.stack(weights).view(2, -1, *([1] * (activations.dim() - 2)))
        by_hand = (stacked * activations).sum(dim=1).clamp(min=0)
        torch.testing.assert_close(ex.raw[:, 0], by_hand, rtol=1e-4, atol=1e-6)


def test_methods_written_for_images_say_so_on_volumes():
    x = torch.randn(1, 1, 8, 8, 8)
    for method in ("sess",):
        with pytest.raises(ValueError, match=re.escape(f"{method} is written for images")):
            gradcam.explain(Volume().eval(), x, method)


def test_fullgrad_on_a_volume_equals_its_formula_by_hand():
    """psi(|x dy/dx|) + psi(|b_conv dy/dz_conv|) + psi(|b_bn dy/dz_bn|), each channel min-max normalised and
    resized trilinearly, summed over channels; the in-place ReLU after the norm changes a copy only."""
    torch.manual_seed(0)
    model = Volume().eval()
    bn = model.features[1]
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 1, 8, 10, 12)
    ours = gradcam.explain(model, x, "fullgrad", targets=1)
    xx = x.clone().requires_grad_(True)
    z_conv = model.features[0](xx)
    z_bn = bn(z_conv)
    y = model.head(torch.relu(z_bn))[:, 1].sum()
    gx, gconv, gbn = torch.autograd.grad(y, [xx, z_conv, z_bn])
    b_bn = bn.bias - bn.running_mean * bn.weight / torch.sqrt(bn.running_var + bn.eps)

    def psi(m):
        flat = m.flatten(2)
        low, high = flat.amin(-1, keepdim=True), flat.amax(-1, keepdim=True)
        summed = ((flat - low) / (high - low + 1e-7)).reshape(m.shape).sum(1, keepdim=True)
        return F.interpolate(summed, size=x.shape[2:], mode="trilinear", align_corners=False)[:, 0]

    total = psi((xx * gx).abs()) + psi((model.features[0].bias.view(1, -1, 1, 1, 1) * gconv).abs())
    total = total + psi((b_bn.view(1, -1, 1, 1, 1) * gbn).abs())
    expected = gradcam.result.normalise(total.detach()[:, None], 3)
    torch.testing.assert_close(ours.maps, expected, atol=1e-5, rtol=1e-4)
    assert ours.maps.shape == (2, 1, 8, 10, 12) and model.features[2].inplace


def test_smooth_grad_cam_pp_on_a_signal_equals_its_formula_by_hand():
    """Grad-CAM++ with the gradient powers averaged over noisy copies X + N(0, std^2), the noise drawn from
    the seed (one noise signal per sample, shared by the batch), on the clean signal's activations."""
    torch.manual_seed(0)
    model, x = Signal().eval(), torch.randn(2, 2, 40)
    method = gradcam.get_method("smoothgradcam++").__class__(samples=3, std=0.2, seed=5)
    ours = gradcam.explain(model, x, method, "act", 2)
    kept = {}
    handle = model.act.register_forward_hook(lambda m, i, o: kept.__setitem__("a", o))
    with torch.no_grad():
        model(x)
    clean = kept["a"].clone()
    generator = torch.Generator().manual_seed(5)
    powers = []
    for _ in range(3):
        noise = torch.randn((1, 2, 40), generator=generator) * 0.2
        with torch.enable_grad():
            scores = model(x + noise)
            (g,) = torch.autograd.grad(scores[:, 2].sum(), kept["a"])
        powers.append(torch.stack([g, g**2, g**3]))
    handle.remove()
    d1, d2, d3 = torch.stack(powers).mean(dim=0)
    denominator = 2 * d2 + clean.sum(dim=2, keepdim=True) * d3
    alpha = torch.where(denominator != 0, d2 / torch.where(denominator != 0, denominator, 1), 0)
    weights = (alpha * d1.clamp(min=0)).sum(dim=2, keepdim=True)
    by_hand = (weights * clean).sum(dim=1).clamp(min=0)
    torch.testing.assert_close(ours.raw[:, 0], by_hand, rtol=1e-4, atol=1e-6)
