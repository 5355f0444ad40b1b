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

from .viz import _font, enlarged_for_drawing

# ten colours told apart by most colour-blind readers too (Okabe-Ito, then Tableau's extra hues)
PALETTE = [
    (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178),
    (213, 94, 0), (204, 121, 167), (148, 103, 189), (140, 86, 75), (127, 127, 127),
]  # fmt: skip


def colour_of(index: int) -> tuple[int, int, int]:
    """The colour of concept ``index`` (the palette repeats after ten concepts)."""
    return PALETTE[index % len(PALETTE)]


def concept_picture(photo: Image.Image, maps: torch.Tensor, legend: Sequence[str], opacity: float = 0.7) -> Image.Image:
    """``photo`` with (k, H, W) concept ``maps`` in [0, 1] at its size laid over it: the photo in grey (so
    that a concept's colour shows on any photo: light blue on a white cup did not), each pixel tinted with
    the colour of its strongest concept in proportion to the square root of that concept's value there (a
    concept at a quarter of the photo's peak is still half-coloured; weak places show the photo, dimmed), the
    borders between concepts drawn in white, and a legend below with one line per concept (``legend``) and
    what its percentage is."""
    if maps.dim() != 3 or tuple(maps.shape[1:]) != (photo.height, photo.width):
        raise ValueError(f"concept maps {tuple(maps.shape)} do not fit the photo {photo.width} x {photo.height}")
    strength, winner = maps.float().max(dim=0)
    colours = torch.tensor([colour_of(j) for j in range(maps.shape[0])], dtype=torch.float32)
    tint = colours[winner].permute(2, 0, 1)  # (3, H, W)
    grey = torch.from_numpy(np.asarray(photo.convert("L"), dtype=np.float32).copy())[None].expand(3, -1, -1)
    alpha = (strength.sqrt() * opacity)[None]  # the square root: a concept at half strength still shows
    blended = grey * (1 - alpha) * (0.45 + 0.45 * strength[None]) + tint * alpha
    edge = torch.zeros_like(winner, dtype=torch.bool)  # where the strongest concept changes: its border
    edge[1:, :] |= winner[1:, :] != winner[:-1, :]
    edge[:, 1:] |= winner[:, 1:] != winner[:, :-1]
    blended = torch.where(edge[None] & (strength[None] > 0.1), torch.full_like(blended, 255.0), blended)
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
    photo, geometry = enlarged_for_drawing(photo, geometry)  # a 32 px photo: its legend needs the width
    on_photo, _ = to_original(maps, geometry)
    legend = [f"{j + 1}  {classes_text(top)}  ({float(shares[j]):.0%} of this photo)" for j, top in enumerate(tops)]
    legend.append(SHARE_NOTE)
    return concept_picture(photo, on_photo, legend)


SHARE_NOTE = "% = the concept's part of this photo's activations (all concepts: 100%)"


def classes_text(top: Sequence[tuple[str, float]]) -> str:
    """``tabby 61%, tiger cat 22%``; empty when the concept's votes could not be read."""
    return ", ".join(f"{name} {p:.0%}" for name, p in top)


def _with_concept_legend(picture: Image.Image, legend: Sequence[str]) -> Image.Image:
    """The legend below: a swatch and a line per concept; a last line without a swatch when it is the
    :data:`SHARE_NOTE`."""
    size = max(12, min(24, round(picture.width / 40)))
    font, note_font = _font(size), _font(max(10, size * 3 // 4))
    line = size + 8
    footer = Image.new("RGB", (picture.width, line * len(legend) + 10), "white")
    draw = ImageDraw.Draw(footer)
    for j, text in enumerate(legend):
        top = 5 + j * line
        if text == SHARE_NOTE:
            draw.text((6, top + 3), text, fill=(90, 90, 90), font=note_font)
            continue
        draw.rectangle((6, top + 2, 6 + size, top + 2 + size), fill=colour_of(j), outline=(60, 60, 60))
        draw.text((14 + size, top + 1), text, fill="black", font=font)
    combined = Image.new("RGB", (picture.width, picture.height + footer.height), "white")
    combined.paste(picture, (0, 0))
    combined.paste(footer, (0, picture.height))
    return combined
