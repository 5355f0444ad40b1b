"""Perturbation methods: Score-CAM and Ablation-CAM. They query the model again, in chunks, with no
gradients; each supplies channel weights (B, K, C) and the shared code forms ``ReLU(sum_c w_c A_c)``.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..hooks import with_first
from ..spatial import Volume
from .base import CAMMethod, LayerContext, register, weighted_result


@dataclass
class Probe:
    """What a perturbation method may use: the model, the batch, the layer and its activations, and a
    ``scores(output, image_ids) -> (N, K)`` function giving the K explained scores of rows that stand
    for images ``image_ids``."""

    model: nn.Module
    images: torch.Tensor
    layer_name: str
    activations: torch.Tensor
    scores: Callable[[Any, torch.Tensor], torch.Tensor]
    original_scores: torch.Tensor
    layout: Any = None
    layer_output: torch.Tensor | None = None
    eval_mode: bool = True  # the mode the model re-runs in (restored afterwards)

    def as_layer_output(self, spatial: torch.Tensor, image_ids: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) activations back in the layer's own form (tokens, channels-last) and dtype: the
        activations are float32 for the arithmetic, the rest of the model may be float64 or half."""
        if self.layer_output is None:
            return spatial.to(self.images.dtype)
        spatial = spatial.to(self.layer_output.dtype)
        if self.layout is None:
            return spatial
        return self.layout.from_spatial(spatial, self.layer_output[image_ids])


class PerturbationMethod(CAMMethod):
    """A method whose channel weights come from re-running (part of) the model."""

    needs_model = True
    any_dimensions = False  # each one says so where its masks and ablations are written for any grid

    def __init__(self, batch_size: int = 32) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size

    def layer_result(self, context: LayerContext) -> Any:
        """``ReLU(sum_c w_c A_c)`` with the weights that re-running the network (``context.probe``) gives."""
        from ..hooks import preserved_state

        probe = context.probe
        with preserved_state(probe.model, eval_mode=probe.eval_mode):
            weights = self.perturbation_weights(probe).float()
        return weighted_result(context.name, context.activations, weights, context.eigen_smooth)

    def perturbation_weights(self, probe: Probe) -> torch.Tensor:
        """(B, K, C) channel weights."""
        raise NotImplementedError


def _chunks(total: int, size: int):
    for start in range(0, total, size):
        yield slice(start, min(start + size, total))


@register
class ScoreCAM(PerturbationMethod):
    """Score-CAM (Wang et al., CVPR-W 2020, arXiv:1910.01279), Algorithm 1.

    ``H_c = minmax(upsample(A_c))``;  ``s_c = y(X * H_c)``;  ``w = softmax_c(s)``;
    ``L = ReLU(sum_c w_c A_c)``.

    One forward pass per channel, run in chunks of ``batch_size`` masked images under
    ``torch.inference_mode()``; the scores stay on the device. A constant channel's mask is all zero, so
    all such channels share one forward pass of the zero image. ``top_channels=N`` scores only the N
    channels whose activations vary most (the "Faster Score-CAM" shortcut); the others get no weight.

    Example:
        >>> gradcam.explain(model, x, method=ScoreCAM(batch_size=64, top_channels=128))   # doctest: +SKIP
    """

    name = "scorecam"
    any_dimensions = True  # masks upsampled to any grid (SS-CAM and IS-CAM inherit them)

    def __init__(self, batch_size: int = 32, top_channels: int | None = None) -> None:
        super().__init__(batch_size)
        if top_channels is not None and top_channels < 1:
            raise ValueError(f"top_channels must be >= 1, got {top_channels}")
        self.top_channels = top_channels

    def perturbation_weights(self, probe: Probe) -> torch.Tensor:
        images, activations = probe.images, probe.activations
        batch, channels = activations.shape[:2]
        count = probe.original_scores.shape[1]
        flat = activations.flatten(2)
        low, high = flat.amin(dim=2), flat.amax(dim=2)
        varying = high > low  # (B, C)
        selected = varying.clone()
        if self.top_channels is not None and self.top_channels < channels:
            spread = flat.float().var(dim=2).masked_fill(~varying, -1)
            keep = spread.topk(self.top_channels, dim=1).indices
            selected = torch.zeros_like(varying).scatter_(1, keep, True) & varying
        scores = torch.full((batch, channels, count), float("-inf"), device=images.device)
        pairs = selected.nonzero()  # (N, 2): image, channel
        from ..result import INTERPOLATION  # (result imports the methods)

        size = tuple(images.shape[2:])  # (H, W), (L,) or (D, H, W): the masks have the input's shape
        dims = tuple(range(2, 2 + len(size)))
        with torch.inference_mode():
            for part in _chunks(len(pairs), self.batch_size):
                image_ids, channel_ids = pairs[part, 0], pairs[part, 1]
                maps = activations[image_ids, channel_ids][:, None].float()
                if isinstance(probe.layout, Volume):  # a signal's or volume's map, flattened for the methods
                    maps = probe.layout.unflatten(maps)
                masks = F.interpolate(maps, size=size, mode=INTERPOLATION[len(size)], align_corners=False)
                lo = masks.amin(dim=dims, keepdim=True)
                hi = masks.amax(dim=dims, keepdim=True)
                masks = (masks - lo) / (hi - lo)
                scores[image_ids, channel_ids] = self.masked_scores(probe, images[image_ids], masks, image_ids)
            constant = ~varying
            if self.top_channels is None and constant.any():
                image_ids = torch.arange(batch, device=images.device)
                zero_scores = probe.scores(probe.model(torch.zeros_like(images)), image_ids).float()
                scores = torch.where(constant[..., None], zero_scores[:, None, :], scores)
        return torch.softmax(scores, dim=1).nan_to_num(0.0).transpose(1, 2)  # (B, K, C)

    def masked_scores(
        self, probe: Probe, images: torch.Tensor, masks: torch.Tensor, image_ids: torch.Tensor
    ) -> torch.Tensor:
        """(N, K) scores of the images under their masks ``H_c`` (N, 1, H, W) in [0, 1]: ``y(X * H_c)``."""
        return probe.scores(probe.model(images * masks.to(images.dtype)), image_ids).float()


@register
class SSCAM(ScoreCAM):
    """SS-CAM, Smoothed Score-CAM (Wang et al., 2020, arXiv:2006.14255): Score-CAM with each channel's
    score averaged over ``samples`` noisy copies of its mask.

    ``s_c = (1/n) sum_i y(X * (H_c + e_i))``, ``e_i ~ N(0, std^2)`` per pixel;  ``w = softmax_c(s)``;
    ``L = ReLU(sum_c w_c A_c)``. The n noise fields are drawn once per call from ``seed`` and shared by
    every channel and image (common random numbers: the channels are compared under the same noise, and a
    batch gives its images' maps one by one).
    """

    name = "sscam"

    def __init__(
        self,
        batch_size: int = 32,
        samples: int = 35,
        std: float = 2.0,
        seed: int | None = 0,
        top_channels: int | None = None,
    ) -> None:
        super().__init__(batch_size, top_channels)
        self.samples, self.std, self.seed = samples, std, seed
        self._noise: torch.Tensor | None = None

    def perturbation_weights(self, probe: Probe) -> torch.Tensor:
        """The noise of this call lives on a copy of the method made for the call, never on the instance
        itself: one instance may serve several threads (or models) at once."""
        generator = torch.Generator().manual_seed(self.seed) if self.seed is not None else None
        shape = (self.samples, 1, *probe.images.shape[2:])
        call = copy.copy(self)
        call._noise = (torch.randn(shape, generator=generator) * self.std).to(probe.images.device)
        return super(SSCAM, call).perturbation_weights(probe)

    def masked_scores(
        self, probe: Probe, images: torch.Tensor, masks: torch.Tensor, image_ids: torch.Tensor
    ) -> torch.Tensor:
        assert self._noise is not None
        total = None
        for noise in self._noise:
            scores = super().masked_scores(probe, images, masks + noise, image_ids)
            total = scores if total is None else total + scores
        assert total is not None
        return total / self.samples


@register
class ISCAM(ScoreCAM):
    """IS-CAM, Integrated Score-CAM (Naidu et al., 2020, arXiv:2010.03023): each channel's score
    integrated along the path from the baseline (a black image) to the masked image.

    ``s_c = (1/n) sum_{i=1..n} y(X * (i/n) H_c)``;  ``w = softmax_c(s)``;  ``L = ReLU(sum_c w_c A_c)``
    (the baseline's score is the same for every channel, so the softmax drops it). Deterministic.
    """

    name = "iscam"

    def __init__(self, batch_size: int = 32, samples: int = 10, top_channels: int | None = None) -> None:
        super().__init__(batch_size, top_channels)
        self.samples = samples

    def masked_scores(
        self, probe: Probe, images: torch.Tensor, masks: torch.Tensor, image_ids: torch.Tensor
    ) -> torch.Tensor:
        steps = [super(ISCAM, self).masked_scores(probe, images, masks * (i / self.samples), image_ids)
                 for i in range(1, self.samples + 1)]  # fmt: skip
        return torch.stack(steps).mean(dim=0)


@register
class AblationCAM(PerturbationMethod):
    """Ablation-CAM (Desai & Ramaswamy, WACV 2020).

    ``w_c = (y - y_c) / y`` with ``y_c`` the score when channel c of the layer is zeroed;
    ``L = ReLU(sum_c w_c A_c)``.

    Only the part of the network after the layer is re-run (see :mod:`gradcam.tail`), in chunks of
    ``batch_size`` ablated copies; where the model cannot be split, the whole model is re-run with the
    channel zeroed through a forward hook (slower, same result).
    """

    name = "ablationcam"
    any_dimensions = True  # channels zeroed on any grid

    def perturbation_weights(self, probe: Probe) -> torch.Tensor:
        from ..tail import Tail, TailUnavailable

        activations = probe.activations
        batch, channels = activations.shape[:2]
        try:
            tail: Any = Tail(probe.model, probe.layer_name, probe.images)
        except TailUnavailable as error:
            warnings.warn(f"Ablation-CAM re-runs the whole model per chunk: {error}", stacklevel=5)
            tail = _WholeModel(probe)
        ablated_scores = torch.empty(batch, channels, probe.original_scores.shape[1], device=activations.device)
        pairs = torch.cartesian_prod(torch.arange(batch), torch.arange(channels)).to(activations.device)
        with torch.inference_mode():
            for part in _chunks(len(pairs), self.batch_size):
                image_ids, channel_ids = pairs[part, 0], pairs[part, 1]
                ablated = activations[image_ids].clone()
                ablated[torch.arange(len(image_ids), device=ablated.device), channel_ids] = 0
                output = tail(probe.as_layer_output(ablated, image_ids), image_ids)
                ablated_scores[image_ids, channel_ids] = probe.scores(output, image_ids).float()
        original = probe.original_scores.float()[:, None, :]  # (B, 1, K)
        safe = torch.where(original != 0, original, torch.ones_like(original))
        weights = torch.where(original != 0, (original - ablated_scores) / safe, original - ablated_scores)
        return weights.transpose(1, 2)


class _WholeModel:
    """Fallback for :class:`AblationCAM`: the whole model with the layer's output replaced by a hook."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.layer = probe.model.get_submodule(probe.layer_name)

    def __call__(self, layer_output: torch.Tensor, image_ids: torch.Tensor) -> Any:
        handle = self.layer.register_forward_hook(lambda module, args, output: with_first(output, layer_output))
        try:
            return self.probe.model(self.probe.images[image_ids])
        finally:
            handle.remove()


@register
class SmoothGradCAMpp(PerturbationMethod):
    """Smooth Grad-CAM++ (Omeiza et al., 2019, arXiv:1908.01224): Grad-CAM++ whose gradient powers are
    averaged over ``samples`` noisy copies of the input ``X + N(0, std^2)`` (SmoothGrad).

    ``D_p = mean_i (G_i)^p``;  ``a = D_2 / (2 D_2 + sum_ab A_ab D_3)``;  ``w_c = sum_ij a_c,ij ReLU(D_1)``;
    ``L = ReLU(sum_c w_c A_c)`` on the clean image's activations ``A``. One forward and K backward passes
    (to the layer only) per noisy copy; the noise images come from ``seed`` and every image of a batch gets
    the same ones.
    """

    name = "smoothgradcam++"
    any_dimensions = True  # noise on any input; the powers summed over the (flattened) grid

    def __init__(self, batch_size: int = 32, samples: int = 4, std: float = 0.3, seed: int | None = 0) -> None:
        super().__init__(batch_size)
        self.samples, self.std, self.seed = samples, std, seed

    def perturbation_weights(self, probe: Probe) -> torch.Tensor:
        from ..hooks import capture

        layer = probe.model.get_submodule(probe.layer_name)
        generator = torch.Generator().manual_seed(self.seed) if self.seed is not None else None
        image_ids = torch.arange(len(probe.images), device=probe.images.device)
        activations = probe.activations  # (B, C, h, w), the clean image's
        powers: list[torch.Tensor] = []
        for _ in range(self.samples):
            # one noise image per sample, shared by the batch: a batch gives its images' maps one by one
            noise = torch.randn((1, *probe.images.shape[1:]), generator=generator).to(probe.images) * self.std
            with torch.enable_grad(), capture([(probe.layer_name, layer)], graph_from_layer=False) as record:
                noisy = (probe.images + noise).requires_grad_()
                scores = probe.scores(probe.model(noisy), image_ids)
                (output,) = record.tensors()
                gradients = [
                    torch.autograd.grad(scores[:, k].sum(), output, retain_graph=k < scores.shape[1] - 1)[0]
                    for k in range(scores.shape[1])
                ]
            laid = torch.stack([_laid(probe, g) for g in gradients], dim=1)  # (B, K, C, h, w)
            sample = torch.stack([laid, laid**2, laid**3])
            powers.append(sample)
        d1, d2, d3 = torch.stack(powers).mean(dim=0)
        total = activations.sum(dim=(2, 3))[:, None, :, None, None]  # Volume layouts arrive flattened to 2-D
        denominator = 2 * d2 + total * d3
        alpha = torch.where(denominator != 0, d2 / torch.where(denominator != 0, denominator, 1), 0)
        return (alpha * d1.clamp(min=0)).sum(dim=(3, 4))  # (B, K, C)


def _laid(probe: Probe, gradient: torch.Tensor) -> torch.Tensor:
    """A layer-output gradient on the spatial grid, float32 (B, C, h, w)."""
    laid = probe.layout.to_spatial(gradient) if probe.layout is not None else gradient
    return laid.detach().float()
