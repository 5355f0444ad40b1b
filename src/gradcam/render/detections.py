"""Pictures of a detector's per-box maps: one picture per box (its map over the photo, its box, class and
confidence) and one of every box at once (each box's map drawn inside and around its own box). A
segmentation model's class regions are drawn by their outlines instead of boxes, and on the picture of every
class each class's map fills its own region.

Example:
    >>> picture = box_picture(photo, heat, (40, 30, 200, 180), "cat 0.87")        # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from .viz import _font, colorize

BOX_COLOURS = ((255, 255, 255), (255, 215, 0), (0, 255, 127), (255, 105, 180), (0, 191, 255), (255, 140, 0))
AROUND = 0.25  # the all-boxes picture shows each map within its box widened by this share of its size


def box_picture(
    photo: Image.Image,
    heat: torch.Tensor,
    box: Sequence[float],
    caption: str,
    alpha: float = 0.5,
    region: torch.Tensor | None = None,
    frame: bool = True,
) -> Image.Image:
    """``heat`` (H, W) in [0, 1] on the photo's pixels laid over it, with ``box`` (x1, y1, x2, y2) and its
    ``caption`` ("cat 0.87") drawn; a ``region`` (H, W) bool is outlined too (an instance's mask), and
    ``frame=False`` leaves the box out (a segmentation class: its region is what it is)."""
    shown = torch.ones_like(heat) if bool(heat.any()) else torch.zeros_like(heat)  # an empty map: the photo
    picture = _blend(photo, heat, shown, alpha)
    if region is not None:
        _draw_outline(picture, region, BOX_COLOURS[0])
    _draw_box(picture, box, caption, BOX_COLOURS[0], frame=frame)
    return picture


def boxes_picture(
    photo: Image.Image,
    heats: torch.Tensor,
    boxes: Sequence[Sequence[float]],
    captions: Sequence[str],
    alpha: float = 0.5,
    regions: Sequence[torch.Tensor] | None = None,
    fill_regions: bool = False,
) -> Image.Image:
    """Every box's map (K, H, W) within its own widened box (the strongest where boxes overlap), the
    photo elsewhere, and every box with its caption; ``regions`` (K masks (H, W)) are outlined, and with
    ``fill_regions`` (a segmentation model's classes) each map is drawn within its own region, without boxes."""
    height, width = heats.shape[1:]
    filled = regions if regions is not None and fill_regions else None
    combined, weight = torch.zeros(height, width), torch.zeros(height, width)
    for k, (heat, box) in enumerate(zip(heats, boxes, strict=True)):
        if not bool(heat.any()):  # an empty map is not drawn (its caption says so): the photo shows there
            continue
        if filled is not None:
            inside = filled[k].float()
        else:
            x1, y1, x2, y2 = box
            grow_x, grow_y = AROUND * (x2 - x1), AROUND * (y2 - y1)
            left, top = max(0, int(x1 - grow_x)), max(0, int(y1 - grow_y))
            right, bottom = min(width, int(np.ceil(x2 + grow_x))), min(height, int(np.ceil(y2 + grow_y)))
            inside = torch.zeros(height, width)
            inside[top:bottom, left:right] = 1
        combined = torch.maximum(combined, heat.float() * inside)
        weight = torch.maximum(weight, inside)
    picture = _blend(photo, combined, weight, alpha)
    taken: list[tuple[float, float, float, float]] = []
    for index, (box, caption) in enumerate(zip(boxes, captions, strict=True)):
        colour = BOX_COLOURS[index % len(BOX_COLOURS)]
        if regions is not None:
            _draw_outline(picture, regions[index], colour)
        _draw_box(picture, box, caption, colour, frame=filled is None, taken=taken)
    return picture


def _blend(photo: Image.Image, heat: torch.Tensor, weight: torch.Tensor, alpha: float) -> Image.Image:
    pixels = torch.from_numpy(np.asarray(photo.convert("RGB")).copy()).permute(2, 0, 1).float() / 255
    colour = colorize(heat.float().clamp(0, 1))
    share = alpha * weight.float()
    mixed = (1 - share) * pixels + share * colour
    array = (mixed * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(array))


def _draw_outline(picture: Image.Image, region: torch.Tensor, colour: tuple[int, int, int]) -> None:
    """The border of ``region`` (H, W) bool on the picture: ``colour`` inside a black edge, as boxes are."""
    line = max(2, round(min(picture.size) / 200))
    inside = region.bool()[None, None].float()
    outside = 1 - inside
    near_line = F.max_pool2d(outside, 2 * line + 1, stride=1, padding=line)[0, 0].bool() & region.bool()
    near_edge = F.max_pool2d(outside, 2 * line + 3, stride=1, padding=line + 1)[0, 0].bool() & region.bool()
    pixels = np.array(picture)
    pixels[(near_edge & ~near_line).numpy()] = (0, 0, 0)
    pixels[near_line.numpy()] = colour
    picture.paste(Image.fromarray(pixels))


def _draw_box(
    picture: Image.Image,
    box: Sequence[float],
    caption: str,
    colour: tuple[int, int, int],
    frame: bool = True,
    taken: list[tuple[float, float, float, float]] | None = None,
) -> None:
    """``box`` with its ``caption`` above it (inside it at the top edge); ``frame=False``: the caption only.
    Captions already drawn (``taken``, their rectangles) are not covered: this one moves down below them."""
    draw = ImageDraw.Draw(picture)
    line = max(2, round(min(picture.size) / 200))
    x1, y1, x2, y2 = (float(v) for v in box)
    if frame:
        draw.rectangle((x1, y1, x2, y2), outline=(0, 0, 0), width=line + 2)
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=line)
    font = _font(max(11, min(28, round(min(picture.size) / 30))))
    pad = 3
    text = _wrapped(draw, caption, font, picture.width - 2 * pad)
    left, top, right, bottom = (int(v) for v in draw.multiline_textbbox((0, 0), text, font=font))
    text_height = bottom - top
    y = y1 - text_height - 2 * pad if y1 - text_height - 2 * pad >= 0 else y1  # above the box, else inside it
    x = min(max(0.0, x1), max(0.0, picture.width - (right - left) - 2 * pad))
    label_width, label_height = right - left + 2 * pad, text_height + 2 * pad
    for other in sorted(taken or [], key=lambda r: r[1]):
        if x < other[2] and other[0] < x + label_width and y < other[3] and other[1] < y + label_height:
            y = other[3] + 1
    if taken is not None:
        taken.append((x, y, x + label_width, y + label_height))
    draw.rectangle((x, y, x + right - left + 2 * pad, y + text_height + 2 * pad), fill=(0, 0, 0))
    draw.multiline_text((x + pad - left, y + pad - top), text, fill=colour, font=font)


def _wrapped(draw: ImageDraw.ImageDraw, caption: str, font: Any, width: float) -> str:
    """``caption`` broken after its commas into lines no wider than ``width`` where it would not fit on one."""
    lines: list[str] = []
    for part in caption.split(", "):
        joined = f"{lines[-1]}, {part}" if lines else part
        if lines and draw.textlength(joined, font=font) <= width:
            lines[-1] = joined
        else:
            if lines:
                lines[-1] += ","
            lines.append(part)
    return "\n".join(lines)
