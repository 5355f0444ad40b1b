"""Gradient methods: Grad-CAM, Grad-CAM++, XGrad-CAM, HiRes-CAM, Layer-CAM, Grad-CAM element-wise, CAM,
Eigen-Grad-CAM, Seg-Eigen-CAM.

Notation: ``A`` (B, C, h, w) the layer's activations, ``G = dy/dA`` the gradient of the explained score.
"""

from __future__ import annotations

from typing import Any, ClassVar

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


@register
class GradCAMElementWise(CAMMethod):
    """Grad-CAM element-wise (pytorch-grad-cam's GradCAMElementWise): the ReLU inside the channel sum.

    ``L = ReLU(sum_c ReLU(G_c * A_c))``; as element-wise weights, ``w_c,ij = G_c,ij`` where
    ``G_c,ij A_c,ij > 0``, else 0.
    """

    name = "gradcam-elementwise"

    def weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return torch.where(gradients * activations > 0, gradients, torch.zeros_like(gradients))


@register
class CAM(CAMMethod):
    """CAM (Zhou et al., CVPR 2016, arXiv:1512.04150), for a layer followed by global average pooling and
    a linear classifier: the class's own classifier weights.

    ``w_kc = W_kc``;  ``L = ReLU(sum_c w_kc A_c)``. For such a head ``dy_k / dA_c,ij = W_kc / (h w)`` at
    every position: :func:`gradcam.explain` first looks for that classifier (a linear layer that gives every
    score from the pooled layer, :mod:`gradcam.linear_head`: no backward pass), else reads the weights from
    the gradient; a layer whose gradient varies over positions is not followed by such a head, and is
    refused.
    """

    name = "cam"
    evaluated_by_default = False  # for global-average-pool + linear heads only
    reads_linear_head = True  # the classifier's rows without a backward pass where one is found

    def weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        height, width = gradients.shape[-2:]
        mean = gradients.mean(dim=(2, 3))
        if gradients.numel() == 0:  # an empty batch: nothing to check, empty weights
            return mean * (height * width)
        spread = (gradients - mean[..., None, None]).abs().amax()
        if spread > 1e-4 * mean.abs().amax().clamp(min=1e-12):
            raise ValueError(
                "cam: the layer is not followed by global average pooling and a linear classifier (its gradient "
                "varies over positions); choose that layer (e.g. a ResNet's layer4) or use gradcam"
            )
        return mean * (height * width)


@register
class EigenGradCAM(CAMMethod):
    """Eigen-Grad-CAM (pytorch-grad-cam's EigenGradCAM): Eigen-CAM of the gradient-weighted activations.

    ``L = ReLU(first principal component of G * A)``, class-discriminative through ``G``; the sign as
    :func:`~gradcam.methods.activation.first_principal_component` fixes it.
    """

    name = "eigengradcam"
    channel_weights = False

    def combine(self, activations: torch.Tensor, gradients: torch.Tensor | None) -> tuple[torch.Tensor, None]:
        from .activation import first_principal_component

        if gradients is None:
            raise ValueError("eigengradcam needs gradients")
        return first_principal_component(gradients * activations), None


@register
class SegEigenCAM(CAMMethod):
    """Seg-Eigen-CAM (Chung & Ying, Applied Sciences 2025, doi:10.3390/app15137562), made for segmentation:
    the first principal component of ``|G| * A`` (Eq. 10), signed so that its largest magnitude is
    positive (Eq. 13). ``L = ReLU(PC_1(|G| * A))``.
    """

    name = "segeigencam"
    channel_weights = False

    def combine(self, activations: torch.Tensor, gradients: torch.Tensor | None) -> tuple[torch.Tensor, None]:
        from .activation import first_principal_component

        if gradients is None:
            raise ValueError("segeigencam needs gradients")
        return first_principal_component(gradients.abs() * activations, sign="extreme"), None


@register
class FinerCAM(GradCAM):
    """Finer-CAM (Zhang et al., CVPR 2025, arXiv:2501.11309): what sets a class apart from the classes the
    model nearly confuses with it. Grad-CAM of the score

    ``s = sum_j p_j (y_t - alpha y_j) / sum_j p_j``

    over the comparison classes j: those whose logits are nearest to the target's (``ranks`` 1, 2, 3 of
    the distance order by default), weighted by their softmax probabilities ``p_j``; ``alpha = 0`` is
    plain Grad-CAM. Comparison classes are chosen on the image's own logits.

    Example:
        >>> gradcam.explain(model, x, FinerCAM(alpha=1.0, ranks=(1, 2, 3)), targets="tiger cat")  # doctest: +SKIP
    """

    name = "finercam"
    one_gradient_per_class = False

    def __init__(self, alpha: float = 1.0, ranks: tuple[int, ...] = (1, 2, 3)) -> None:
        self.alpha, self.ranks = alpha, tuple(ranks) if not isinstance(ranks, int) else (ranks,)

    def adjust_targets(self, resolved: Any, logits: Any) -> Any:
        return resolved.finer(logits, self.ranks, self.alpha) if isinstance(logits, torch.Tensor) else resolved


@register
class ShapleyCAM(CAMMethod):
    """Shapley-CAM (Cai et al., 2025, arXiv:2501.06261): Grad-CAM's weights from a second-order Taylor
    view of the Shapley value: the gradient corrected by half the Hessian-vector product with the
    activations.

    ``w_c = mean_ij (G - 0.5 * H A)_c,ij`` with ``H = d^2 y / dA^2``;  ``L = ReLU(sum_c w_c A_c)``. For a head
    that is piecewise linear in ``A`` (ReLU layers and a linear classifier) ``H A = 0`` and this is Grad-CAM;
    it differs where the head bends (GELU, softmax-weighted scores, attention). One extra backward pass
    per target (double backward through the head only).
    """

    name = "shapleycam"
    second_order: ClassVar[bool] = True

    def weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return gradients.mean(dim=(2, 3))  # the gradients arrive corrected: G - 0.5 * H A


@register
class RefineCAM(GradCAMPlusPlus):
    """Refine-CAM (pytorch-grad-cam's RefineCAM, arXiv:2605.14641): Grad-CAM++ on several layers, the
    layers' normalised, upsampled maps multiplied rather than averaged, so that a region survives only
    where every layer marks it; this cleans the noisy maps of early layers with the later ones.

    ``L = norm(prod_l norm(upsample(L_l)))``; with one layer it is Grad-CAM++.

    Example:
        >>> gradcam.explain(model, x, "refinecam", layer=["layer2", "layer3", "layer4"])   # doctest: +SKIP
    """

    name = "refinecam"
    fusion: ClassVar[str] = "product"
