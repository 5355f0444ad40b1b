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


@pytest.fixture
def unreachable_hub(monkeypatch):
    """The Hugging Face hub at an address where nothing listens: loading from it must fail at once."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
