"""Each registered method says what it needs and gives (class metadata), and does what it says: the
engines and the command line read these instead of testing method names."""

from __future__ import annotations

import pytest
import torch

import gradcam
from gradcam.apps.cli import build_parser
from tiny_models import TinyCNN


@pytest.mark.parametrize("name", [m for m in gradcam.methods() if m not in ("gradeclip", "legrad", "cam")])  # own tests
def test_each_method_gives_what_its_metadata_says(name):
    method = gradcam.get_method(name)
    torch.manual_seed(0)
    ex = gradcam.explain(TinyCNN().eval(), torch.randn(2, 3, 32, 32), method, targets="top-2")
    assert (ex.layer_results[0].weights is not None) == method.channel_weights, name
    if method.needs_model:
        assert not method.uses_gradients and not method.one_gradient_per_class
    if method.one_gradient_per_class and method.uses_gradients:
        assert gradcam.explain(TinyCNN().eval(), torch.randn(1, 3, 32, 32), method, targets="all").raw.shape[1] == 10
    elif method.uses_gradients or method.needs_model:
        with pytest.raises(ValueError, match='targets="all"'):
            gradcam.explain(TinyCNN().eval(), torch.randn(1, 3, 32, 32), method, targets="all")


def test_the_options_and_the_defaults_come_from_the_methods():
    takers = [m for m in gradcam.methods() if type(gradcam.get_method(m)).accepts("top_channels")]
    assert takers == ["scorecam", "sscam", "iscam"]
    defaults = build_parser().parse_args(["evaluate", "x.jpg"]).methods.split(",")
    assert defaults == [m for m in gradcam.methods() if gradcam.get_method(m).evaluated_by_default]
    assert not {"scorecam", "ablationcam", "gradeclip", "legrad", "cam"} & set(defaults)
    assert gradcam.get_method("refinecam").fusion == "product" and gradcam.get_method("shapleycam").second_order
