"""Gradient methods: Grad-CAM, Grad-CAM++, XGrad-CAM, HiRes-CAM, Layer-CAM.

Notation: ``A`` (B, C, h, w) the layer's activations, ``G = dy/dA`` the gradient of the explained score.
"""

from __future__ import annotations

import torch

from .base import CAMMethod, register


@register
class GradCAM(CAMMethod):
    """Grad-CAM (Selvaraju et al., ICCV 2017, arXiv:1610.02391).

    ``w_c = mean_ij G_c,ij``;  ``L = ReLU(sum_c w_c A_c)``.

    Example:
        >>> gradcam.explain(model, x, method="gradcam").maps.shape   # doctest: +SKIP
    """

    name = "gradcam"

    def weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return gradients.mean(dim=(2, 3))


@register
class GradCAMPlusPlus(CAMMethod):
    """Grad-CAM++ (Chattopadhay et al., WACV 2018, arXiv:1710.11063), with the paper's exponential score,
    so that higher derivatives are powers of the first.

    ``a_c,ij = G^2 / (2 G^2 + sum_ab A_c,ab * G^3)`` (0 where ``G = 0``);
    ``w_c = sum_ij a_c,ij * ReLU(G_c,ij)``;  ``L = ReLU(sum_c w_c A_c)``.
    """

    name = "gradcam++"

    def weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        g2 = gradients.pow(2)
        g3 = g2 * gradients
        denominator = 2 * g2 + activations.sum(dim=(2, 3), keepdim=True) * g3
        alpha = torch.where(denominator != 0, g2 / torch.where(denominator != 0, denominator, 1), 0)
        return (alpha * gradients.clamp(min=0)).sum(dim=(2, 3))


@register
class XGradCAM(CAMMethod):
    """XGrad-CAM (Fu et al., BMVC 2020, arXiv:2008.02312).

    ``w_c = sum_ij (A_c,ij / sum_ab A_c,ab) * G_c,ij`` (0 for a channel whose activations sum to 0);
    ``L = ReLU(sum_c w_c A_c)``.
    """

    name = "xgradcam"

    def weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        total = activations.sum(dim=(2, 3))
        weighted = (activations * gradients).sum(dim=(2, 3))
        return torch.where(total != 0, weighted / torch.where(total != 0, total, 1), 0)


@register
class HiResCAM(CAMMethod):
    """HiRes-CAM (Draelos & Carin, 2020, arXiv:2011.08891): element-wise, no averaging of gradients.

    ``L = ReLU(sum_c G_c * A_c)``.
    """

    name = "hirescam"

    def weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return gradients


@register
class LayerCAM(CAMMethod):
    """Layer-CAM (Jiang et al., IEEE TIP 2021): positive gradients as element-wise weights.

    ``L = ReLU(sum_c ReLU(G_c) * A_c)``.
    """

    name = "layercam"

    def weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return gradients.clamp(min=0)
