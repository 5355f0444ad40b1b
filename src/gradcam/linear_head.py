"""A class score's gradient at a layer read by global average pooling and one linear classifier, without a
backward pass.

For ``y = W GAP(A) + b`` the gradient of class k's score at every position of the layer is
``dy_k / dA_c,ij = W_kc / (h w)``: the classifier's row, spread evenly. CAM (Zhou et al., 2016) needs only
that, so :func:`gradcam.explain` first runs CAM's forward pass without any graph and looks for the
classifier: an ``nn.Linear`` whose input is the layer's channels and whose output is the model's scores,
accepted only if it reproduces every score of the batch from the layer's pooled output. Where none does (a
head with more than one linear layer, scores after a softmax), explain runs again with the gradient, which
decides as before (and refuses a layer not read this way).

Example:
    >>> gradients = linear_head_gradients(model, activations, logits, indices)    # doctest: +SKIP
    >>> gradients[0].shape      # one (B, C, h, w) per target, the classifier's rows / (h w)
    torch.Size([2, 1280, 7, 7])
"""

from __future__ import annotations

import math
import threading
import weakref

import torch
import torch.nn.functional as F
from torch import nn

from .hooks import modules_of

# the classifier last found for a model, tried first next time (a walk over a model's modules costs about
# 0.15 ms for EfficientNet-Lite0's 176); a stale one fails the check and the search runs again
_FOUND: weakref.WeakKeyDictionary[nn.Module, nn.Linear] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()
AGREEMENT = 1e-4  # the classifier must give every score to this share of the largest score's size


def linear_head_gradients(
    model: nn.Module, activations: torch.Tensor, logits: torch.Tensor, indices: torch.Tensor
) -> list[torch.Tensor] | None:
    """Per target k of ``indices`` (B, K), the (B, C, *spatial) gradient of score ``logits[b, indices[b, k]]``
    at ``activations`` (B, C, *spatial, as the layer gave them) when a linear classifier of the model gives
    ``logits`` (B, N) from the layer's spatial mean; None when none does."""
    if activations.dim() < 3 or logits.dim() != 2 or indices.dim() != 2 or len(logits) != len(activations):
        return None
    channels, classes = activations.shape[1], logits.shape[1]
    pooled = activations.detach().float().flatten(2).mean(dim=2)
    scale = AGREEMENT * max(1.0, float(logits.detach().abs().amax())) if logits.numel() else AGREEMENT
    known = _FOUND.get(model)
    candidates = [known] if known is not None else []
    for searched in (False, True):
        if searched:
            candidates = [m for m in modules_of(model) if isinstance(m, nn.Linear) and m is not known]
        for module in candidates:
            if module.in_features != channels or module.out_features != classes:
                continue
            weight = module.weight.detach().float()
            bias = None if module.bias is None else module.bias.detach().float()
            rows = weight[indices.to(weight.device)]  # (B, K, C)
            # a classifier found before is checked on the explained scores (B x K dot products); a new one
            # on every score of the batch
            if searched:
                reproduces = _close(F.linear(pooled, weight, bias), logits, scale)
            else:
                explained = (rows * pooled[:, None, :].to(rows)).sum(dim=2)
                if bias is not None:
                    explained = explained + bias[indices.to(bias.device)]
                reproduces = _close(explained, logits.detach().gather(1, indices.to(logits.device)), scale)
            if reproduces:
                with _LOCK:
                    _FOUND[model] = module
                cells = math.prod(activations.shape[2:])
                trailing = (1,) * (activations.dim() - 2)
                return [
                    (rows[:, k] / cells).reshape(len(rows), channels, *trailing).expand(activations.shape)
                    for k in range(indices.shape[1])
                ]
    return None


def _close(computed: torch.Tensor, scores: torch.Tensor, scale: float) -> bool:
    return bool(((computed - scores.detach().float().to(computed.device)).abs() <= scale).all())
