"""Pictures logged during training: one overlay per photo and step, and a strip per photo of how its map
changed over the logged epochs (one tile per epoch, the class and its probability under each).

Example:
    >>> strip = history_strip([(tile, "epoch 0", "cat 0.41"), (tile2, "epoch 1", "cat 0.87")])  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from .viz import _font, overlay, to_pil, with_legend

SHOWN_SIDE = 384  # the logged overlay's width: small inputs (28 px digits) are enlarged to be seen
TILE_SIDE = 160  # one epoch's tile in a history strip


def display_pixels(images: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None) -> torch.Tensor:
    """(B, C, H, W) model inputs -> (B, 3, H, W) uint8 to draw on: un-normalised with ``mean``/``std``
    when known, else each image stretched to its own range; one channel is repeated to three."""
    x = images.detach().float().cpu()
    if mean is not None and std is not None:
        shape = (1, len(mean), 1, 1)
        x = x * torch.tensor(std).view(shape) + torch.tensor(mean).view(shape)
    else:
        low = x.flatten(1).amin(1).view(-1, 1, 1, 1)
        high = x.flatten(1).amax(1).view(-1, 1, 1, 1)
        x = (x - low) / torch.where(high > low, high - low, torch.ones_like(high))
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] != 3:
        x = x[:, :3] if x.shape[1] > 3 else torch.cat([x, x[:, :1].expand(-1, 3 - x.shape[1], -1, -1)], 1)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def shown(picture: torch.Tensor, heat: torch.Tensor, side: int) -> torch.Tensor:
    """``overlay`` of ``heat`` (H, W) in [0, 1] on ``picture`` (3, H, W) uint8, both brought to ``side``
    pixels wide (the aspect ratio kept; smooth for the map, nearest for enlarged tiny inputs)."""
    height, width = picture.shape[1:]
    size = (max(1, round(height * side / width)), side)
    mode = "nearest" if width < side else "bilinear"
    photo = F.interpolate(picture[None].float(), size=size, mode=mode)[0].round().to(torch.uint8)
    heat = F.interpolate(heat[None, None].float(), size=size, mode="bicubic", align_corners=False)[0, 0]
    return overlay(photo, heat.clamp(0, 1))


def logged_picture(picture: torch.Tensor, heat: torch.Tensor, title: str) -> Image.Image:
    """One photo's overlay at one step, with its title and the colour scale under it."""
    return to_pil(with_legend(shown(picture, heat, SHOWN_SIDE), title))


def history_strip(tiles: Sequence[tuple[torch.Tensor, str, str]]) -> Image.Image:
    """One row of (overlay (3, h, w) uint8, first caption line, second line) tiles, left to right."""
    if not tiles:
        raise ValueError("history_strip: no logged epochs to draw")
    size = max(11, TILE_SIDE // 12)
    font = _font(size)
    caption = 2 * size + 10
    height = max(tile.shape[1] for tile, _, _ in tiles)
    strip = Image.new("RGB", (len(tiles) * (TILE_SIDE + 4) + 4, height + caption + 8), "white")
    draw = ImageDraw.Draw(strip)
    for column, (tile, first, second) in enumerate(tiles):
        left = 4 + column * (TILE_SIDE + 4)
        strip.paste(Image.fromarray(np.ascontiguousarray(tile.permute(1, 2, 0).numpy())), (left, 4))
        for row, text in enumerate((first, second)):
            draw.text((left + 2, height + 8 + row * (size + 3)), _fitted(draw, text, font), fill="black", font=font)
    return strip


def _fitted(draw: ImageDraw.ImageDraw, text: str, font: object) -> str:
    """``text`` shortened with an ellipsis to fit one tile's width."""
    while len(text) > 1 and draw.textlength(text, font=font) > TILE_SIDE - 4:  # type: ignore[arg-type]
        text = text[:-2] + "…"
    return text
