"""Each feature map's share of a class activation map: ``w_c * A_c`` (Selvaraju et al. 2017, eq. 2 before
the sum), the pictures of ``--per-channel`` and the terms every weighted method adds up.

Example:
    >>> channel_contributions(torch.ones(1, 2), torch.ones(1, 2, 3, 3)).shape
    torch.Size([1, 2, 3, 3])
"""

from __future__ import annotations

import torch


def channel_contributions(weights: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
    """Each feature map's contribution ``w_c * A_c``, (..., C, h, w): the maps that add up to the CAM.

    ``weights`` are per channel (..., C) or element-wise (..., C, h, w)."""
    while weights.dim() < activations.dim():  # channel weights: broadcast over the spatial dimensions
        weights = weights[..., None]
    return weights * activations
