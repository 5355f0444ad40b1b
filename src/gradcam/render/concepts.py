"""The picture of Deep Feature Factorization's concepts on a photo: each place coloured by the concept that
holds it most, as strongly as that concept does, with a legend of what each concept votes for.

Example:
    >>> picture = concept_picture(photo, maps_on_photo, ["1  tabby 61%", "2  carton 40%"])  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from .viz import _font

# ten colours told apart by most colour-blind readers too (Okabe-Ito, then Tableau's extra hues)
PALETTE = [
    (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178),
    (213, 94, 0), (204, 121, 167), (148, 103, 189), (140, 86, 75), (127, 127, 127),
]  # fmt: skip


def colour_of(index: int) -> tuple[int, int, int]:
    """The colour of concept ``index`` (the palette repeats after ten concepts)."""
    return PALETTE[index % len(PALETTE)]


def concept_picture(
    photo: Image.Image, maps: torch.Tensor, legend: Sequence[str], opacity: float = 0.65
) -> Image.Image:
    """``photo`` with (k, H, W) concept ``maps`` in [0, 1] at its size laid over it: each pixel takes the
    colour of its strongest concept, blended in proportion to the square root of that concept's value there
    (a concept at a quarter of the photo's peak is still half-coloured; weak places show
    the photo, dimmed), and a legend below with one line per concept (``legend``)."""
    if maps.dim() != 3 or tuple(maps.shape[1:]) != (photo.height, photo.width):
        raise ValueError(f"concept maps {tuple(maps.shape)} do not fit the photo {photo.width} x {photo.height}")
    strength, winner = maps.float().max(dim=0)
    colours = torch.tensor([colour_of(j) for j in range(maps.shape[0])], dtype=torch.float32)
    tint = colours[winner].permute(2, 0, 1)  # (3, H, W)
    pixels = torch.from_numpy(np.asarray(photo.convert("RGB"), dtype=np.float32).copy()).permute(2, 0, 1)
    alpha = (strength.sqrt() * opacity)[None]  # the square root: a concept at half strength still shows
    blended = pixels * (1 - alpha) * (0.55 + 0.45 * strength[None]) + tint * alpha
    picture = Image.fromarray(blended.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy())
    return _with_concept_legend(picture, legend)


def photo_concepts(
    photo: Image.Image, maps: torch.Tensor, geometry: Any, tops: Sequence[Sequence[tuple[str, float]]],
    shares: Sequence[float],
) -> Image.Image:  # fmt: skip
    """:func:`concept_picture` of (k, h, w) ``maps`` in the model's input frame, carried onto ``photo`` by
    its ``geometry``; the legend names each concept's top classes (``tops``) and its share of the photo."""
    from ..io.images import to_original

    if (photo.height, photo.width) != tuple(geometry.original):
        photo = photo.resize((geometry.original[1], geometry.original[0]))
    on_photo, _ = to_original(maps, geometry)
    legend = [f"{j + 1}  {classes_text(top)}  ({float(shares[j]):.0%} of this photo)" for j, top in enumerate(tops)]
    return concept_picture(photo, on_photo, legend)


def classes_text(top: Sequence[tuple[str, float]]) -> str:
    """``tabby 61%, tiger cat 22%``; empty when the concept's votes could not be read."""
    return ", ".join(f"{name} {p:.0%}" for name, p in top)


def _with_concept_legend(picture: Image.Image, legend: Sequence[str]) -> Image.Image:
    size = max(12, min(24, round(picture.width / 40)))
    font = _font(size)
    line = size + 8
    footer = Image.new("RGB", (picture.width, line * len(legend) + 10), "white")
    draw = ImageDraw.Draw(footer)
    for j, text in enumerate(legend):
        top = 5 + j * line
        draw.rectangle((6, top + 2, 6 + size, top + 2 + size), fill=colour_of(j), outline=(60, 60, 60))
        draw.text((14 + size, top + 1), text, fill="black", font=font)
    combined = Image.new("RGB", (picture.width, picture.height + footer.height), "white")
    combined.paste(picture, (0, 0))
    combined.paste(footer, (0, picture.height))
    return combined
