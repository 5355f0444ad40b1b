"""Grad-CAM written out by hand with plain forward hooks, no gradcam code: the oracles the detector and
segmentation tests compare with."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from gradcam.result import normalise


def leaf_gradcam(
    net: torch.nn.Module, layer_names: list[str], score_of: Callable[[], torch.Tensor], size: tuple[int, ...]
) -> torch.Tensor:
    """Grad-CAM of the scalar ``score_of()`` (it runs ``net``) at each layer, every layer's output handed on as a
    leaf of its own (a score's gradient stops at the first one it meets), the raw maps summed at ``size``."""
    captured = {}

    def leaf(output, name):
        captured[name] = output.detach().requires_grad_()
        return captured[name]

    handles = [
        net.get_submodule(name).register_forward_hook(lambda m, i, o, name=name: leaf(o, name)) for name in layer_names
    ]
    try:
        with torch.enable_grad():
            score = score_of()
            grads = torch.autograd.grad(score, [captured[n] for n in layer_names], allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    total = 0
    for name, grad in zip(layer_names, grads, strict=True):
        if grad is None:  # another scale's box: nothing of this score passes this map
            continue
        raw = F.relu((grad.mean(dim=(2, 3), keepdim=True) * captured[name]).sum(1, keepdim=True))
        total = total + F.interpolate(raw, size=size, mode="bilinear", align_corners=False)
    return normalise(total[0, 0].detach())


def token_gradcam(
    tokens: torch.Tensor, grad: torch.Tensor, grid: tuple[int, int], size: tuple[int, int], prefix: int = 1
) -> torch.Tensor:
    """Grad-CAM on a ViT's patch tokens (1, N, C) and their gradient: the ``prefix`` tokens before the
    ``grid`` of patches and any tokens after it left out, the map upsampled to ``size``."""
    height, width = grid
    laid = [t[:, prefix : prefix + height * width].reshape(1, height, width, -1).permute(0, 3, 1, 2)
            for t in (tokens, grad)]  # fmt: skip
    raw = F.relu((laid[1].mean(dim=(2, 3), keepdim=True) * laid[0]).sum(1, keepdim=True))
    return normalise(F.interpolate(raw, size=size, mode="bilinear", align_corners=False)[0, 0]).detach()
