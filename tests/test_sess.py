"""SESS (scales and sliding windows around any method): by hand on one patch, and against
pytorch-grad-cam's SESS (test oracle only) on a seeded ResNet-18."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

import gradcam
from gradcam.methods.sess import SESS, _gaussian_blur


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18().eval()


def test_one_scale_is_the_base_map_blurred(resnet):
    """With one scale the only patch is the image itself (weight 1): the base method's map, blurred."""
    x = torch.randn(2, 3, 160, 160)
    ours = gradcam.explain(resnet, x, SESS(num_scales=1), "layer4", targets=[3, 7]).maps[:, 0]
    base = gradcam.explain(resnet, x, "gradcam", "layer4", targets=[3, 7]).maps[:, 0]
    expected = gradcam.result.normalise(torch.stack([_gaussian_blur(m) for m in base]))
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-4)


def test_sess_matches_pytorch_grad_cam(resnet):
    pytest.importorskip("cv2")
    from pytorch_grad_cam import SESS as TheirSESS
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(1)
    x = torch.randn(1, 3, 160, 192)
    ours = gradcam.explain(resnet, x, SESS(num_scales=3, batch_size=8), "layer4", targets=[5]).maps[0, 0]
    with TheirSESS(resnet, [resnet.layer4], base_method=GradCAM, num_scales=3, batch_size=8) as sess:
        theirs = sess(x, targets=[ClassifierOutputTarget(5)])[0]
    r = np.corrcoef(ours.numpy().ravel(), theirs.ravel())[0, 1]
    assert r >= 0.999, r


def test_sess_options_and_refusals(resnet):
    with pytest.raises(ValueError, match="pool must be mean or max"):
        SESS(pool="median")
    with pytest.raises(ValueError, match="at least the window"):
        gradcam.explain(resnet, torch.randn(1, 3, 96, 96), SESS(scales=[64]), "layer4")
    ex = gradcam.explain(resnet, torch.randn(1, 3, 96, 96), SESS(base="hirescam", num_scales=2, pool="max"), "layer4")
    assert ex.method == "sess" and ex.maps.shape == (1, 1, 96, 96) and ex.layer == "layer4"
    assert "sess" in gradcam.methods() and not gradcam.get_method("sess").evaluated_by_default
