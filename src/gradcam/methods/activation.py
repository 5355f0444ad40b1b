"""Activation-only methods: Eigen-CAM, FEM, KPCA-CAM, and the RandomCAM baseline."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .base import CAMMethod, register, weighted_sum


def first_principal_component(activations: torch.Tensor, sign: str = "activation") -> torch.Tensor:
    """Project each image's activations on their first principal component, (B, C, h, w) -> (B, h, w).

    The spatial positions are the samples, the channels the features; the features are centred first.
    The component's sign is arbitrary in the SVD; ``sign="activation"`` fixes it so that the projection
    correlates positively with the channel-summed activation (where the layer fires most is positive);
    ``sign="extreme"`` so that the value of largest magnitude is positive (Seg-Eigen-CAM, Eq. 13).
    """
    batch, channels, height, width = activations.shape
    samples = activations.float().reshape(batch, channels, height * width).transpose(1, 2)
    centred = samples - samples.mean(dim=1, keepdim=True)
    # non-finite activations (a NaN pixel, which explain() warns about) have no principal component: 0
    centred = torch.nan_to_num(centred, nan=0.0, posinf=0.0, neginf=0.0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    projection = centred @ vh[:, 0, :].unsqueeze(-1)
    projection = projection.squeeze(-1)
    if sign == "extreme":
        flip = projection.amin(dim=1).abs() > projection.amax(dim=1).abs()
    else:
        total = samples.sum(dim=2)
        flip = ((projection - projection.mean(1, keepdim=True)) * (total - total.mean(1, keepdim=True))).sum(1) < 0
    factor = torch.where(flip, -1.0, 1.0).to(projection.dtype)
    return (projection * factor[:, None]).reshape(batch, height, width)


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


@register
class FEM(CAMMethod):
    """FEM, the Feature Explanation Method (Fuad et al., IPTA 2020): class-agnostic, no gradients. A
    channel's weight is the share of its positions above its own ``mean + k * std`` (the k-sigma rule).

    ``w_c = mean_ij [A_c,ij > mu_c + k sigma_c]``;  ``L = ReLU(sum_c w_c A_c)`` (sigma: population std).

    Example:
        >>> gradcam.explain(model, x, gradcam.get_method("fem")).maps     # doctest: +SKIP
    """

    name = "fem"
    uses_gradients = False  # class-agnostic: explain() keeps no weights for methods without gradients

    def __init__(self, k: float = 2.0) -> None:
        self.k = k

    def combine(self, activations: torch.Tensor, gradients: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        mean = activations.mean(dim=(2, 3), keepdim=True)
        std = activations.std(dim=(2, 3), keepdim=True, unbiased=False)
        weights = (activations > mean + self.k * std).float().mean(dim=(2, 3))
        return weighted_sum(weights, activations), weights


KERNELS = ("sigmoid", "rbf", "linear", "poly", "cosine")
MAX_KPCA_POSITIONS = 4096  # a 64 x 64 map: a 128 MB kernel an image
EIGH_SIZE = 512  # a larger kernel's first component by LOBPCG


@register
class KPCACAM(CAMMethod):
    """KPCA-CAM (Karmani et al., 2024, arXiv:2410.00267): Eigen-CAM with kernel PCA, class-agnostic.

    The positions (samples, centred) are projected on the first component of the centred kernel matrix
    ``K_ij = k(x_i, x_j)`` (default sigmoid: ``tanh(gamma <x_i, x_j> + 1)``, ``gamma = 1 / C``):
    ``L = ReLU(sqrt(lambda_1) * v_1)``, the sign making v_1's largest-magnitude entry positive (as
    scikit-learn's KernelPCA does).
    """

    name = "kpcacam"
    uses_gradients = False

    def __init__(self, kernel: str = "sigmoid", gamma: float | None = None) -> None:
        if kernel not in KERNELS:
            raise ValueError(f"kpcacam: kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
        self.kernel, self.gamma = kernel, gamma

    def combine(self, activations: torch.Tensor, gradients: torch.Tensor | None) -> tuple[torch.Tensor, None]:
        batch, channels, height, width = activations.shape
        positions = height * width
        if positions > MAX_KPCA_POSITIONS:
            gigabytes = positions * positions * 8 / 2**30
            raise ValueError(
                f"kpcacam: the layer's map has {height} x {width} = {positions:,} positions; kernel PCA needs a "
                f"{positions:,} x {positions:,} matrix per image ({gigabytes:.1f} GB) and an eigendecomposition "
                f"that grows with its cube; explain a coarser layer (at most {MAX_KPCA_POSITIONS:,} positions)"
            )
        gamma = self.gamma if self.gamma is not None else 1.0 / channels
        maps = [self._projection(image, gamma) for image in activations]  # one kernel in memory at a time
        return torch.stack(maps).reshape(batch, height, width).to(activations.dtype), None

    def _projection(self, activation: torch.Tensor, gamma: float) -> torch.Tensor:
        """One image's (C, h, w) activations projected on its kernel's first component, (h w,) float64."""
        x = torch.nan_to_num(activation.double().reshape(activation.shape[0], -1).T)
        x = x - x.mean(dim=0, keepdim=True)
        kernel = _kernel(x[None], self.kernel, gamma)[0]
        # double centring, K - 1K - K1 + 1K1 with 1 the (n, n) matrix of 1/n: the row and column means
        means = kernel.mean(dim=0, keepdim=True)
        centred = kernel - means - means.T + kernel.mean()
        value, vector = _first_eigenpair(centred, guess=lambda: x @ torch.linalg.svd(x, full_matrices=False)[2][0])
        # a kernel that centring makes numerically zero (activations ~1e-7: every k(x_i, x_j) the same to the
        # last bits) has no component: a zero map, as scikit-learn's float32 gives, not rounding noise
        top = value if value > 1e-10 * kernel.abs().max() else value.new_zeros(())
        vector = -vector if vector[vector.abs().argmax()] < 0 else vector
        return vector * top.sqrt()


def _first_eigenpair(
    matrix: torch.Tensor, guess: Callable[[], torch.Tensor] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The largest eigenvalue of a symmetric (n, n) matrix and its unit eigenvector. Above ``EIGH_SIZE``
    rows by LOBPCG (matrix-vector products instead of a full decomposition: docs/benchmarks.md, "KPCA-CAM on a
    fine layer"; the same vector to 1e-10), started from ``guess()`` (the positions' first linear principal component: a
    sigmoid kernel of small dot products is nearly linear), checked by its residual, else by a full
    eigendecomposition."""
    if len(matrix) > EIGH_SIZE:
        try:
            start = guess()[:, None] if guess is not None else None
            values, vectors = torch.lobpcg(matrix, k=1, X=start, largest=True, tol=1e-10, niter=1000)
            value, vector = values[0], vectors[:, 0]
            residual = (matrix @ vector - value * vector).norm()
            if value > 0 and residual <= 1e-6 * value:
                return value, vector / vector.norm()
        except (RuntimeError, ValueError):  # LOBPCG may fail on a nearly zero matrix: the full one decides
            pass
    values, vectors = torch.linalg.eigh(matrix)
    return values[-1], vectors[:, -1]


def _kernel(x: torch.Tensor, kind: str, gamma: float) -> torch.Tensor:
    """(B, n, n) kernel matrices of (B, n, d) samples, with scikit-learn's defaults (degree 3, coef0 1)."""
    dot = x @ x.transpose(1, 2)
    if kind == "sigmoid":
        return torch.tanh(gamma * dot + 1)
    if kind == "poly":
        return (gamma * dot + 1) ** 3
    if kind == "linear":
        return dot
    if kind == "cosine":
        norms = x.norm(dim=2, keepdim=True).clamp(min=1e-12)
        return (x / norms) @ (x / norms).transpose(1, 2)
    squared = (x * x).sum(dim=2)
    return torch.exp(-gamma * (squared[:, :, None] + squared[:, None, :] - 2 * dot).clamp(min=0))


@register
class RandomCAM(CAMMethod):
    """A baseline, for the sanity check and the metrics (pytorch-grad-cam's RandomCAM): uniform random
    channel weights in [-1, 1], one draw of C weights per call from ``seed`` (every image and target the
    same), ``L = ReLU(sum_c w_c A_c)``. A method that does no better than this on a metric tells little.
    """

    name = "randomcam"
    uses_gradients = False

    def __init__(self, seed: int | None = 0) -> None:
        self.seed = seed

    def combine(self, activations: torch.Tensor, gradients: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed) if self.seed is not None else None
        draw = torch.rand(activations.shape[1], generator=generator, dtype=torch.float64) * 2 - 1
        weights = draw.to(activations).expand(activations.shape[0], -1)
        return weighted_sum(weights, activations), weights
