"""Binary, multi-label and regression heads: the named target kinds (issue 13, "other heads")."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gradcam
from tiny_models import TinyCNN

LAYER = "features.5"


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))


def maps(model: nn.Module, images: torch.Tensor, targets, layer: str = LAYER, **options) -> torch.Tensor:
    return gradcam.explain(model, images, "gradcam", layer, targets, **options).maps


def test_a_binary_head_positive_and_negative(images):
    torch.manual_seed(0)
    binary = TinyCNN(classes=1).eval()
    torch.testing.assert_close(maps(binary, images, gradcam.Positive()), maps(binary, images, 0))
    torch.testing.assert_close(maps(binary, images, gradcam.Negative()), maps(binary, images, 0, counterfactual=True))
    both = maps(binary, images, [gradcam.Positive(), gradcam.Negative()])  # one forward pass, two maps
    assert both.shape == (3, 2, 32, 32)


def test_a_multi_label_head_one_map_per_label(images):
    torch.manual_seed(0)
    multi_label = TinyCNN(classes=4).eval()
    by_kind = maps(multi_label, images, [gradcam.Positive(1), gradcam.Positive(3)])
    torch.testing.assert_close(by_kind, maps(multi_label, images, [[1, 3]] * 3))
    with pytest.raises(ValueError, match="Positive: output 4 is out of range for a model with 4 outputs"):
        maps(multi_label, images, gradcam.Positive(4))


class Regressor(nn.Module):
    """A (B,) regression output, as an age or a count model gives."""

    def __init__(self) -> None:
        super().__init__()
        self.body = TinyCNN(classes=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)[:, 0]


def test_a_regression_head_and_the_pull_toward_a_value(images):
    torch.manual_seed(0)
    model = Regressor().eval()
    layer = "body." + LAYER
    raising = maps(model, images, gradcam.Regression(), layer)
    torch.testing.assert_close(raising, maps(model.body, images, gradcam.Positive()))  # the same network, (B, 1)
    lowering = maps(model, images, gradcam.Regression(direction=-1), layer)
    with torch.no_grad():
        values = model(images)
    # d/dA of -(y - v)^2 is -2 (y - v) dy/dA: below the value it is the raising map, above it the lowering one
    for i in range(3):
        above = maps(model, images[i : i + 1], gradcam.Regression(toward=float(values[i]) + 10), layer)
        below = maps(model, images[i : i + 1], gradcam.Regression(toward=float(values[i]) - 10), layer)
        torch.testing.assert_close(above[0], raising[i], atol=1e-5, rtol=0)
        torch.testing.assert_close(below[0], lowering[i], atol=1e-5, rtol=0)
