"""Pictures of a detector's per-box maps: one picture per box (its map over the photo, its box, class and
confidence) and one of every box at once (each box's map drawn inside and around its own box).

Example:
    >>> picture = box_picture(photo, heat, (40, 30, 200, 180), "cat 0.87")        # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from .viz import _font, colorize

BOX_COLOURS = ((255, 255, 255), (255, 215, 0), (0, 255, 127), (255, 105, 180), (0, 191, 255), (255, 140, 0))
AROUND = 0.25  # the all-boxes picture shows each map within its box widened by this share of its size


def box_picture(
    photo: Image.Image, heat: torch.Tensor, box: Sequence[float], caption: str, alpha: float = 0.5
) -> Image.Image:
    """``heat`` (H, W) in [0, 1] on the photo's pixels laid over it, with ``box`` (x1, y1, x2, y2) and its
    ``caption`` ("cat 0.87") drawn."""
    picture = _blend(photo, heat, torch.ones_like(heat), alpha)
    _draw_box(picture, box, caption, BOX_COLOURS[0])
    return picture


def boxes_picture(
    photo: Image.Image,
    heats: torch.Tensor,
    boxes: Sequence[Sequence[float]],
    captions: Sequence[str],
    alpha: float = 0.5,
) -> Image.Image:
    """Every box's map (K, H, W) within its own widened box (the strongest where boxes overlap), the
    photo elsewhere, and every box with its caption."""
    height, width = heats.shape[1:]
    combined, weight = torch.zeros(height, width), torch.zeros(height, width)
    for heat, box in zip(heats, boxes, strict=True):
        x1, y1, x2, y2 = box
        grow_x, grow_y = AROUND * (x2 - x1), AROUND * (y2 - y1)
        left, top = max(0, int(x1 - grow_x)), max(0, int(y1 - grow_y))
        right, bottom = min(width, int(np.ceil(x2 + grow_x))), min(height, int(np.ceil(y2 + grow_y)))
        inside = torch.zeros(height, width)
        inside[top:bottom, left:right] = 1
        combined = torch.maximum(combined, heat.float() * inside)
        weight = torch.maximum(weight, inside)
    picture = _blend(photo, combined, weight, alpha)
    for index, (box, caption) in enumerate(zip(boxes, captions, strict=True)):
        _draw_box(picture, box, caption, BOX_COLOURS[index % len(BOX_COLOURS)])
    return picture


def _blend(photo: Image.Image, heat: torch.Tensor, weight: torch.Tensor, alpha: float) -> Image.Image:
    pixels = torch.from_numpy(np.asarray(photo.convert("RGB")).copy()).permute(2, 0, 1).float() / 255
    colour = colorize(heat.float().clamp(0, 1))
    share = alpha * weight.float()
    mixed = (1 - share) * pixels + share * colour
    array = (mixed * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(array))


def _draw_box(picture: Image.Image, box: Sequence[float], caption: str, colour: tuple[int, int, int]) -> None:
    draw = ImageDraw.Draw(picture)
    line = max(2, round(min(picture.size) / 200))
    x1, y1, x2, y2 = (float(v) for v in box)
    draw.rectangle((x1, y1, x2, y2), outline=(0, 0, 0), width=line + 2)
    draw.rectangle((x1, y1, x2, y2), outline=colour, width=line)
    font = _font(max(11, min(28, round(min(picture.size) / 30))))
    left, top, right, bottom = (int(v) for v in draw.textbbox((0, 0), caption, font=font))
    text_height, pad = bottom - top, 3
    y = y1 - text_height - 2 * pad if y1 - text_height - 2 * pad >= 0 else y1  # above the box, else inside it
    x = min(max(0.0, x1), max(0.0, picture.width - (right - left) - 2 * pad))
    draw.rectangle((x, y, x + right - left + 2 * pad, y + text_height + 2 * pad), fill=(0, 0, 0))
    draw.text((x + pad - left, y + pad - top), caption, fill=colour, font=font)
