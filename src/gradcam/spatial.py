"""Turn a layer's output into a (B, C, h, w) map: token sequences of vision transformers (with class,
distillation or register tokens in front) and channels-last outputs (Swin) are laid back on their grid.

Example:
    >>> layout = infer_layout(torch.zeros(2, 197, 192), (224, 224))   # ViT-Tiny: 1 class token, 14 x 14
    >>> layout
    TokenGrid(prefix=1, height=14, width=14)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


class LayoutError(ValueError):
    """The layer's output cannot be laid on a grid without help."""


@dataclass(frozen=True)
class Spatial:
    """Already (B, C, h, w)."""

    def to_spatial(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def from_spatial(self, spatial: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
        return spatial


@dataclass(frozen=True)
class ChannelsLast:
    """(B, h, w, C), as Swin transformers return."""

    def to_spatial(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.permute(0, 3, 1, 2)

    def from_spatial(self, spatial: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
        return spatial.permute(0, 2, 3, 1)


@dataclass(frozen=True)
class TokenGrid:
    """(B, prefix + h * w + suffix, C): ``prefix`` class/distillation/register tokens, the patch tokens row by
    row, then ``suffix`` tokens (YOLOS's detection tokens)."""

    prefix: int
    height: int
    width: int
    suffix: int = 0

    def to_spatial(self, tensor: torch.Tensor) -> torch.Tensor:
        batch, _, channels = tensor.shape
        patches = tensor[:, self.prefix : self.prefix + self.height * self.width]
        return patches.reshape(batch, self.height, self.width, channels).permute(0, 3, 1, 2)

    def from_spatial(self, spatial: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
        batch, channels = spatial.shape[:2]
        patches = spatial.permute(0, 2, 3, 1).reshape(batch, self.height * self.width, channels)
        prefix = original[:, : self.prefix].expand(batch, -1, -1) if self.prefix else patches[:, :0]
        end = self.prefix + self.height * self.width
        suffix = original[:, end:].expand(batch, -1, -1) if self.suffix else patches[:, :0]
        return torch.cat([prefix.to(patches.dtype), patches, suffix.to(patches.dtype)], dim=1)


@dataclass(frozen=True)
class Volume:
    """(B, C, *s) maps of signals (``s = (l,)``), volumes and clips (``s = (d, h, w)``). Methods see them as
    (B, C, prod(s[:-1]), s[-1]): every CAM formula averages, sums or multiplies over positions, and those
    are the same on the flattened grid; the result is laid back on ``s``."""

    shape: tuple[int, ...]

    def to_spatial(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.reshape(*tensor.shape[:2], -1, self.shape[-1])

    def from_spatial(self, spatial: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
        return spatial.reshape(*spatial.shape[:2], *self.shape)

    def unflatten(self, tensor: torch.Tensor) -> torch.Tensor:
        """A (..., prod(s[:-1]), s[-1]) tensor back on (..., *s)."""
        return tensor.reshape(*tensor.shape[:-2], *self.shape)


@dataclass(frozen=True)
class VolumeChannelsLast(Volume):
    """(B, *s, C) outputs of 3-D transformers that keep channels last (torchvision's ``swin3d_t``: (B, t, h,
    w, C)); seen by the methods as :class:`Volume` sees (B, C, *s)."""

    def to_spatial(self, tensor: torch.Tensor) -> torch.Tensor:
        return super().to_spatial(tensor.movedim(-1, 1))

    def from_spatial(self, spatial: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
        return super().from_spatial(spatial, original).movedim(1, -1)


@dataclass(frozen=True)
class VolumeTokens(Volume):
    """(B, prefix + t * h * w, C) token sequences of video transformers (torchvision's ``mvit_v1_b``: a class
    token, then the patch tokens of a (t, h, w) grid, time first); seen by the methods as :class:`Volume`
    sees (B, C, t, h, w)."""

    prefix: int = 1

    def to_spatial(self, tensor: torch.Tensor) -> torch.Tensor:
        patches = tensor[:, self.prefix :]
        return super().to_spatial(patches.transpose(1, 2))

    def from_spatial(self, spatial: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
        patches = super().from_spatial(spatial, original).flatten(2).transpose(1, 2)
        prefix = original[:, : self.prefix].expand(patches.shape[0], -1, -1)
        return torch.cat([prefix.to(patches.dtype), patches], dim=1)


def _divisors(number: int) -> list[int]:
    small = [d for d in range(1, int(number**0.5) + 1) if number % d == 0]
    return sorted(set(small + [number // d for d in small])) if number > 0 else []


def token_volume(tokens: int, input_size: tuple[int, ...], prefix_tokens: int | None = None) -> VolumeTokens | None:
    """The (prefix, t, h, w) that lay ``tokens`` on a grid of a (T, H, W) input: h : w as H : W, each side no
    larger than the input's, the longest t on ties (video transformers stride time least: 16 frames ->
    t = 8); the smallest prefix that gives such a grid, or ``prefix_tokens``."""
    frames, height, width = input_size
    for prefix in [prefix_tokens] if prefix_tokens is not None else range(0, 5):
        count = tokens - prefix
        grids = [(count // (h * w), h, w) for h in _divisors(count) if h <= height
                 for w in _divisors(count // h) if w <= width and _close(h / w, height / width)
                 and count // (h * w) <= frames]  # fmt: skip
        if grids:
            t, h, w = max(grids)
            return VolumeTokens((t, h, w), prefix)
    return None


Layout = Spatial | ChannelsLast | TokenGrid | Volume


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 0.25 * b


def infer_layout(
    output: torch.Tensor,
    input_size: tuple[int, ...],
    prefix_tokens: int | None = None,
    grid: tuple[int, int] | None = None,
    name: str = "layer",
) -> Layout:
    """Guess how ``output`` lies on the image: NCHW, NHWC or a token sequence with a prefix.

    The patch grid follows the input's aspect ratio; the prefix is the count that leaves the grid closest
    to it, the smallest on ties (1 for ViT/DeiT, 2 for distilled DeiT, 5 with four register tokens).
    ``prefix_tokens`` and ``grid`` override the guesses.
    """
    if len(input_size) != 2:  # a signal (B, C, L), a volume or a clip (B, C, D, H, W)
        if output.dim() == 3 and len(input_size) == 3:  # tokens of a video transformer
            laid = token_volume(output.shape[1], input_size, prefix_tokens)
            if laid is not None:
                return laid
        if output.dim() != 2 + len(input_size):
            raise LayoutError(
                f"{name}: output of shape {tuple(output.shape)} is not a (B, C, {', '.join('.' * len(input_size))}) "
                f"map of the input's {len(input_size)} dimension(s); choose a convolutional layer with layer="
            )
        fits = [
            all(o <= i for o, i in zip(shape, input_size, strict=True))
            for shape in (output.shape[2:], output.shape[1:-1])
        ]
        if fits == [False, True]:  # (B, *s, C): channels last, the grid no larger than the input
            return VolumeChannelsLast(tuple(output.shape[1:-1]))
        return Volume(tuple(output.shape[2:]))
    aspect = input_size[0] / input_size[1]
    hint = "; set the token grid with grid=(h, w) and prefix_tokens= (CLI: --token-grid HxW --prefix-tokens N)"  # noqa: E501
    if output.dim() == 4:
        if grid is not None:
            return ChannelsLast() if tuple(output.shape[1:3]) == tuple(grid) else Spatial()
        nchw = _close(output.shape[2] / output.shape[3], aspect)
        nhwc = _close(output.shape[1] / output.shape[2], aspect) and output.shape[3] > output.shape[2]
        return ChannelsLast() if nhwc and not nchw else Spatial()
    if output.dim() != 3:
        raise LayoutError(f"{name}: output of shape {tuple(output.shape)} is not a map or a token sequence{hint}")
    tokens = output.shape[1]
    prefixes = [prefix_tokens] if prefix_tokens is not None else range(0, min(tokens, 17))
    best: tuple[float, TokenGrid] | None = None
    for prefix in prefixes:
        count = tokens - prefix
        if grid is not None:
            if grid[0] * grid[1] == count:
                return TokenGrid(prefix, *grid)
            if prefix_tokens is not None and count > grid[0] * grid[1]:  # both given: the rest trails the patches
                return TokenGrid(prefix, *grid, suffix=count - grid[0] * grid[1])
            continue
        height = max(1, round(math.sqrt(count * aspect)))
        for h in (height, height - 1, height + 1):
            if h > 0 and count % h == 0:
                error = abs(h / (count // h) - aspect) / aspect
                if error <= 0.15 and (best is None or error < best[0]):
                    best = (error, TokenGrid(prefix, h, count // h))
    if best is not None:
        return best[1]
    raise LayoutError(f"{name}: cannot lay {tokens} tokens on a grid for a {input_size[0]}x{input_size[1]} input{hint}")
