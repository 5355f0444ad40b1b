"""Activation-only methods: Eigen-CAM."""

from __future__ import annotations

import torch

from .base import CAMMethod, register


def first_principal_component(activations: torch.Tensor) -> torch.Tensor:
    """Project each image's activations on their first principal component, (B, C, h, w) -> (B, h, w).

    The spatial positions are the samples, the channels the features; the features are centred first.
    The component's sign is arbitrary in the SVD; we fix it so that the projection correlates positively
    with the channel-summed activation (where the layer fires most is positive).
    """
    batch, channels, height, width = activations.shape
    samples = activations.float().reshape(batch, channels, height * width).transpose(1, 2)
    centred = samples - samples.mean(dim=1, keepdim=True)
    # non-finite activations (a NaN pixel, which explain() warns about) have no principal component: 0
    centred = torch.nan_to_num(centred, nan=0.0, posinf=0.0, neginf=0.0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    projection = centred @ vh[:, 0, :].unsqueeze(-1)
    projection = projection.squeeze(-1)
    total = samples.sum(dim=2)
    agreement = ((projection - projection.mean(1, keepdim=True)) * (total - total.mean(1, keepdim=True))).sum(1)
    sign = torch.where(agreement < 0, -1.0, 1.0).to(projection.dtype)
    return (projection * sign[:, None]).reshape(batch, height, width)


@register
class EigenCAM(CAMMethod):
    """Eigen-CAM (Muhammad & Yeasin, IJCNN 2020, arXiv:2008.00299): class-agnostic, no gradients.

    ``L = ReLU(A_flat @ v_1)`` with ``v_1`` the first right singular vector of the centred activations
    (positions x channels), signed to agree with the summed activation.
    """

    name = "eigencam"
    uses_gradients = False

    def combine(self, activations: torch.Tensor, gradients: torch.Tensor | None) -> tuple[torch.Tensor, None]:
        return first_principal_component(activations), None
