"""Guided backpropagation and Guided Grad-CAM.

Guided backpropagation (Springenberg et al., ICLR-W 2015, arXiv:1412.6806): the gradient of the score
with respect to the input, where every ReLU passes back only positive gradients of positive inputs:
``dL/dx = [x > 0] * ReLU(dL/dy)``. Guided Grad-CAM (Selvaraju et al. 2017) multiplies it by the upsampled
Grad-CAM map: high resolution and class-discriminative.

ReLUs are found as calls, not as modules: a ``TorchFunctionMode`` wraps every ``relu`` (module, in-place
or functional, and ReLU6/hardtanh with a lower bound of 0) while the forward pass runs, so nothing in the
model is swapped or changed.

Example:
    >>> g = guided_backprop(model, x, targets=[281])           # (B, K, 3, H, W)   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .hooks import preserved_state
from .targets import TargetSpec, resolve_targets, select_logits


class _PositiveGradient(torch.autograd.Function):
    """Identity forward; backward passes only the positive part of the gradient."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.clamp(min=0)


_RELUS = {F.relu, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_, F.relu6}


class _GuidedReLUs(TorchFunctionMode):
    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        guided = func in _RELUS or (func is F.hardtanh and _lower_bound(args, kwargs) >= 0)
        if guided and isinstance(result, torch.Tensor) and result.requires_grad:
            return _PositiveGradient.apply(result)
        return result


def _lower_bound(args: tuple, kwargs: dict) -> float:
    if "min_val" in kwargs:
        return float(kwargs["min_val"])
    return float(args[1]) if len(args) > 1 else -1.0


def guided_backprop(
    model: nn.Module,
    images: torch.Tensor,
    targets: TargetSpec = None,
    *,
    output: Callable[[Any], torch.Tensor] | None = None,
    labels: Any = None,
) -> torch.Tensor:
    """(B, K, C, H, W) guided gradients of each target's score with respect to the input.

    The model is left as it was (see :func:`gradcam.hooks.preserved_state`); no parameter ``.grad`` is
    written. Cost: a forward and a full backward pass per target.
    """
    select = output or select_logits
    with torch.inference_mode(False), preserved_state(model):
        x = images.detach().clone().requires_grad_()
        torch.set_grad_enabled(True)
        with _GuidedReLUs():
            logits = select(model(x))
        resolved = resolve_targets(targets, logits.detach(), labels)
        scores = resolved.scores(logits)
        grads = [
            torch.autograd.grad(scores[:, k].sum(), x, retain_graph=k < scores.shape[1] - 1)[0]
            for k in range(scores.shape[1])
        ]
    return torch.stack(grads, dim=1).float()


def gradient_picture(gradients: torch.Tensor) -> torch.Tensor:
    """(C, H, W) gradients -> (3, H, W) uint8 picture: standardised, 0.1 std around mid-grey."""
    g = gradients.float()
    g = (g - g.mean()) / (g.std() + 1e-12) * 0.1 + 0.5
    if g.shape[0] == 1:
        g = g.expand(3, -1, -1)
    return (g.clamp(0, 1) * 255).round().to(torch.uint8)
