"""Our maps against reference implementations, used only as test oracles (captum, pytorch-grad-cam).

torchvision ResNet-18 and VGG-11 with seeded random weights; small inputs keep this fast.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torchvision

import gradcam
from gradcam.methods.activation import RandomCAM
from gradcam.result import normalise

captum_attr = pytest.importorskip("captum.attr")
pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

ORACLES = {
    "gradcam": pytorch_grad_cam.GradCAM,
    "gradcam++": pytorch_grad_cam.GradCAMPlusPlus,
    "xgradcam": pytorch_grad_cam.XGradCAM,
    "hirescam": pytorch_grad_cam.HiResCAM,
    "layercam": pytorch_grad_cam.LayerCAM,
    "eigencam": pytorch_grad_cam.EigenCAM,
    "scorecam": pytorch_grad_cam.ScoreCAM,
    "ablationcam": pytorch_grad_cam.AblationCAM,
    "gradcam-elementwise": pytorch_grad_cam.GradCAMElementWise,
    "eigengradcam": pytorch_grad_cam.EigenGradCAM,
    "segeigencam": pytorch_grad_cam.SegEigenCAM,
    "fem": pytorch_grad_cam.FEM,
    "kpcacam": pytorch_grad_cam.KPCA_CAM,
    "shapleycam": pytorch_grad_cam.ShapleyCAM,
}
# the principal component's sign is arbitrary; pytorch-grad-cam leaves it as the SVD gives it
SIGNLESS = {"eigencam", "eigengradcam"}
# checked against another oracle, or statistically: see the tests below
ELSEWHERE = {
    "cam": "torchcam CAM",
    "randomcam": "statistical",
    "gradeclip": "by hand (test_image_text.py)",
    "sscam": "torchcam SSCAM, statistical",
    "iscam": "torchcam ISCAM",
    "finercam": "pytorch-grad-cam FinerCAM (its own target convention)",
    "smoothgradcam++": "torchcam SmoothGradCAMpp, statistical",
    "refinecam": "pytorch-grad-cam RefineCAM over several layers",
    "sess": "pytorch-grad-cam SESS and by hand (test_sess.py)",
    "fullgrad": "pytorch-grad-cam FullGrad and by hand (test_fullgrad.py)",
    "legrad": "torchcam LeGrad and by hand (test_legrad.py)",
    "dff": "by hand; its NMF against scikit-learn's and pytorch-grad-cam's DFF (test_dff.py)",
}
# perturbation methods run one forward pass per channel: smaller inputs, and the paper-level bar (0.99)
PERTURBATION = {"scorecam", "ablationcam"}

CASES = {"resnet18": "layer4", "vgg11": "features.19"}


def seeded(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.get_model(name, weights=None, num_classes=10).eval()


def images(size: int = 112, count: int = 2) -> torch.Tensor:
    torch.manual_seed(2)
    return torch.randn(count, 3, size, size)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_registry_is_covered():
    assert set(ORACLES) | set(ELSEWHERE) == set(gradcam.methods())


@pytest.mark.parametrize("arch", CASES)
def test_raw_gradcam_equals_captum(arch):
    model, x = seeded(arch), images()
    targets = informative_targets(model, x, CASES[arch])
    ours = gradcam.explain(model, x, "gradcam", CASES[arch], targets=targets)
    reference_model = copy.deepcopy(model)
    theirs = captum_attr.LayerGradCam(reference_model, reference_model.get_submodule(CASES[arch]))
    expected = theirs.attribute(x, target=torch.tensor(targets), relu_attributions=True).detach()
    assert expected.abs().sum() > 0
    torch.testing.assert_close(ours.raw[:, 0], expected[:, 0], rtol=1e-4, atol=1e-6)


def informative_targets(model, x, layer) -> list[int]:
    """Per image, the class whose Grad-CAM map varies most (random weights give some all-zero maps)."""
    every = gradcam.explain(model, x, "gradcam", layer, targets="top-10")
    best = every.raw.flatten(2).std(dim=2).argmax(dim=1)
    return [int(every.targets[i, best[i]]) for i in range(len(x))]


@pytest.mark.parametrize("arch", CASES)
@pytest.mark.parametrize("method", ORACLES)
def test_maps_correlate_with_pytorch_grad_cam(arch, method):
    if method in PERTURBATION and arch == "vgg11":
        pytest.skip("perturbation methods are checked on ResNet-18: the oracle's 1,024 VGG-11 passes are slow")
    model, x = seeded(arch), images(64 if method in PERTURBATION else 112)
    targets = informative_targets(model, x, CASES[arch])
    ours = gradcam.explain(model, x, method, CASES[arch], targets=targets).maps[:, 0].numpy()
    reference_model = copy.deepcopy(model)
    with ORACLES[method](model=reference_model, target_layers=[reference_model.get_submodule(CASES[arch])]) as cam:
        theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
    for image in range(len(x)):
        if method == "fem" and theirs[image].std() == 0:
            assert ours[image].std() == 0  # no position passes the k-sigma rule: both maps are empty
            continue
        assert theirs[image].std() > 0
        r = correlation(ours[image], theirs[image])
        if method in SIGNLESS and r < 0.999:
            r = other_sign_correlation(model, x, CASES[arch], method, targets, image, theirs[image])
        assert r >= (0.99 if method in PERTURBATION else 0.999), (arch, method, image, r)


def other_sign_correlation(model, x, layer, method, targets, image, theirs) -> float:
    """Ours follows the summed activation; the oracle keeps the sign its SVD returns (docs/methods.md:
    Eigen-CAM's sign): the correlation with ours flipped (ReLU after the sign makes it another map, not -map)."""
    from gradcam.methods.activation import first_principal_component

    ex = gradcam.explain(model, x, "hirescam", layer, targets=targets)
    acts = ex.layer_results[0].activations
    if method == "eigengradcam":
        acts = acts * ex.layer_results[0].weights[:, 0]
    flipped = (-first_principal_component(acts)[image]).clamp(min=0)
    up = torch.nn.functional.interpolate(flipped[None, None], size=x.shape[-2:], mode="bilinear")
    return correlation(up[0, 0].numpy(), np.asarray(theirs))


def test_cam_equals_torchcam_and_refuses_a_layer_without_a_pooled_linear_head():
    from torchcam.methods import CAM

    model, x = seeded("resnet18"), images()
    targets = informative_targets(model, x, "layer4")
    ours = gradcam.explain(model, x, "cam", "layer4", targets=targets)
    reference = copy.deepcopy(model)
    with CAM(reference, target_layer="layer4", fc_layer="fc") as extractor:
        out = reference(x)
        theirs = extractor(targets, out, normalized=False)[0]  # (B, h, w): sum_c W_kc A_c, no ReLU
    # every map of this library is ReLU'd (the paper's CAM is not: its negative part speaks against the class)
    torch.testing.assert_close(normalise(ours.raw[:, 0]), normalise(theirs.clamp(min=0)), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="not followed by global average pooling and a linear classifier"):
        gradcam.explain(model, x, "cam", "layer3", targets=targets)


def test_random_cam_mean_map_agrees_with_the_oracle():
    """RandomCAM is stochastic: over many draws both means converge to E[norm(ReLU(sum_c w_c A_c))]. The
    draws run on one image's layer4 activations through each implementation's own map formula."""
    model, x = seeded("resnet18"), images(160, 1)
    activations = gradcam.explain(model, x, "eigencam", "layer4").layer_results[0].activations  # (1, C, 5, 5)
    ours = torch.stack([normalise(RandomCAM(seed=s).combine(activations, None)[0].clamp(min=0)) for s in range(2000)])
    oracle = pytorch_grad_cam.RandomCAM(model=copy.deepcopy(model), target_layers=[model.layer4])
    np.random.seed(0)
    values = activations.numpy()
    draws = [np.maximum(oracle.get_cam_image(x, None, None, values, values, False), 0) for _ in range(2000)]
    theirs = np.stack([(d - d.min()) / (d.max() - d.min()) if d.max() > d.min() else 0 * d for d in draws])
    # every position's mean agrees within 5 standard errors of the difference of two 2,000-draw means
    error = np.sqrt(ours.numpy().var(0) / len(ours) + theirs.var(0) / len(theirs))
    assert (np.abs(ours.mean(0).numpy() - theirs.mean(0)) < 5 * error).all()
    again = gradcam.explain(model, x, "randomcam", "layer4").maps
    torch.testing.assert_close(again, gradcam.explain(model, x, "randomcam", "layer4").maps)  # seeded: repeatable


@pytest.mark.parametrize("name", ["iscam", "sscam"])
def test_score_cam_variants_agree_with_torchcam(name):
    """IS-CAM is deterministic; SS-CAM averages 400 noisy masks in both implementations (other random
    draws), so its maps agree statistically. The softmax over channels ignores torchcam's baseline score."""
    from torchcam.methods import ISCAM as TorchcamISCAM
    from torchcam.methods import SSCAM as TorchcamSSCAM

    from gradcam.methods.perturbation import ISCAM, SSCAM
    from tiny_models import TinyCNN

    torch.manual_seed(0)
    model, x = TinyCNN().eval(), torch.randn(2, 3, 32, 32)
    ours_method, theirs_class, options = {
        "iscam": (ISCAM(samples=10), TorchcamISCAM, {"num_samples": 10}),
        "sscam": (SSCAM(samples=400, std=2.0), TorchcamSSCAM, {"num_samples": 400, "std": 2.0}),
    }[name]
    ours = gradcam.explain(model, x, ours_method, "features.6", targets=[1, 2]).raw[:, 0]
    reference = copy.deepcopy(model)
    torch.manual_seed(1)
    with theirs_class(reference, target_layer="features.6", input_shape=(3, 32, 32), **options) as extractor:
        with torch.no_grad():
            out = reference(x)
        theirs = extractor([1, 2], out)[0]
    for image in range(2):
        assert correlation(ours[image].numpy(), theirs[image].numpy()) >= (0.999 if name == "iscam" else 0.99)


def test_finer_cam_equals_pytorch_grad_cam():
    """pytorch-grad-cam's FinerCAM chooses the comparison classes itself when no targets are given (the
    top-1 class, or target_idx, against the 3 nearest logits)."""
    from gradcam.methods.gradient import FinerCAM

    model, x = seeded("resnet18"), images()
    reference = copy.deepcopy(model)
    with pytorch_grad_cam.FinerCAM(model=reference, target_layers=[reference.layer4]) as cam:
        theirs = cam(input_tensor=x)
        theirs_5 = cam(input_tensor=x, target_idx=5, alpha=0.6)
    ours = gradcam.explain(model, x, "finercam", "layer4").maps[:, 0].numpy()
    ours_5 = gradcam.explain(model, x, FinerCAM(alpha=0.6), "layer4", targets=5).maps[:, 0].numpy()
    for mine, yours in [(ours, theirs), (ours_5, theirs_5)]:
        for image in range(len(x)):
            if yours[image].std() == 0:  # random weights: an empty map in both
                assert mine[image].std() == 0
                continue
            assert correlation(mine[image], yours[image]) >= 0.999


def test_smooth_grad_cam_pp_agrees_with_torchcam():
    """Both average gradient powers over noisy inputs (other random draws). torchcam weighs alpha by the
    last noisy sample's gradient where the paper (and we) use the mean gradient, so the maps agree
    statistically, not exactly."""
    from torchcam.methods import SmoothGradCAMpp as TorchcamSmooth

    from gradcam.methods.perturbation import SmoothGradCAMpp

    model, x = seeded("resnet18"), images()
    ours = gradcam.explain(model, x, SmoothGradCAMpp(samples=100, std=0.3), "layer4", targets=[1, 2]).raw[:, 0]
    reference = copy.deepcopy(model)
    torch.manual_seed(1)
    with TorchcamSmooth(reference, target_layer="layer4", num_samples=100, std=0.3, input_shape=(3, 112, 112)) as ext:
        theirs = ext([1, 2], reference(x))[0].detach()
    for image in range(2):
        assert correlation(ours[image].numpy(), theirs[image].numpy()) >= 0.99


def test_refine_cam_equals_pytorch_grad_cam_over_layers():
    model, x = seeded("resnet18"), images()
    targets = informative_targets(model, x, "layer4")
    ours = gradcam.explain(model, x, "refinecam", ["layer3", "layer4"], targets=targets).maps[:, 0].numpy()
    reference = copy.deepcopy(model)
    cam = pytorch_grad_cam.RefineCAM(reference, [reference.layer3, reference.layer4])
    theirs = cam(x, [ClassifierOutputTarget(t) for t in targets])
    for image in range(len(x)):
        assert correlation(ours[image], theirs[image]) >= 0.999
    one = gradcam.explain(model, x, "refinecam", "layer4", targets=targets).maps
    torch.testing.assert_close(one, gradcam.explain(model, x, "gradcam++", "layer4", targets=targets).maps)
