"""FullGrad: the input-gradient and every bias-gradient of the network, not one layer's.

FullGrad (Srinivas & Fleuret, "Full-Gradient Representation for Neural-Network Visualization", NeurIPS
2019, arXiv:1905.00780): ``S = psi(|x * dy/dx|) + sum_layers sum_c psi(|b_c * dy/dz_c|)``, where ``z`` is the
output of a layer with a bias ``b`` (a convolution's bias, or a batch norm's effective bias
``beta - mu gamma / sqrt(var + eps)``; for a norm that also applies an activation, as timm's
``BatchNormAct2d`` does, ``z`` is the norm's output before it), and ``psi`` min-max normalises each map (per
image and channel) and resizes it to the input. It needs the gradient through the whole network: one
forward pass and one full backward pass per target.

Example:
    >>> gradcam.explain(model, x, "fullgrad", targets="top-2").maps.shape               # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .base import CAMMethod, register


def _bias_layers(model: nn.Module, dims: int) -> list[tuple[str, nn.Module]]:
    """The convolutions with a bias and the batch norms of ``dims`` spatial dimensions (1-D for signals,
    2-D for images, 3-D for volumes and clips)."""
    convolutions = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
    norms = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims]
    return [
        (name, module)
        for name, module in model.named_modules()
        if (isinstance(module, convolutions) and module.bias is not None) or isinstance(module, norms)
    ]


def _after_the_norm(module: nn.Module) -> nn.Module | None:
    """The first module a norm-with-activation applies after normalising (timm's ``BatchNormAct2d``: its
    ``drop``, then ``act``): its input is the norm's own output ``z``. None for a plain layer, whose output
    is ``z`` itself."""
    if (
        not isinstance(module, nn.modules.batchnorm._BatchNorm)
        or type(module).forward is nn.modules.batchnorm._BatchNorm.forward
    ):
        return None
    children = dict(module.named_children())
    return children.get("drop") or children.get("act")


def _effective_bias(module: nn.Module) -> torch.Tensor:
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        assert module.running_mean is not None and module.running_var is not None
        weight = module.weight if module.weight is not None else torch.ones_like(module.running_mean)
        bias = module.bias if module.bias is not None else torch.zeros_like(module.running_mean)
        return bias - module.running_mean * weight / torch.sqrt(module.running_var + module.eps)
    assert isinstance(module.bias, torch.Tensor)
    return module.bias


def _scaled(maps: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """``sum_c psi(maps_c)``, (B, *size): each (b, c) map min-max normalised, resized (linear, bilinear or
    trilinear) to ``size``, summed over channels. Resizing is linear, so the channels are summed first and
    resized once: one resize per layer instead of one per channel (ResNet-50: 26 s -> about 1 s for 8
    images). A (B, C) output (a norm in the head, no grid) has no map and adds nothing."""
    from ..result import upsample

    if maps.dim() != 2 + len(size):
        return maps.new_zeros(maps.shape[0], *size)
    flat = maps.flatten(2)
    low, high = flat.amin(-1, keepdim=True), flat.amax(-1, keepdim=True)
    summed = ((flat - low) / (high - low + 1e-7)).reshape(maps.shape).sum(1, keepdim=True)
    return upsample(summed, tuple(size))[:, 0]


@register
class FullGrad(CAMMethod):
    name = "fullgrad"
    needs_model = True
    any_dimensions = True  # the bias layers of the input's dimensions (Conv1d/BatchNorm1d for signals, ...)
    uses_layer = False
    wraps_explain = True

    def wrapped_maps(
        self,
        model: nn.Module,
        images: torch.Tensor,
        layer: Any,
        targets_of: Callable[[torch.Tensor], torch.Tensor],
        explain: Callable[..., Any],
        select: Callable[[Any], torch.Tensor],
    ) -> torch.Tensor:
        """(B, K, H, W) FullGrad maps for the classes ``targets_of`` picks from this forward pass's scores,
        normalised to [0, 1]."""
        from ..result import normalise

        size = tuple(images.shape[2:])
        layers = _bias_layers(model, len(size))
        outputs: list[torch.Tensor] = []

        def keep(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
            outputs.append(output)
            return output.clone()  # an in-place ReLU after the layer changes the copy, not z

        def keep_input(module: nn.Module, inputs: Any) -> tuple[torch.Tensor, ...]:
            outputs.append(inputs[0])
            return (inputs[0].clone(), *inputs[1:])

        handles = []
        for _, module in layers:
            inside = _after_the_norm(module)
            if inside is not None:  # z is the norm's own output, before the activation the module applies
                handles.append(inside.register_forward_pre_hook(keep_input))
            else:
                handles.append(module.register_forward_hook(keep))
        try:
            with torch.enable_grad():
                x = images.detach().clone().requires_grad_(True)
                logits = select(model(x))
                indices = targets_of(logits)
                maps = torch.zeros(*indices.shape, *size)
                for k in range(indices.shape[1]):
                    score = logits.gather(1, indices[:, k : k + 1].to(logits.device)).sum()
                    last = k == indices.shape[1] - 1
                    grads = torch.autograd.grad(score, [x, *outputs], retain_graph=not last, allow_unused=True)
                    total = _scaled((x * grads[0]).abs().detach(), size)  # (B, H, W)
                    for (_, module), gradient in zip(layers, grads[1:], strict=True):
                        if gradient is None:
                            continue
                        bias = _effective_bias(module).detach().reshape(1, -1, *([1] * (gradient.dim() - 2)))
                        total = total + _scaled((bias * gradient).abs().detach(), size)
                    maps[:, k] = total.float().cpu()
        finally:
            for handle in handles:
                handle.remove()
        return normalise(maps, len(size))
