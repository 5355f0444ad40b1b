"""Deep Feature Factorization as a class map: Grad-CAM of the layer's k-concept reconstruction.

DFF (Collins et al., ECCV 2018, arXiv:1806.10206; see :func:`gradcam.concepts` for the concepts
themselves) writes each image's activations as k non-negative concepts and where they lie,
``A ~= offset + sum_j c_j h_j``. As a map for a class this method keeps only what the k concepts explain:

``L = ReLU(sum_c w_c Â_c) = ReLU(w . offset + sum_j (w . c_j) h_j)``, ``w_c = mean_ij dy/dA_c,ij``

(Grad-CAM's weights on the reconstruction ``Â``): the class's evidence carried by the concepts, the
residual the concepts do not explain left out. Each image is factorised on its own (its map does not
depend on the rest of the batch). Option ``k`` (5).

Example:
    >>> gradcam.explain(model, x, DeepFeatureFactorization(k=3), targets="top-2")      # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from .base import CAMMethod, LayerContext, register


@register
class DeepFeatureFactorization(CAMMethod):
    """``ReLU(sum_c w_c Â_c)``, ``Â`` the k-concept NMF reconstruction of the image's activations."""

    name = "dff"
    channel_weights = False  # the concepts, not the channels, carry the map
    one_gradient_per_class: ClassVar[bool] = False  # one factorisation per image, not per class
    evaluated_by_default = False  # an NMF per image

    def __init__(self, k: int = 5, seed: int = 0) -> None:
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"dff: k must be a whole number >= 1, got {k!r}")
        self.k, self.seed = k, seed

    def reconstruction(self, activations: torch.Tensor) -> torch.Tensor:
        """``offset + W H`` for each image's activations (B, C, *grid), factorised one image at a time."""
        from ..dff import nmf

        rebuilt = torch.empty_like(activations, dtype=torch.float32)
        for b, image in enumerate(activations):
            flat = torch.nan_to_num(image.detach().float().flatten(1))  # (C, positions)
            offset = flat.amin(dim=1, keepdim=True)
            w, h = nmf(flat - offset, min(self.k, *flat.shape), seed=self.seed)
            rebuilt[b] = (offset + w @ h).reshape(image.shape)
        return rebuilt

    def layer_result(self, context: LayerContext) -> Any:
        """One factorisation per image, shared by all its targets (not one per target)."""
        from ..result import LayerResult

        if context.gradients is None:
            raise ValueError("dff needs gradients")
        rebuilt = self.reconstruction(context.activations)
        cams = [self._map(rebuilt, gradient) for gradient in context.gradients]
        return LayerResult(context.name, context.activations, None, torch.stack(cams, dim=1).clamp(min=0))

    def combine(
        self, activations: torch.Tensor, gradients: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if gradients is None:
            raise ValueError("dff needs gradients")
        return self._map(self.reconstruction(activations), gradients), None

    @staticmethod
    def _map(rebuilt: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        """``sum_c w_c Â_c`` with Grad-CAM's weights ``w_c = mean_ij G_c,ij``."""
        weights = gradients.float().flatten(2).mean(dim=2)  # (B, C)
        return torch.einsum("bc,bc...->b...", weights, rebuilt)
