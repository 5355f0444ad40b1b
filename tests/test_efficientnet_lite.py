"""The embedded model built without timm: the same network as timm's tf_efficientnet_lite0 (names, outputs,
preprocessing), its class names without torchvision, and a start-up that imports neither."""

from __future__ import annotations

import subprocess
import sys

import pytest
import timm
import torch

from gradcam.io.efficientnet_lite import PREPROCESSING, efficientnet_lite0
from gradcam.io.hub import _timm_preprocessing
from gradcam.io.models import load_model
from gradcam.targets import imagenet_labels


@pytest.mark.parametrize("size", [(224, 224), (225, 231), (97, 130)])
def test_it_is_timms_tf_efficientnet_lite0_tensor_for_tensor(size):
    """Same state-dict names in the same order, same output on even and odd sizes (TensorFlow's "same"
    padding puts the odd pixel at the end) and the same map at every block."""
    torch.manual_seed(0)
    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    ours = efficientnet_lite0().eval()
    theirs = reference.state_dict()
    assert list(ours.state_dict()) == list(theirs)
    for value in theirs.values():  # running statistics away from 0 and 1, so batch norm's eps matters
        if value.is_floating_point():
            value.uniform_(0.5, 1.5)
    ours.load_state_dict(theirs)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=0)
        features = ours.forward_features(x)  # timm's two methods too (scripts/shortcut_demo.py uses them)
        torch.testing.assert_close(features, reference.forward_features(x), rtol=0, atol=0)
        torch.testing.assert_close(ours.forward_head(features, pre_logits=True),
                                   reference.forward_head(features, pre_logits=True), rtol=0, atol=0)  # fmt: skip
    assert [n for n, _ in ours.named_modules() if n.endswith(("conv_dw", "bn2"))] == [
        n for n, _ in reference.named_modules() if n.endswith(("conv_dw", "bn2"))
    ]


def test_its_preprocessing_and_class_names_are_timms_and_torchvisions():
    from torchvision.models import ResNet50_Weights

    cfg = dict(timm.create_model("tf_efficientnet_lite0", pretrained=False).pretrained_cfg)
    assert _timm_preprocessing(cfg) == PREPROCESSING
    assert imagenet_labels() == tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def test_a_ten_class_head_builds_like_timms():
    ours, theirs = efficientnet_lite0(num_classes=10), timm.create_model("tf_efficientnet_lite0", num_classes=10)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    ours.reset_classifier(3)
    theirs.reset_classifier(3)
    assert ours.get_classifier().weight.shape == theirs.get_classifier().weight.shape == (3, 1280)
    assert ours(torch.zeros(1, 3, 64, 64)).shape == (1, 3) and ours.num_classes == 3


def test_loading_the_embedded_model_imports_neither_timm_nor_torchvision():
    """Importing timm imports torchvision and torch._dynamo: it made every `gradcam explain` 3 s slower."""
    code = (
        "import sys; from gradcam.io.models import load_model; bundle = load_model(); "
        "bundle.labels[0]; print(sorted(m for m in ('timm', 'torchvision', 'torch._dynamo') if m in sys.modules))"
    )
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert shown.strip() == "[]"
    assert load_model().labels[967] == "espresso"


def test_timm_models_without_timm_are_one_line_naming_the_extra(monkeypatch):
    """timm is an optional extra now that the default model does not need it."""
    from gradcam.io.models import ModelLoadError

    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` raises ImportError
    with pytest.raises(ModelLoadError, match=r"timm:resnet18 needs timm: pip install 'gradcam\[timm\]'"):
        load_model("timm:resnet18")
    assert load_model().name == "efficientnet_lite0"
