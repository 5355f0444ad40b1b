"""Every method's formula on a model small enough to work out by hand.

Activations at layer ``act`` (ReLU of the input), per channel, and the gradient of class 0 (the
head's weight row; the head is linear on the flattened map):

    A0 = [[1, 2], [0, 1]]    G0 = [[1, -1], [2, 0]]      sum A0 = 4
    A1 = [[0, 1], [3, 0]]    G1 = [[0,  1], [1, 1]]      sum A1 = 4

Score of class 0: sum(G * A) = (1 - 2 + 0 + 0) + (0 + 1 + 3 + 0) = 3; class 1: 0.1 * 8 = 0.8, so the
top-1 class is 0.
"""

from __future__ import annotations

import math

import pytest
import torch

import gradcam
from tiny_models import HAND_INPUT, HandModel


def raw_map(model, method, **kwargs):
    return gradcam.explain(model, HAND_INPUT, method=method, layer="act", **kwargs).raw[0, 0]


def test_scores_and_top1(hand_model):
    ex = gradcam.explain(hand_model, HAND_INPUT, layer="act")
    assert ex.targets.tolist() == [[0]]
    assert ex.scores.tolist() == [[pytest.approx(3.0)]]


def test_gradcam(hand_model):
    # w0 = mean G0 = 2/4 = 0.5; w1 = mean G1 = 3/4 = 0.75
    # 0.5 * A0 + 0.75 * A1 = [[0.5, 1 + 0.75], [0 + 2.25, 0.5]]
    expected = torch.tensor([[0.5, 1.75], [2.25, 0.5]])
    torch.testing.assert_close(raw_map(hand_model, "gradcam"), expected)


def test_gradcam_maps_are_normalised_raw(hand_model):
    # the input is 2x2 like the map, so no resize: (raw - 0.5) / (2.25 - 0.5)
    maps = gradcam.explain(hand_model, HAND_INPUT, layer="act").maps[0, 0]
    torch.testing.assert_close(maps, torch.tensor([[0.0, 1.25 / 1.75], [1.0, 0.0]]))


def test_gradcam_plus_plus(hand_model):
    # alpha = g^2 / (2 g^2 + S g^3), S = 4 for both channels:
    #   g = 1 -> 1 / 6;   g = 2 -> 4 / (8 + 32) = 1 / 10;   g = -1 -> (ReLU(g) = 0, no weight);   g = 0 -> 0
    # w0 = 1/6 * 1 + 1/10 * 2 = 11/30;   w1 = 3 * (1/6 * 1) = 1/2
    # 11/30 * A0 + 1/2 * A1 = [[11/30, 22/30 + 15/30], [45/30, 11/30]]
    expected = torch.tensor([[11 / 30, 37 / 30], [45 / 30, 11 / 30]])
    torch.testing.assert_close(raw_map(hand_model, "gradcam++"), expected)


def test_xgradcam(hand_model):
    # w0 = sum(A0 * G0) / sum A0 = (1 - 2 + 0 + 0) / 4 = -1/4;   w1 = (0 + 1 + 3 + 0) / 4 = 1
    # -1/4 * A0 + A1 = [[-0.25, -0.5 + 1], [0 + 3, -0.25]] -> ReLU
    expected = torch.tensor([[0.0, 0.5], [3.0, 0.0]])
    torch.testing.assert_close(raw_map(hand_model, "xgradcam"), expected)


def test_hirescam(hand_model):
    # G0 * A0 = [[1, -2], [0, 0]];  G1 * A1 = [[0, 1], [3, 0]];  sum = [[1, -1], [3, 0]] -> ReLU
    expected = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    torch.testing.assert_close(raw_map(hand_model, "hirescam"), expected)


def test_layercam(hand_model):
    # ReLU(G0) * A0 = [[1, 0], [0, 0]];  ReLU(G1) * A1 = [[0, 1], [3, 0]]
    expected = torch.tensor([[1.0, 1.0], [3.0, 0.0]])
    torch.testing.assert_close(raw_map(hand_model, "layercam"), expected)


def test_eigencam(hand_model):
    # positions x channels: (1,0) (2,1) (0,3) (1,0); mean (1,1); centred X = (0,-1) (1,0) (-1,2) (0,-1)
    # X^T X = [[2, -2], [-2, 6]]: top eigenvalue 4 + 2 sqrt2, eigenvector v ~ (1, -(1 + sqrt2))
    # X v = (1 + sqrt2, 1, -3 - 2 sqrt2, 1 + sqrt2) / |v|,  |v| = sqrt(4 + 2 sqrt2)
    # summed activation per position (1, 3, 3, 1) disagrees with that sign, so it flips; ReLU keeps
    # only position (1, 0): (3 + 2 sqrt2) / sqrt(4 + 2 sqrt2)
    r2 = math.sqrt(2)
    expected = torch.tensor([[0.0, 0.0], [(3 + 2 * r2) / math.sqrt(4 + 2 * r2), 0.0]])
    torch.testing.assert_close(raw_map(hand_model, "eigencam"), expected)


def test_counterfactual_negates_the_gradients(hand_model):
    # HiRes-CAM with -G: -[[1, -1], [3, 0]] -> ReLU -> [[0, 1], [0, 0]]
    expected = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    torch.testing.assert_close(raw_map(hand_model, "hirescam", counterfactual=True), expected)
    # Grad-CAM with -G: every weight is negative and every activation >= 0, so nothing speaks against class 0
    torch.testing.assert_close(raw_map(hand_model, "gradcam", counterfactual=True), torch.zeros(2, 2))


def test_channel_contributions(hand_model):
    ex = gradcam.explain(hand_model, HAND_INPUT, layer="act")
    contributions = ex.channel_contributions(top=2)
    # w0 * A0 sums to 0.5 * 4 = 2; w1 * A1 sums to 0.75 * 4 = 3: channel 1 first
    assert contributions.channels.tolist() == [[[1, 0]]]
    torch.testing.assert_close(contributions.totals, torch.tensor([[[3.0, 2.0]]]))
    torch.testing.assert_close(contributions.maps[0, 0, 1], 0.5 * HAND_INPUT[0, 0])
    torch.testing.assert_close(contributions.maps[0, 0].sum(0), raw_map(hand_model, "gradcam"))


def test_second_class_with_one_forward(hand_model):
    # class 1: every gradient is 0.1, so Grad-CAM's weights are 0.1 and the map is 0.1 * (A0 + A1)
    ex = gradcam.explain(hand_model, HAND_INPUT, layer="act", targets=[[0, 1]])
    assert ex.targets.tolist() == [[0, 1]]
    torch.testing.assert_close(ex.raw[0, 1], 0.1 * torch.tensor([[1.0, 3.0], [3.0, 1.0]]))
    torch.testing.assert_close(ex.scores, torch.tensor([[3.0, 0.8]]))


def test_gradcam_elementwise(hand_model):
    # ReLU(G * A) summed over channels: G0*A0 = [[1, -2], [0, 0]] -> [[1, 0], [0, 0]];
    # G1*A1 = [[0, 1], [3, 0]];  sum = [[1, 1], [3, 0]]
    expected = torch.tensor([[1.0, 1.0], [3.0, 0.0]])
    torch.testing.assert_close(raw_map(hand_model, "gradcam-elementwise"), expected)


def test_cam_on_a_pooled_linear_head():
    """CAM needs global average pooling then a linear layer: w_kc = W_kc."""

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.act = torch.nn.ReLU()
            self.fc = torch.nn.Linear(2, 2, bias=True)
            with torch.no_grad():
                self.fc.weight.copy_(torch.tensor([[2.0, -1.0], [0.5, 0.5]]))
                self.fc.bias.copy_(torch.tensor([0.3, 0.0]))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.act(x).mean(dim=(2, 3)))

    # 2 * A0 - 1 * A1 = [[2, 4 - 1], [0 - 3, 2]] -> ReLU -> [[2, 3], [0, 2]]
    ex = gradcam.explain(Pooled(), HAND_INPUT, "cam", "act", targets=[0])
    torch.testing.assert_close(ex.raw[0, 0], torch.tensor([[2.0, 3.0], [0.0, 2.0]]))
    torch.testing.assert_close(ex.layer_results[0].weights[0, 0], torch.tensor([2.0, -1.0]))


class _PooledHead(torch.nn.Module):
    """A ReLU layer read by global average pooling and ``head`` (the hand weights [[2, -1], [0.5, 0.5]] in
    one linear layer, or split into two, or followed by a log-softmax)."""

    def __init__(self, head: str = "linear") -> None:
        super().__init__()
        self.act = torch.nn.ReLU()
        weight = torch.tensor([[2.0, -1.0], [0.5, 0.5]])
        if head == "two linears":  # W = W2 @ W1 with W1 = 2 I
            self.fc = torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False), torch.nn.Linear(2, 2, bias=False))
            with torch.no_grad():
                self.fc[0].weight.copy_(2 * torch.eye(2))
                self.fc[1].weight.copy_(weight / 2)
        else:
            self.fc = torch.nn.Linear(2, 2, bias=False)
            with torch.no_grad():
                self.fc.weight.copy_(weight)
        self.log_softmax = head == "log-softmax"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.fc(self.act(x).mean(dim=(2, 3)))
        return scores.log_softmax(dim=1) if self.log_softmax else scores


def _backward_passes(model: torch.nn.Module) -> list[int]:
    calls: list[int] = []
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_full_backward_hook(lambda *_: calls.append(1))
    return calls


def test_cam_reads_the_classifier_without_a_backward_pass():
    """One linear layer gives every score from the pooled layer: its rows are CAM's weights, no gradient."""
    model = _PooledHead()
    backward = _backward_passes(model)
    ex = gradcam.explain(model, HAND_INPUT, "cam", "act", targets=[0])
    assert backward == []
    torch.testing.assert_close(ex.raw[0, 0], torch.tensor([[2.0, 3.0], [0.0, 2.0]]))
    torch.testing.assert_close(ex.layer_results[0].weights[0, 0], torch.tensor([2.0, -1.0]))
    # the same weights as the gradient gives them (Grad-CAM's mean gradient is W / (h w) on such a head)
    grad = gradcam.explain(model, HAND_INPUT, "gradcam", "act", targets=[0])
    torch.testing.assert_close(grad.layer_results[0].weights[0, 0] * 4, torch.tensor([2.0, -1.0]))
    counter = gradcam.explain(model, HAND_INPUT, "cam", "act", targets=[0], counterfactual=True)
    torch.testing.assert_close(counter.layer_results[0].weights[0, 0], torch.tensor([-2.0, 1.0]))
    model.fc = torch.nn.Linear(2, 2, bias=False)  # a new classifier: the one found before no longer gives the scores
    with torch.no_grad():
        model.fc.weight.copy_(torch.tensor([[-1.0, 3.0], [0.0, 1.0]]))
    swapped = gradcam.explain(model, HAND_INPUT, "cam", "act", targets=[0])
    torch.testing.assert_close(swapped.layer_results[0].weights[0, 0], torch.tensor([-1.0, 3.0]))


@pytest.mark.parametrize("head", ["two linears", "log-softmax"])
def test_cam_falls_back_to_the_gradient_when_no_one_linear_layer_gives_the_scores(head):
    """Two linear layers (W2 W1 = the hand weights) or a log-softmax after the classifier: no single linear
    layer reproduces the scores, so the gradient gives the weights, as before."""
    model = _PooledHead(head)
    backward = _backward_passes(model)
    ex = gradcam.explain(model, HAND_INPUT, "cam", "act", targets=[0])
    assert backward  # the gradient was taken
    weights = ex.layer_results[0].weights[0, 0]
    if head == "two linears":
        torch.testing.assert_close(weights, torch.tensor([2.0, -1.0]))
    else:  # d log p_0 / d pooled = W_0 - sum_j p_j W_j
        pooled = torch.relu(HAND_INPUT).mean(dim=(2, 3))[0]
        weight = torch.tensor([[2.0, -1.0], [0.5, 0.5]])
        p = (weight @ pooled).softmax(0)
        torch.testing.assert_close(weights, weight[0] - p @ weight)


def test_cam_refuses_a_head_that_is_not_pooled_and_linear(hand_model):
    with pytest.raises(ValueError, match="not followed by global average pooling"):
        raw_map(hand_model, "cam")  # the hand model's head weighs each position differently


def test_eigengradcam_and_segeigencam(hand_model):
    """The first principal component of G * A (Eigen-Grad-CAM) and of |G| * A (Seg-Eigen-CAM), positions as
    samples: G * A gives p00 = (1, 0), p01 = (-2, 1), p10 = (0, 3), p11 = (0, 0)."""
    gradient = HandModel.GRAD_CLASS0[None]
    activations = torch.relu(HAND_INPUT)

    def component(product: torch.Tensor) -> torch.Tensor:
        samples = product[0].reshape(2, 4).T
        centred = samples - samples.mean(0)
        _, _, vh = torch.linalg.svd(centred)
        return (centred @ vh[0]).reshape(2, 2)

    eigen = component(gradient * activations)
    total = (gradient * activations)[0].sum(0)  # the sign agrees with the summed map
    if ((eigen - eigen.mean()) * (total - total.mean())).sum() < 0:
        eigen = -eigen
    torch.testing.assert_close(raw_map(hand_model, "eigengradcam"), eigen.clamp(min=0))
    seg = component(gradient.abs() * activations)
    if seg.min().abs() > seg.max().abs():  # Eq. 13: the largest magnitude positive
        seg = -seg
    torch.testing.assert_close(raw_map(hand_model, "segeigencam"), seg.clamp(min=0))


def test_fem(hand_model):
    # k = 1 for this tiny case. A0 = [1, 2, 0, 1]: mean 1, std sqrt(0.5); threshold 1.707: one position
    # (2) above, w0 = 1/4. A1 = [0, 1, 3, 0]: mean 1, std sqrt(1.5) = 1.225; threshold 2.225: w1 = 1/4.
    # 1/4 * (A0 + A1) = [[0.25, 0.75], [0.75, 0.25]]
    from gradcam.methods.activation import FEM

    expected = torch.tensor([[0.25, 0.75], [0.75, 0.25]])
    torch.testing.assert_close(raw_map(hand_model, FEM(k=1.0)), expected)


def test_kpcacam_with_a_linear_kernel_is_pca(hand_model):
    """With a linear kernel, kernel PCA is PCA: the projection on the first component up to its sign."""
    from gradcam.methods.activation import KPCACAM, first_principal_component

    ours = gradcam.explain(hand_model, HAND_INPUT, KPCACAM(kernel="linear"), "act").layer_results[0]
    samples = ours.activations[0].reshape(2, 4).T
    centred = samples - samples.mean(0)
    _, _, vh = torch.linalg.svd(centred)
    projection = centred @ vh[0]
    signed = projection * (1 if projection[projection.abs().argmax()] > 0 else -1)
    torch.testing.assert_close(ours.raw[0, 0], signed.reshape(2, 2).clamp(min=0).float(), rtol=1e-5, atol=1e-6)
    assert first_principal_component(ours.activations).shape == (1, 2, 2)


def test_randomcam_is_its_own_seeded_draw(hand_model):
    from gradcam.methods.activation import RandomCAM

    weights = torch.rand(2, generator=torch.Generator().manual_seed(7), dtype=torch.float64) * 2 - 1
    expected = torch.relu(weights[0] * torch.relu(HAND_INPUT[0, 0]) + weights[1] * torch.relu(HAND_INPUT[0, 1]))
    torch.testing.assert_close(raw_map(hand_model, RandomCAM(seed=7)), expected.float())


def test_iscam_with_one_step_and_sscam_without_noise_are_score_cam(tiny_cnn, tiny_images):
    """IS-CAM's path has one point, (1/1) H_c: Score-CAM. SS-CAM with std 0 averages identical scores."""
    from gradcam.methods.perturbation import ISCAM, SSCAM

    score = gradcam.explain(tiny_cnn, tiny_images, "scorecam", targets=[1, 2, 3]).raw
    one_step = gradcam.explain(tiny_cnn, tiny_images, ISCAM(samples=1), targets=[1, 2, 3]).raw
    quiet = gradcam.explain(tiny_cnn, tiny_images, SSCAM(samples=3, std=0.0), targets=[1, 2, 3]).raw
    torch.testing.assert_close(one_step, score)
    torch.testing.assert_close(quiet, score)


def test_iscam_integrates_the_path_by_hand(tiny_cnn, tiny_images):
    """s_c = mean over i = 1..n of y(X * (i / n) H_c), then a softmax over channels."""
    import torch.nn.functional as F

    from gradcam.methods.perturbation import ISCAM

    x = tiny_images[:1]
    ex = gradcam.explain(tiny_cnn, x, ISCAM(samples=3), "features.6", targets=[2])
    activations = ex.layer_results[0].activations[0]  # (C, h, w)
    masks = F.interpolate(activations[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)
    low, high = masks.amin(dim=(2, 3), keepdim=True), masks.amax(dim=(2, 3), keepdim=True)
    masks = torch.where(high > low, (masks - low) / (high - low).clamp(min=1e-12), 0)  # a constant channel: 0
    with torch.no_grad():
        scores = torch.stack([tiny_cnn(x * masks * (i / 3))[:, 2] for i in (1, 2, 3)]).mean(0)
    weights = torch.softmax(scores, dim=0)
    expected = torch.relu((weights[:, None, None] * activations).sum(0))
    torch.testing.assert_close(ex.raw[0, 0], expected, rtol=1e-4, atol=1e-6)


def test_finercam_by_hand(hand_model):
    """Two classes: class 0 (logit 3) is compared with class 1 (logit 0.8), the only other one, weighted by
    p_1: s = p_1 (y_0 - alpha y_1) / p_1 = y_0 - alpha y_1, so G = G_0 - alpha G_1 = G_0 - alpha * 0.1.
    With alpha = 1: w0 = mean(G0) - 0.1 = 0.4, w1 = mean(G1) - 0.1 = 0.65;
    0.4 A0 + 0.65 A1 = [[0.4, 0.8 + 0.65], [1.95, 0.4]]."""
    from gradcam.methods.gradient import FinerCAM

    ex = gradcam.explain(hand_model, HAND_INPUT, FinerCAM(alpha=1.0, ranks=(1,)), "act")
    torch.testing.assert_close(ex.raw[0, 0], torch.tensor([[0.4, 1.45], [1.95, 0.4]]))
    assert ex.scores[0, 0].item() == pytest.approx(3.0 - 0.8)
    torch.testing.assert_close(
        gradcam.explain(hand_model, HAND_INPUT, FinerCAM(alpha=0.0), "act").raw,
        gradcam.explain(hand_model, HAND_INPUT, "gradcam", "act").raw,
    )  # alpha 0: Grad-CAM


def test_smooth_grad_cam_pp_without_noise_is_grad_cam_pp(hand_model):
    """With std 0 every noisy copy is the image: the averaged powers are the gradient's, Grad-CAM++."""
    from gradcam.methods.perturbation import SmoothGradCAMpp

    torch.testing.assert_close(
        raw_map(hand_model, SmoothGradCAMpp(samples=2, std=0.0)), raw_map(hand_model, "gradcam++")
    )


def test_shapleycam_by_hand_on_a_quadratic_head():
    """y = s^2 with s = sum(v * A): G = 2 s v, H A = 2 v (v . A) = 2 s v, so G - 0.5 H A = s v. With
    v = the hand model's class-0 row, s = 3: w0 = mean(3 G0) = 1.5, w1 = mean(3 G1) = 2.25;
    1.5 A0 + 2.25 A1 = [[1.5, 3 + 2.25], [6.75, 1.5]]. Grad-CAM (2 s v) gives twice that."""

    class Quadratic(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.act = torch.nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = (self.act(x) * HandModel.GRAD_CLASS0).sum(dim=(1, 2, 3))
            return torch.stack([s**2, torch.zeros_like(s)], dim=1)

    shapley = gradcam.explain(Quadratic(), HAND_INPUT, "shapleycam", "act", targets=[0]).raw[0, 0]
    torch.testing.assert_close(shapley, torch.tensor([[1.5, 5.25], [6.75, 1.5]]))
    plain = gradcam.explain(Quadratic(), HAND_INPUT, "gradcam", "act", targets=[0]).raw[0, 0]
    torch.testing.assert_close(plain, 2 * shapley)
    torch.testing.assert_close(raw_map(HandModel(), "shapleycam"), raw_map(HandModel(), "gradcam"))  # linear head


def test_shapleycam_on_a_vision_transformer_by_hand():
    """#30: Shapley-CAM on torchvision's ViT failed ("derivative for aten::_scaled_dot_product_flash_attention_
    for_cpu_backward is not implemented": its Hessian-vector product differentiates the attention's backward).
    It now runs the attention through the math kernel; the map equals ``G - 0.5 H A`` written out by hand."""
    import torch.nn.functional as F
    import torchvision
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(image_size=64, patch_size=16, num_layers=2, num_heads=2, hidden_dim=32,
                                               mlp_dim=64, num_classes=10).eval()  # fmt: skip
    torch.nn.init.normal_(vit.heads.head.weight)  # torchvision starts its head at zero: every gradient would be 0
    x = torch.randn(1, 3, 64, 64)
    layer = "encoder.layers.encoder_layer_1.ln_1"
    ex = gradcam.explain(vit, x, "shapleycam", layer, targets=[3])
    captured = {}

    def leaf(module, inputs, output):
        captured["a"] = output.detach().requires_grad_()
        return captured["a"]

    handle = vit.get_submodule(layer).register_forward_hook(leaf)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            score = vit(x)[0, 3]
            (g,) = torch.autograd.grad(score, captured["a"], create_graph=True)
            (hvp,) = torch.autograd.grad(g, captured["a"], grad_outputs=captured["a"].detach())
    finally:
        handle.remove()
    corrected = (g - 0.5 * hvp).detach()[:, 1:]  # the patch tokens (the class token is not on the grid)
    tokens = captured["a"].detach()[:, 1:]
    weights = corrected.mean(dim=1)  # (1, C)
    raw = F.relu((tokens * weights[:, None]).sum(-1)).view(1, 1, 4, 4)
    expected = F.interpolate(raw, size=(64, 64), mode="bilinear", align_corners=False)[0, 0]
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    torch.testing.assert_close(ex.maps[0, 0], expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(hvp, torch.zeros_like(hvp))  # the correction is not zero on a transformer


def test_eigencam_does_not_depend_on_the_sign_the_svd_returns(monkeypatch):
    """#30: pytorch-grad-cam keeps the sign LAPACK returns, so its Eigen-CAM on a ViT flipped between photos
    (r = -0.60 against ours on two of three). Ours is fixed by the data: the same map whichever sign the SVD
    gives, and on a planted object (channels that fire there) the map lies on the object, not around it."""
    from gradcam.methods import activation

    torch.manual_seed(0)
    activations = torch.rand(2, 6, 8, 8) * 0.2
    activations[:, :3, 2:4, 5:7] += 3.0  # an object where three channels fire
    plain = activation.first_principal_component(activations)
    svd = torch.linalg.svd

    def opposite(a, full_matrices=True):
        u, s, vh = svd(a, full_matrices=full_matrices)
        return -u, s, -vh

    monkeypatch.setattr(activation.torch.linalg, "svd", opposite)
    flipped = activation.first_principal_component(activations)
    torch.testing.assert_close(plain, flipped)
    for image in plain.clamp(min=0):
        assert image[2:4, 5:7].min() > 0 and image[2:4, 5:7].mean() > 5 * image.mean() / 4


def test_smoothgradcampp_draws_on_the_clean_activations_with_averaged_gradient_powers():
    """#30: torchcam draws Smooth Grad-CAM++ on the last noisy copy's activations (r 0.59-0.95 with ours on
    EfficientNet); the paper's form, which we follow, draws on the clean image's activations with the
    gradient powers averaged over the noisy copies. Written out by hand with the method's own noise."""
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3)).eval()  # fmt: skip
    x = torch.rand(1, 3, 8, 8)
    method = gradcam.get_method("smoothgradcam++").__class__(samples=3, std=0.4, seed=11)
    ours = gradcam.explain(model, x, method, "3", targets=[1]).layer_results[0].raw[0, 0]
    generator = torch.Generator().manual_seed(11)
    powers = []
    for _ in range(3):
        noisy = (x + torch.randn((1, 3, 8, 8), generator=generator) * 0.4).requires_grad_()
        activation = model[:4](noisy)
        (g,) = torch.autograd.grad(model[4:](activation)[0, 1], activation)
        powers.append(torch.stack([g, g**2, g**3]))
    d1, d2, d3 = torch.stack(powers).mean(0)
    clean = model[:4](x).detach()  # the clean image's activations, as the paper draws them
    denominator = 2 * d2 + clean.sum(dim=(2, 3), keepdim=True) * d3
    alpha = torch.where(denominator != 0, d2 / torch.where(denominator != 0, denominator, 1), 0)
    weights = (alpha * d1.clamp(min=0)).sum(dim=(2, 3))
    expected = F.relu((weights[:, :, None, None] * clean).sum(1))[0]
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-4)
    last_noisy = model[:4](noisy).detach()  # torchcam's choice: a different map
    assert not torch.allclose(F.relu((weights[:, :, None, None] * last_noisy).sum(1))[0], expected, atol=1e-3)


def test_gradcampp_weights_follow_the_formula_where_gradients_are_tiny():
    """#30: Refine-CAM (Grad-CAM++ per layer) agreed with pytorch-grad-cam on ResNet-50 (r 0.9995) but not on
    EfficientNet-Lite0's ``blocks.5`` (r 0.13-0.76 for Grad-CAM++ alone): there the gradients are ~1e-4, so
    the 1e-7 pytorch-grad-cam adds to ``2 G^2 + sum(A) G^3`` outweighs it (its weights: cosine 0.975 with the
    formula in float64 on the coffee photo; ours 0.99999999). Pinned here on a head scaled to tiny gradients,
    with activations of both signs (a linear bottleneck's output)."""
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 2))
    with torch.no_grad():
        model[3].weight.mul_(1e-3)  # the gradients at the layer become ~1e-4
    model.eval()
    x = torch.randn(1, 3, 8, 8)
    ours = gradcam.explain(model, x, "gradcam++", "0", targets=[1]).layer_results[0].weights[0, 0]
    a = model[0](x).detach().double()
    activation = model[0](x)
    (g,) = torch.autograd.grad(model[1:](activation)[0, 1], activation)
    g = g.double()
    assert (a.sum((2, 3)) < 0).any() and (a.sum((2, 3)) > 0).any()

    def weights(eps: float) -> torch.Tensor:
        g2, g3 = g**2, g**3
        alpha = torch.where(g != 0, g2 / (2 * g2 + a.sum((2, 3), keepdim=True) * g3 + eps), torch.zeros_like(g))
        return (alpha * g.clamp(min=0)).sum((2, 3))[0]

    torch.testing.assert_close(ours.double(), weights(0.0), rtol=1e-5, atol=1e-12)
    assert not torch.allclose(weights(1e-7), weights(0.0), rtol=1e-2)  # the peer's eps changes them


def test_kpcacam_of_a_numerically_constant_kernel_is_an_empty_map():
    """#30: on a random MobileNetV3 the layer's activations are ~1e-7, every sigmoid-kernel entry is tanh(1)
    to the last bits, and centring leaves rounding noise, which was stretched to a full-range map; now a
    zero map (scikit-learn's, which the peer runs, gives zero too). A healthy scale still gives a map."""
    torch.manual_seed(0)
    activations = torch.randn(1, 96, 4, 4)
    method = gradcam.get_method("kpcacam")
    tiny, _ = method.combine(activations * 1e-7, None)
    healthy, _ = method.combine(activations, None)
    assert not tiny.any() and healthy.clamp(min=0).std() > 0


def test_kpcacam_of_a_large_map_is_scikit_learn_s_kernel_pca():
    """A 32 x 32 map (1,024 positions) takes the LOBPCG path; its component is scikit-learn's KernelPCA's."""
    from sklearn.decomposition import KernelPCA

    torch.manual_seed(0)
    activations = torch.relu(torch.randn(2, 16, 32, 32)) + torch.linspace(0, 2, 32)  # a horizontal trend
    ours, _ = gradcam.get_method("kpcacam").combine(activations, None)
    for image in range(2):
        samples = activations[image].reshape(16, -1).T.double().numpy()
        samples = samples - samples.mean(axis=0)  # the positions centred first, as the peer does
        theirs = KernelPCA(1, kernel="sigmoid", gamma=1 / 16, eigen_solver="dense").fit_transform(samples)[:, 0]
        theirs = torch.from_numpy(theirs) * (1 if theirs[abs(theirs).argmax()] > 0 else -1)
        torch.testing.assert_close(ours[image].flatten().double(), theirs, rtol=1e-4, atol=1e-5)


def test_kpcacam_refuses_a_map_whose_kernel_would_not_fit():
    """A 111 x 111 map (an MNIST-sized net without pooling, at 224 px) built 1.2 GB kernels and O(n^3) products
    per image: `gradcam evaluate` was killed for memory. Now one line naming the cost and what to do."""
    with pytest.raises(ValueError, match=r"111 x 111 = 12,321 positions.*1\.1 GB.*coarser layer"):
        gradcam.get_method("kpcacam").combine(torch.rand(1, 4, 111, 111), None)
