"""A video's contact sheet: sampled overlays in a grid, each with its frame and time, a title and the scale.

Example:
    >>> sheet = contact_sheet([(0, picture), (30, picture)], fps=30, title="gradcam for espresso")  # doctest: +SKIP
"""

from __future__ import annotations

import math

from PIL import Image, ImageDraw

from .viz import _font, colour_bar, to_pil


def contact_sheet(
    tiles: list[tuple[int, Image.Image]], fps: float, title: str, colormap: str = "jet", columns: int = 4
) -> Image.Image:
    """The sampled overlays in a grid, each captioned with its frame and time, with a title and the
    colour scale."""
    if not tiles:
        raise ValueError("no frames to show")
    width = max(t.width for _, t in tiles)
    height = max(t.height for _, t in tiles)
    rows = math.ceil(len(tiles) / columns)
    caption, header = 18, 40
    sheet = Image.new("RGB", (columns * width, header + rows * (height + caption)), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((6, 4), title, fill="black", font=_font(16))
    bar = to_pil(colour_bar(min(200, columns * width // 3), 8, colormap))
    sheet.paste(bar, (6, 26))
    draw.text((bar.width + 12, 22), "low to high heat (each frame scaled to its own maximum)", fill="black",
              font=_font(11))  # fmt: skip
    for i, (index, tile) in enumerate(tiles):
        x, y = (i % columns) * width, header + (i // columns) * (height + caption)
        draw.text((x + 4, y + 2), f"frame {index} ({index / fps:.1f} s)", fill="black", font=_font(12))
        sheet.paste(tile, (x, y + caption))
    return sheet
