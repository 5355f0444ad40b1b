"""Tiny models for the tests: small enough to run in milliseconds, some small enough to work out by hand."""

from __future__ import annotations

import torch
from torch import nn

import gradcam


class HandModel(nn.Module):
    """A model small enough to work every method out by hand (see tests/test_methods_by_hand.py).

    The explained layer is ``act`` (a ReLU on the 2-channel, 2x2 input); the head is a bias-free linear
    layer on the flattened activations, so the gradient of class 0 is its weight row, reshaped.
    """

    GRAD_CLASS0 = torch.tensor([[[1.0, -1.0], [2.0, 0.0]], [[0.0, 1.0], [1.0, 1.0]]])

    def __init__(self) -> None:
        super().__init__()
        self.act = nn.ReLU()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8, 2, bias=False))
        with torch.no_grad():
            self.head[1].weight.copy_(torch.stack([self.GRAD_CLASS0.flatten(), torch.full((8,), 0.1)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(x))


HAND_INPUT = torch.tensor([[[[1.0, 2.0], [0.0, 1.0]], [[-1.0, 1.0], [3.0, 0.0]]]])


class TinyCNN(nn.Module):
    """A small CNN with batch norm, dropout, an in-place ReLU and global pooling: 10 classes."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.Conv2d(8, 16, 3, padding=1, stride=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(16, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


# Methods that explain any spatial layer. Grad-ECLIP reads the attention of a ViT block and has its own
# tests on a tiny CLIP (test_image_text.py); CAM needs a global-pool + linear head, which TinyCNN's
# two-layer classifier is not (tests in test_methods_by_hand.py, test_reference.py and test_all_classes.py).
CNN_METHODS = [
    m for m in gradcam.methods() if not getattr(gradcam.get_method(m), "reads_attention", False) and m != "cam"
]


class TinySignal(nn.Module):
    """A tiny 1-D CNN for (B, 2, L) signals, 3 classes; fixed seed so that `py:tiny_models:TinySignal` built
    twice is the same model."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv1d(2, 4, 5, stride=2, padding=2)
        self.act = nn.ReLU()
        self.head = nn.Sequential(nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(4, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.conv(x)))


class TinyVolume(nn.Module):
    """A tiny 3-D CNN for (B, 1, D, H, W) volumes, 2 classes; fixed seed like TinySignal."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv3d(1, 6, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(6, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def TinyViT() -> nn.Module:  # noqa: N802  (a factory named like the class it builds, for py:tiny_models:TinyViT)
    """A 3-block torchvision ViT on 224 px photos (7 x 7 patches of 32 px), 10 classes, seeded; its head is
    drawn at random (torchvision starts it at zero, which would make every gradient zero)."""
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(image_size=224, patch_size=32, num_layers=3, num_heads=4, hidden_dim=32,
                              mlp_dim=64, num_classes=10)  # fmt: skip
    nn.init.normal_(model.heads.head.weight, std=0.5)
    return model.eval()


SEEN_INPUTS: list[torch.Tensor] = []


class RecordingCNN(TinyCNN):
    """TinyCNN that keeps each input it is given (``SEEN_INPUTS``): what reached the model, checked by tests."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        SEEN_INPUTS.append(x.detach().clone())
        return super().forward(x)
