"""FullGrad: by hand on a tiny network, and against pytorch-grad-cam's FullGrad (test oracle only)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import gradcam


def test_fullgrad_by_hand_on_one_conv_and_one_batch_norm():
    """S = psi(|x dy/dx|) + psi(|b_conv dy/dz_conv|) + psi(|b_bn dy/dz_bn|), summed over channels."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()  # fmt: skip
    model[1].running_mean.uniform_(-1, 1)
    model[1].running_var.uniform_(0.5, 2)
    x = torch.randn(2, 3, 8, 8)
    ours = gradcam.explain(model, x, "fullgrad", targets=1)
    assert ours.layer == "every bias" and ours.maps.shape == (2, 1, 8, 8)

    xx = x.clone().requires_grad_(True)
    z_conv = model[0](xx)
    z_bn = model[1](z_conv)
    y = model[5](model[4](model[3](torch.relu(z_bn))))[:, 1].sum()
    gx, gconv, gbn = torch.autograd.grad(y, [xx, z_conv, z_bn])
    bn = model[1]
    b_bn = bn.bias - bn.running_mean * bn.weight / torch.sqrt(bn.running_var + bn.eps)

    def psi(m):
        flat = m.flatten(2)
        low, high = flat.amin(-1, keepdim=True), flat.amax(-1, keepdim=True)
        return ((flat - low) / (high - low + 1e-7)).reshape(m.shape).sum(1)

    total = psi((xx * gx).abs()) + psi((model[0].bias[None, :, None, None] * gconv).abs())
    total = total + psi((b_bn[None, :, None, None] * gbn).abs())
    expected = gradcam.result.normalise(total.detach()[:, None])
    torch.testing.assert_close(ours.maps, expected, atol=1e-5, rtol=1e-4)
    assert all(p.grad is None for p in model.parameters()) and model[2].inplace


def test_fullgrad_matches_pytorch_grad_cam():
    pytest.importorskip("cv2")
    from pytorch_grad_cam import FullGrad
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(2, 3, 128, 128)
    ours = gradcam.explain(model, x, "fullgrad", targets=[3, 9]).maps[:, 0]
    oracle_model = copy.deepcopy(model)
    for module in oracle_model.modules():  # the oracle reads gradients at tensors an in-place ReLU changes
        if isinstance(module, nn.ReLU):
            module.inplace = False
    with FullGrad(oracle_model, []) as cam:
        theirs = cam(x, targets=[ClassifierOutputTarget(3), ClassifierOutputTarget(9)])
    for a, b in zip(ours.numpy(), theirs, strict=True):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] >= 0.999


def test_fullgrad_by_hand_with_timm_layers():
    """#30: on timm's EfficientNet pytorch-grad-cam finds no bias layer (its ``Conv2dSame`` and
    ``BatchNormAct2d`` are not the types it looks for), so its FullGrad is the input-gradient term alone
    (r 0.14-0.38 with ours). Ours takes them, and takes ``z`` of a norm-with-activation before the
    activation (it took the activated output before this test). Written out by hand."""
    timm_layers = pytest.importorskip("timm.layers")
    torch.manual_seed(0)
    model = nn.Sequential(
        timm_layers.Conv2dSame(3, 4, 3, stride=2, bias=True), timm_layers.BatchNormAct2d(4, act_layer=nn.ReLU6),
        nn.Conv2d(4, 5, 3, padding=1, bias=False), timm_layers.BatchNormAct2d(5, act_layer=nn.SiLU),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3),
    ).eval()  # fmt: skip
    for norm in (model[1], model[3]):
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)
        norm.weight.data.uniform_(0.5, 1.5)
        norm.bias.data.uniform_(-0.5, 0.5)
    x = torch.randn(2, 3, 16, 16)
    ours = gradcam.explain(model, x, "fullgrad", targets=2).maps[:, 0]

    def pre_activation(norm, z):
        return torch.nn.functional.batch_norm(z, norm.running_mean, norm.running_var, norm.weight, norm.bias,
                                              False, 0.0, norm.eps)  # fmt: skip

    xx = x.clone().requires_grad_(True)
    z1 = model[0](xx)
    z2 = pre_activation(model[1], z1)
    # the activations out of place (timm builds them in place): z must keep its own value for its gradient
    z3 = pre_activation(model[3], model[2](torch.nn.functional.relu6(z2)))
    y = model[6](model[5](model[4](torch.nn.functional.silu(z3))))[:, 2].sum()
    gx, g1, g2, g3 = torch.autograd.grad(y, [xx, z1, z2, z3])

    def effective(norm):
        return (norm.bias - norm.running_mean * norm.weight / torch.sqrt(norm.running_var + norm.eps))[
            None, :, None, None
        ]

    def psi(m):
        flat = m.flatten(2)
        low, high = flat.amin(-1, keepdim=True), flat.amax(-1, keepdim=True)
        summed = ((flat - low) / (high - low + 1e-7)).reshape(m.shape).sum(1, keepdim=True)
        return torch.nn.functional.interpolate(summed, size=(16, 16), mode="bilinear", align_corners=False)[:, 0]

    total = psi((xx * gx).abs()) + psi((model[0].bias[None, :, None, None] * g1).abs())
    total = total + psi((effective(model[1]) * g2).abs()) + psi((effective(model[3]) * g3).abs())
    flat = total.flatten(1)
    expected = (flat - flat.amin(1, keepdim=True)) / (flat.amax(1, keepdim=True) - flat.amin(1, keepdim=True))
    torch.testing.assert_close(ours, expected.view_as(ours).detach(), atol=1e-5, rtol=1e-4)
