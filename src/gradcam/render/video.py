"""A video's contact sheet: sampled overlays in a grid, each with its frame and time, a title and the scale.

Example:
    >>> sheet = contact_sheet([(0, picture, "espresso p = 0.95")], fps=30, title="gradcam")  # doctest: +SKIP
"""

from __future__ import annotations

import math

from PIL import Image, ImageDraw

from .viz import _font, colour_bar, text_tile, to_pil


def with_frame_caption(picture: Image.Image, text: str) -> Image.Image:
    """``picture`` (a video frame's overlay) with ``text`` (its map's class and probability) in a dark tile
    at its top left, sized to the frame; unchanged for an empty ``text``."""
    if not text:
        return picture
    tag = text_tile(text, max(10, round(min(picture.size) / 22)))
    if tag.shape[2] <= picture.width and tag.shape[1] <= picture.height:
        picture.paste(to_pil(tag), (0, 0))
    return picture


def contact_sheet(
    tiles: list[tuple[int, Image.Image, str]], fps: float, title: str, colormap: str = "jet", columns: int = 4
) -> Image.Image:
    """The sampled overlays in a grid, each captioned with its frame, its time and what its map is of (its
    class and probability), with a title and the colour scale."""
    if not tiles:
        raise ValueError("no frames to show")
    width = max(t.width for _, t, _ in tiles)
    height = max(t.height for _, t, _ in tiles)
    rows = math.ceil(len(tiles) / columns)
    caption, header = (32 if any(said for _, _, said in tiles) else 18), 40
    sheet = Image.new("RGB", (columns * width, header + rows * (height + caption)), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((6, 4), title, fill="black", font=_font(16))
    bar = to_pil(colour_bar(min(200, columns * width // 3), 8, colormap))
    sheet.paste(bar, (6, 26))
    draw.text((bar.width + 12, 22), "low to high heat (each frame scaled to its own maximum)", fill="black",
              font=_font(11))  # fmt: skip
    for i, (index, tile, said) in enumerate(tiles):
        x, y = (i % columns) * width, header + (i // columns) * (height + caption)
        draw.text((x + 4, y + 2), f"frame {index} ({index / fps:.1f} s)", fill="black", font=_font(12))
        if said:  # what this frame's map is of, on a line of its own (a frame may be narrow)
            draw.text((x + 4, y + 16), said, fill="black", font=_font(12))
        sheet.paste(tile, (x, y + caption))
    return sheet
