"""EfficientNet-Lite0, the embedded default model, built here without timm (importing timm imports
torchvision and torch._dynamo: about 3 s before the first photo).

Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks" (ICML 2019), in its
Lite form for mobile accelerators (TensorFlow, 2020): ReLU6 instead of swish, no squeeze-and-excitation,
stem and head not scaled. A stem convolution, then stages of inverted residual blocks (1x1 expansion by
``expand``, k x k depthwise convolution, 1x1 projection; the input added back when the shape is kept), a 1x1
head to 1280 channels, average pooling and a linear classifier. Convolutions pad as TensorFlow's "same":
a stride-2 convolution pads ``max((ceil(n / 2) - 1) * 2 + k - n, 0)`` pixels, the extra one at the end.

The modules carry timm's names for ``tf_efficientnet_lite0`` (``conv_stem``, ``bn1``, ``blocks.S.N.conv_dw``,
..., ``conv_head``, ``bn2``, ``classifier``) and each batch norm applies its activation, as timm's do: its
state dicts and fine-tuned checkpoints load unchanged, layer names are the same, and the output equals
timm's (tested). timm's ``forward_features``, ``forward_head``, ``get_classifier`` and ``reset_classifier``
work as there.

Example:
    >>> model = efficientnet_lite0(num_classes=1000).eval()
    >>> model(torch.zeros(1, 3, 224, 224)).shape
    torch.Size([1, 1000])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .models import Preprocessing

# (block kind, kernel, stride, expansion, output channels, repeats) of each stage of EfficientNet-Lite0
STAGES = (
    ("ds", 3, 1, 1, 16, 1),
    ("ir", 3, 2, 6, 24, 2),
    ("ir", 5, 2, 6, 40, 2),
    ("ir", 3, 2, 6, 80, 3),
    ("ir", 5, 1, 6, 112, 3),
    ("ir", 5, 2, 6, 192, 4),
    ("ir", 3, 1, 6, 320, 1),
)
STEM, HEAD = 32, 1280
BN_EPS = 1e-3  # TensorFlow's default, which the weights were trained with
# what the weights expect (timm's tf_efficientnet_lite0 configuration): bicubic resize of the short side to
# 256, a 224 centre crop, values mapped to [-1, 1]
PREPROCESSING = Preprocessing(
    resize=256, crop=(224, 224), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic"
)


class SamePadConv(nn.Conv2d):
    """A convolution with TensorFlow's "same" padding: symmetric ``(k - 1) // 2`` at stride 1; at stride 2
    what the input's size needs, the odd pixel at the bottom/right."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        padding = (kernel - 1) // 2 if stride == 1 else 0
        super().__init__(cin, cout, kernel, stride, padding, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] == 1:
            return super().forward(x)
        pads = []
        for size, k, s in (
            (x.shape[-1], self.kernel_size[1], self.stride[1]),
            (x.shape[-2], self.kernel_size[0], self.stride[0]),
        ):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


class BatchNormAct(nn.BatchNorm2d):
    """Batch norm followed by its activation (ReLU6, or none), as one module: hooking it gives what the
    next layer sees."""

    def __init__(self, channels: int, act: bool = True) -> None:
        super().__init__(channels, eps=BN_EPS)
        self.act: nn.Module = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


class DepthwiseSeparable(nn.Module):
    """k x k depthwise, then 1x1 pointwise: the first stage."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv_dw = SamePadConv(cin, cin, kernel, stride, groups=cin)
        self.bn1 = BatchNormAct(cin)
        self.conv_pw = SamePadConv(cin, cout, 1)
        self.bn2 = BatchNormAct(cout, act=False)
        self.has_skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv_pw(self.bn1(self.conv_dw(x))))
        return y + x if self.has_skip else y


class InvertedResidual(nn.Module):
    """1x1 expansion, k x k depthwise, 1x1 linear projection (MobileNetV2's block)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.conv_pw = SamePadConv(cin, mid, 1)
        self.bn1 = BatchNormAct(mid)
        self.conv_dw = SamePadConv(mid, mid, kernel, stride, groups=mid)
        self.bn2 = BatchNormAct(mid)
        self.conv_pwl = SamePadConv(mid, cout, 1)
        self.bn3 = BatchNormAct(cout, act=False)
        self.has_skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn3(self.conv_pwl(self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))))
        return y + x if self.has_skip else y


class GlobalAveragePool(nn.Module):
    """The mean over the spatial positions, flattened to (B, C)."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.flatten(self.pool(x))


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0 (see the module's docstring); ``num_classes`` outputs."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv_stem = SamePadConv(3, STEM, 3, 2)
        self.bn1 = BatchNormAct(STEM)
        stages, cin = [], STEM
        for kind, kernel, stride, expand, cout, repeats in STAGES:
            blocks: list[nn.Module] = []
            for i in range(repeats):
                step = stride if i == 0 else 1
                if kind == "ds":
                    blocks.append(DepthwiseSeparable(cin, cout, kernel, step))
                else:
                    blocks.append(InvertedResidual(cin, cout, kernel, step, expand))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.conv_head = SamePadConv(cin, HEAD, 1)
        self.bn2 = BatchNormAct(HEAD)
        self.global_pool = GlobalAveragePool()
        self.classifier: nn.Module = nn.Linear(HEAD, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The feature maps (B, 1280, h, w) after the head's batch norm and ReLU6 (timm's method)."""
        return self.bn2(self.conv_head(self.blocks(self.bn1(self.conv_stem(x)))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pooled features (``pre_logits``), else class scores, from :meth:`forward_features` (timm's method)."""
        pooled = self.global_pool(x)
        return pooled if pre_logits else self.classifier(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The final linear layer (timm's method)."""
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        """A new, untrained head of ``num_classes`` outputs (none: the pooled features), as timm's does."""
        self.num_classes = num_classes
        self.classifier = nn.Linear(HEAD, num_classes) if num_classes > 0 else nn.Identity()


def efficientnet_lite0(num_classes: int = 1000) -> EfficientNetLite:
    """A randomly initialised EfficientNet-Lite0 with timm's ``tf_efficientnet_lite0`` names."""
    return EfficientNetLite(num_classes)
