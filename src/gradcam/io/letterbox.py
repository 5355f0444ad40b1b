"""How a photo becomes a detector's input and how its maps and boxes come back: the photo resized with its
aspect ratio kept, then padded (Ultralytics' letterbox) or not (Hugging Face's DETR processors, which
normalise too). :class:`Letterbox` records the geometry both ways.

Example:
    >>> x, box = letterbox(photo, 640)                                        # doctest: +SKIP
    >>> box.box_to_photo((0, 11, 640, 437)), box.map_to_photo(maps).shape
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image

from .images import image_tensor

PAD_VALUE = 114  # Ultralytics' letterbox grey


@dataclass(frozen=True)
class Letterbox:
    """How a photo (``original`` height, width) became the letterboxed input: scaled by ``scale`` to
    ``inner`` (height, width), placed at ``offset`` (top, left) in an input of ``size`` (height, width).
    ``scale_x`` where the width was scaled otherwise (a photo squashed to a fixed size)."""

    original: tuple[int, int]
    scale: float
    inner: tuple[int, int]
    offset: tuple[int, int]
    size: tuple[int, int]
    scale_x: float | None = None

    def inside(self, maps: torch.Tensor) -> torch.Tensor:
        """(K, H, W) maps on the input -> (K, h, w) on the photo's area of it (the padding cut away), at the
        model's resolution."""
        top, left = self.offset
        return maps[:, top : top + self.inner[0], left : left + self.inner[1]]

    def map_to_photo(self, maps: torch.Tensor) -> torch.Tensor:
        """(K, H, W) maps on the input -> (K, h, w) on the photo (the padding cut away, smooth resize)."""
        inner = self.inside(maps)
        return F.interpolate(inner[None].float(), size=self.original, mode="bilinear", align_corners=False)[0]

    def box_to_photo(self, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """(x1, y1, x2, y2) on the input -> on the photo, clipped to it."""
        top, left = self.offset
        height, width = self.original
        scale_x = self.scale if self.scale_x is None else self.scale_x
        x1, y1, x2, y2 = ((v - left) / scale_x if i % 2 == 0 else (v - top) / self.scale for i, v in enumerate(box))
        return (min(max(x1, 0), width), min(max(y1, 0), height), min(max(x2, 0), width), min(max(y2, 0), height))


def letterbox(photo: Image.Image, size: int = 640, stride: int = 32) -> tuple[torch.Tensor, Letterbox]:
    """The photo as Ultralytics' predictor feeds it: the longer side to ``size`` (aspect ratio kept),
    padded with grey 114 on both sides to a multiple of ``stride``; (3, H, W) float in [0, 1], RGB.
    Resized with PIL's bilinear filter (Ultralytics uses OpenCV's: pixel values differ slightly)."""
    width, height = photo.size
    scale = min(size / height, size / width)
    inner = (max(1, round(height * scale)), max(1, round(width * scale)))
    padded = tuple(-(-side // stride) * stride for side in inner)
    top, left = (padded[0] - inner[0]) // 2, (padded[1] - inner[1]) // 2
    resized = photo.convert("RGB").resize((inner[1], inner[0]), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (padded[1], padded[0]), (PAD_VALUE,) * 3)
    canvas.paste(resized, (left, top))
    pixels = image_tensor(canvas).float() / 255.0
    return pixels, Letterbox((height, width), scale, inner, (top, left), (padded[0], padded[1]))


def shorter_side(
    photo: Image.Image,
    shortest: int,
    longest: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> tuple[torch.Tensor, Letterbox]:
    """The photo as Hugging Face's DETR-style processors feed it: the shorter side to ``shortest`` unless the
    longer would pass ``longest`` (then the longer to ``longest``), bilinear, normalised by ``mean``/``std``;
    no padding (a batch of one needs none)."""
    width, height = photo.size
    scale = min(shortest / min(height, width), longest / max(height, width))
    inner = (max(1, round(height * scale)), max(1, round(width * scale)))
    resized = photo.convert("RGB").resize((inner[1], inner[0]), Image.Resampling.BILINEAR)
    return _normalised(resized, mean, std), Letterbox((height, width), scale, inner, (0, 0), inner)


def squashed(
    photo: Image.Image, size: tuple[int, int], mean: Sequence[float], std: Sequence[float]
) -> tuple[torch.Tensor, Letterbox]:
    """The photo resized to ``size`` (height, width) whatever its aspect ratio, bilinear, normalised by
    ``mean``/``std``: as SegFormer's and BEiT's Hugging Face processors feed a segmentation model."""
    width, height = photo.size
    resized = photo.convert("RGB").resize((size[1], size[0]), Image.Resampling.BILINEAR)
    frame = Letterbox((height, width), size[0] / height, size, (0, 0), size, scale_x=size[1] / width)
    return _normalised(resized, mean, std), frame


def padded_square(
    photo: Image.Image, side: int, mean: Sequence[float], std: Sequence[float]
) -> tuple[torch.Tensor, Letterbox]:
    """The photo as OWLv2's Hugging Face processor feeds it: padded at the bottom and right to a square with
    black (0 before normalising), then resized to ``side`` x ``side``; here the photo's longer side is resized
    to ``side`` and placed at the top left of a black square (the same geometry), then normalised."""
    width, height = photo.size
    scale = side / max(height, width)
    inner = (max(1, round(height * scale)), max(1, round(width * scale)))
    canvas = Image.new("RGB", (side, side), (0, 0, 0))
    canvas.paste(photo.convert("RGB").resize((inner[1], inner[0]), Image.Resampling.BILINEAR), (0, 0))
    return _normalised(canvas, mean, std), Letterbox((height, width), scale, inner, (0, 0), (side, side))


def _normalised(picture: Image.Image, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(3, H, W) float: the RGB picture scaled to [0, 1], then normalised by ``mean``/``std``."""
    pixels = image_tensor(picture).float() / 255.0
    return (pixels - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
