"""Fixtures shared by the tests; no network, no downloads."""

from __future__ import annotations

import pytest
import torch

from tiny_models import HandModel, TinyCNN


@pytest.fixture
def hand_model() -> HandModel:
    return HandModel().eval()


@pytest.fixture
def tiny_cnn() -> TinyCNN:
    torch.manual_seed(0)
    return TinyCNN().eval()


@pytest.fixture
def tiny_images() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(3, 3, 32, 32)
