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


# Each method's flags that differ from the base class's defaults, as they were set by hand before four of
# them were derived (#25): the derivation must give exactly this.
FLAGS_BY_HAND = {
    "cam": {"evaluated_by_default": False},
    "eigengradcam": {"channel_weights": False},
    "segeigencam": {"channel_weights": False},
    "finercam": {"one_gradient_per_class": False},
    "shapleycam": {"second_order": True, "one_gradient_per_class": False},
    "refinecam": {"fusion": "product"},
    **{m: {"uses_gradients": False, "channel_weights": False} for m in ("eigencam", "fem", "kpcacam", "randomcam")},
    **{
        m: {"uses_gradients": False, "needs_model": True, "one_gradient_per_class": False,
            "evaluated_by_default": False}
        for m in ("scorecam", "sscam", "iscam", "ablationcam", "smoothgradcam++")
    },  # fmt: skip
    "gradeclip": {"reads_attention": True, "one_gradient_per_class": False, "evaluated_by_default": False},
    "sess": {"uses_gradients": False, "needs_model": True, "channel_weights": False, "one_gradient_per_class": False,
             "evaluated_by_default": False, "wraps_explain": True, "any_dimensions": False},
    "fullgrad": {"uses_gradients": False, "needs_model": True, "channel_weights": False,
                 "one_gradient_per_class": False, "evaluated_by_default": False, "wraps_explain": True,
                 "uses_layer": False},
    "legrad": {"uses_gradients": False, "needs_model": True, "reads_attention": True, "channel_weights": False,
               "one_gradient_per_class": False, "evaluated_by_default": False, "wraps_explain": True,
               "any_dimensions": False},
    "dff": {"channel_weights": False, "one_gradient_per_class": False, "evaluated_by_default": False},
}  # fmt: skip
CONTRACT_FLAGS = ("uses_gradients", "second_order", "needs_model", "reads_attention", "channel_weights",
                  "one_gradient_per_class", "fusion", "evaluated_by_default", "wraps_explain", "uses_layer",
                  "any_dimensions")  # fmt: skip


def test_the_derived_flags_give_what_was_set_by_hand():
    from gradcam.methods.base import CAMMethod

    for name in gradcam.methods():
        cls = type(gradcam.get_method(name))
        differing = {f: getattr(cls, f) for f in CONTRACT_FLAGS if getattr(cls, f) != getattr(CAMMethod, f)}
        assert differing == FLAGS_BY_HAND.get(name, {}), name


def test_a_new_method_gets_its_derived_flags_and_can_override_them():
    from gradcam.methods.base import CAMMethod

    class Rerunning(CAMMethod):
        name = "test-rerunning"
        needs_model = True

    class RerunningButCheap(Rerunning):
        evaluated_by_default = True

    class ActivationOnly(CAMMethod):
        name = "test-activations"
        uses_gradients = False

    assert (Rerunning.uses_gradients, Rerunning.channel_weights, Rerunning.one_gradient_per_class) == (
        False,
        True,
        False,
    )
    assert Rerunning.evaluated_by_default is False and RerunningButCheap.evaluated_by_default is True
    assert ActivationOnly.channel_weights is False and ActivationOnly.evaluated_by_default is True
