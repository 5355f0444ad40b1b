"""Pictures: colormaps, overlays, the per-feature-map grid. Torch in, uint8 tensors or PIL images out.

Example:
    >>> picture = overlay(photo, heatmap, alpha=0.5, colormap="jet")   # doctest: +SKIP
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable
from dataclasses import replace
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from ..io.images import STRIP_PIXELS, Geometry


@lru_cache(maxsize=16)
def colormap_table(name: str) -> torch.Tensor:
    """(256, 3) float lookup table of a matplotlib colormap; an unknown name lists close ones."""
    import matplotlib

    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, list(matplotlib.colormaps), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown colormap {name!r}{hint}") from None
    return torch.tensor(cmap(torch.linspace(0, 1, 256).numpy())[:, :3], dtype=torch.float32)


def colorize(heatmap: torch.Tensor, colormap: str = "jet") -> torch.Tensor:
    """(H, W) values in [0, 1] -> (3, H, W) float colours in [0, 1]."""
    index = (heatmap.clamp(0, 1) * 255).round().long()
    return colormap_table(colormap).to(heatmap.device)[index].permute(2, 0, 1)


OUTSIDE_BRIGHTNESS = 0.45  # what the model did not see is dimmed to this, never left as a plain photo
TINTS = ("flat", "heat")


def overlay(
    photo: torch.Tensor,
    heatmap: torch.Tensor,
    alpha: float = 0.5,
    colormap: str = "jet",
    coverage: torch.Tensor | None = None,
    tint: str = "flat",
) -> torch.Tensor:
    """Lay ``heatmap`` (H, W) in [0, 1] over ``photo`` (3, H, W) uint8: ``(1 - a) * photo + a * colour``.

    ``tint="flat"``: ``a = alpha`` everywhere; ``"heat"``: ``a = alpha * heat``, so low heat barely tints.
    Where ``coverage`` is 0 (the margins a centre crop cut away) the photo is dimmed to
    ``OUTSIDE_BRIGHTNESS`` instead, blending smoothly along the crop's edge. Returns (3, H, W) uint8."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if tint not in TINTS:
        raise ValueError(f"tint must be one of {', '.join(TINTS)}, got {tint!r}")
    heatmap = heatmap.to(photo.device)  # pictures are drawn where the photo is (maps may be on a GPU)
    colour = colorize(heatmap, colormap)
    weight = alpha * heatmap.clamp(0, 1) if tint == "heat" else torch.full_like(heatmap, alpha)
    pixels = photo.float() / 255
    mixed = (1 - weight) * pixels + weight * colour
    if coverage is not None:
        seen = coverage.to(photo.device)
        mixed = seen * mixed + (1 - seen) * OUTSIDE_BRIGHTNESS * pixels
    return (mixed * 255).round().clamp(0, 255).to(torch.uint8)


def overlay_image(
    photo: Image.Image,
    heatmap: torch.Tensor | np.ndarray,
    geometry: Geometry,
    alpha: float = 0.5,
    colormap: str = "jet",
    tint: str = "flat",
) -> Image.Image:
    """:func:`overlay` of a (h, w) map in [0, 1] (or its uint8 :func:`heat_plane`) in the model's input
    frame on the whole RGB ``photo``, carried back through :class:`~gradcam.io.images.Geometry`. Where the
    model saw only a crop, the rest is dimmed to ``OUTSIDE_BRIGHTNESS`` and the crop is framed and labelled
    "model's view".

    The map is laid on the resized frame (small, 8-bit), then brought to the photo's pixels inside the
    model's view only, by PIL's bilinear resampling of an 8-bit plane (the sample positions of
    ``F.interpolate(..., align_corners=False)``), coloured through a palette and blended by PIL: every step
    that touches the photo's own pixels is C code, about 50x faster than float tensors at the photo's size
    and within 3 grey levels of :func:`overlay` of the float map. Large photos are drawn in strips of
    about ``STRIP_PIXELS``, so memory does not grow beyond the photo and the result."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if tint not in TINTS:
        raise ValueError(f"tint must be one of {', '.join(TINTS)}, got {tint!r}")
    height, width = geometry.original
    if photo.size != (width, height):
        raise ValueError(f"the photo is {photo.size[0]}x{photo.size[1]}, the geometry says {width}x{height}")
    photo = photo.convert("RGB") if photo.mode != "RGB" else photo
    heat = _resized_frame_heat(heatmap, geometry)
    seen = seen_box(geometry)
    left, top, right, bottom = seen if seen is not None else (0, 0, width, height)
    right, bottom = min(right, width), min(bottom, height)
    picture = photo.copy() if seen is None else photo.point(_dimming())  # what the model did not see: dimmed
    sx, sy = heat.width / width, heat.height / height
    palette = _palette(colormap)
    step = max(1, STRIP_PIXELS // max(1, right - left))
    for start in range(top, bottom, step):
        stop = min(bottom, start + step)
        source = (left * sx, start * sy, right * sx, stop * sy)
        strip_heat = heat.resize((right - left, stop - start), Image.Resampling.BILINEAR, box=source)
        strip_photo = photo.crop((left, start, right, stop))
        colour = strip_heat.copy()
        colour.putpalette(palette)
        colour = colour.convert("RGB")
        if tint == "heat":
            mixed = Image.composite(colour, strip_photo, strip_heat.point(lambda v: round(v * alpha)))
        else:
            mixed = Image.blend(strip_photo, colour, alpha)
        picture.paste(mixed, (left, start))
    if seen is not None:
        frame_view(picture, seen)
    return picture


MIN_DRAWN_WIDTH = 320  # a narrower photo is drawn enlarged, so its caption and colour scale stay legible
MAX_ENLARGED_SIDE = 4096


def drawing_factor(size: tuple[int, int], max_side: int | None = None) -> int:
    """The whole factor a photo of ``size`` (width, height) is drawn enlarged by: the smallest that makes it
    ``MIN_DRAWN_WIDTH`` wide, its longer side at most ``MAX_ENLARGED_SIDE`` (or ``max_side``); 1 for a photo
    that wide already."""
    width, height = size
    longest = min(MAX_ENLARGED_SIDE, max_side or MAX_ENLARGED_SIDE)
    return max(1, min(math.ceil(MIN_DRAWN_WIDTH / max(1, width)), longest // max(1, width, height)))


def enlarged_size(size: tuple[int, int], max_side: int | None = None) -> tuple[int, int]:
    """The (width, height) a photo of ``size`` is drawn at: enlarged by :func:`drawing_factor`."""
    factor = drawing_factor(size, max_side)
    return (size[0] * factor, size[1] * factor)


def enlarged_for_drawing(
    photo: Image.Image, geometry: Geometry, max_side: int | None = None
) -> tuple[Image.Image, Geometry]:
    """A photo narrower than ``MIN_DRAWN_WIDTH`` (CIFAR's 32 x 32, MNIST's 28 x 28, a thumbnail) enlarged by
    :func:`drawing_factor`, each pixel a square block (nearest neighbour: no detail the photo lacks is
    invented), with its :class:`Geometry` onto the enlarged picture; a wider photo as it is. Drawn at its own
    32 pixels, the overlay was a smudge under a caption wrapped to two letters a line.

    Example:
        >>> picture, geometry = enlarged_for_drawing(photo_32px, geometry)   # doctest: +SKIP
        >>> picture.size
        (320, 320)
    """
    width, height = enlarged_size(photo.size, max_side)
    if (width, height) == photo.size:
        return photo, geometry
    return photo.resize((width, height), Image.Resampling.NEAREST), replace(geometry, original=(height, width))


@lru_cache(maxsize=1)
def _dimming() -> list[int]:
    return [round(v * OUTSIDE_BRIGHTNESS) for v in range(256)] * 3


def smooth_for_drawing(maps: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, K, H, W) maps upsampled from a layer's ``grid`` (h, w), smoothed for drawing: a Gaussian of half a
    grid cell's width (sigma), each map rescaled to its own maximum before. Bilinear upsampling from a 7 x 7
    grid is linear within each cell and creased along their edges: on a large photo the creases show as
    diamonds that are not in the model's evidence. The stored maps (``.npy``, the record) stay exact.

    Example:
        >>> smooth_for_drawing(ex.maps, tuple(ex.raw.shape[-2:]))    # doctest: +SKIP
    """
    height, width = maps.shape[-2:]
    sigmas = (0.5 * height / max(1, grid[0]), 0.5 * width / max(1, grid[1]))
    if min(sigmas) < 1 or maps.numel() == 0:  # as fine as the picture's grid: nothing to smooth
        return maps
    flat = maps.detach().float().flatten(0, 1)[:, None]  # (B K, 1, H, W)
    for dim, sigma in ((2, sigmas[0]), (3, sigmas[1])):
        radius = min(int(3 * sigma), flat.shape[dim] - 1)
        taps = torch.arange(-radius, radius + 1, dtype=flat.dtype, device=flat.device)
        kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
        kernel = (kernel / kernel.sum()).view(1, 1, -1, 1) if dim == 2 else (kernel / kernel.sum()).view(1, 1, 1, -1)
        padding = (0, 0, radius, radius) if dim == 2 else (radius, radius, 0, 0)
        flat = F.conv2d(F.pad(flat, padding, mode="reflect"), kernel)
    smoothed = flat[:, 0].reshape(maps.shape)
    before = maps.detach().float().flatten(2).amax(dim=2)[..., None, None]
    after = smoothed.flatten(2).amax(dim=2)[..., None, None]
    return torch.where(after > 0, smoothed * before / after.clamp(min=1e-30), smoothed).clamp(0, 1).to(maps.dtype)


def heat_plane(maps: torch.Tensor) -> np.ndarray:
    """Maps in [0, 1] (any shape) as 8-bit planes, what :func:`overlay_image` draws: computed for a whole
    batch at once, so the threads that draw need no torch operation (each would start its own threads)."""
    return (maps.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def _resized_frame_heat(heatmap: torch.Tensor | np.ndarray, geometry: Geometry) -> Image.Image:
    """The map (float in [0, 1], or its :func:`heat_plane`) laid on the resized frame as an 8-bit image
    (0 outside the crop); a map of another size than the crop is resized bilinearly first."""
    plane = heatmap if isinstance(heatmap, np.ndarray) else heat_plane(heatmap)
    if plane.dtype != np.uint8 or plane.ndim != 2:
        raise ValueError(f"heatmap: expected an (H, W) map or its uint8 plane, got {plane.dtype} {plane.shape}")
    crop = Image.fromarray(plane, "L")
    if crop.size != (geometry.crop[1], geometry.crop[0]):
        crop = crop.resize((geometry.crop[1], geometry.crop[0]), Image.Resampling.BILINEAR)
    canvas = Image.new("L", (geometry.resized[1], geometry.resized[0]), 0)
    top, left = geometry.crop_origin
    canvas.paste(crop, (left, top))  # the part beyond the resized frame (a padded input) falls away
    return canvas


@lru_cache(maxsize=16)
def _palette(name: str) -> list[int]:
    """A 256-entry RGB palette of the colormap ``name`` (what :func:`colorize` uses)."""
    table = (colormap_table(name) * 255).round().to(torch.uint8)
    return table.flatten().tolist()


def frame_view(picture: Image.Image, box: tuple[int, int, int, int], label: str = "model's view") -> None:
    """Draw a thin light frame around ``box`` in ``picture``, in place, with ``label`` in its top-left
    corner; only the frame's own pixels are touched."""
    left, top, right, bottom = box
    width, height = picture.size
    line = max(1, round(min(height, width) / 300))
    right, bottom = min(right, width), min(bottom, height)
    draw = ImageDraw.Draw(picture)
    light = (235, 235, 235)
    draw.rectangle((left, top, right - 1, top + line - 1), fill=light)
    draw.rectangle((left, max(top, bottom - line), right - 1, bottom - 1), fill=light)
    draw.rectangle((left, top, left + line - 1, bottom - 1), fill=light)
    draw.rectangle((max(left, right - line), top, right - 1, bottom - 1), fill=light)
    tag = text_tile(label, max(10, round(min(height, width) / 18)))  # readable where the overlay is shown small
    tag_h, tag_w = tag.shape[1:]
    y, x = top + line, left + line
    if y + tag_h <= height and x + tag_w <= width and tag_w < right - left:
        picture.paste(to_pil(tag), (x, y))


UNTRAINED_TAG = "untrained model: random weights"


def stamp_untrained(picture: Image.Image) -> None:
    """Say on ``picture`` (in place, its bottom-left corner) that the model that made it has random weights:
    a map of an untrained network shown under a class name looks like an explanation and is none."""
    width, height = picture.size
    tag = text_tile(UNTRAINED_TAG, max(10, round(min(height, width) / 18)), background=(170, 30, 30))
    tag_h, tag_w = tag.shape[1:]
    if tag_w <= width and tag_h <= height:
        picture.paste(to_pil(tag), (0, height - tag_h))


def seen_box(geometry: Geometry) -> tuple[int, int, int, int] | None:
    """The part of the photo the model saw, (left, top, right, bottom) in the photo's pixels; None when it
    saw all of it."""
    (height, width), (resized_h, resized_w) = geometry.original, geometry.resized
    top, left = geometry.crop_origin
    bottom = min(resized_h, top + geometry.crop[0])
    right = min(resized_w, left + geometry.crop[1])
    sy, sx = height / resized_h, width / resized_w
    box = (round(left * sx), round(top * sy), round(right * sx), round(bottom * sy))
    if box[0] <= 1 and box[1] <= 1 and box[2] >= width - 1 and box[3] >= height - 1:
        return None
    return box


@lru_cache(maxsize=32)
def text_tile(text: str, size: int, background: tuple[int, int, int] = (30, 30, 30)) -> torch.Tensor:
    """(3, h, w) uint8: light ``text`` on a dark tile, ``size`` pixels high."""
    font = _font(size)
    left, top, right, bottom = (int(v) for v in font.getbbox(text))
    pad = max(2, size // 5)
    tile = Image.new("RGB", (right - left + 2 * pad, bottom - top + 2 * pad), background)
    ImageDraw.Draw(tile).text((pad - left, pad - top), text, fill=(235, 235, 235), font=font)
    return torch.from_numpy(np.asarray(tile).copy()).permute(2, 0, 1)


def data_uri(picture: Image.Image, format: str = "JPEG") -> str:
    """A picture inline in a page: ``data:image/...;base64,...`` (JPEG quality 85, or PNG)."""
    buffer = io.BytesIO()
    picture.save(buffer, format=format, **({"quality": 85} if format == "JPEG" else {}))
    kind = "jpeg" if format == "JPEG" else "png"
    return f"data:image/{kind};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def to_pil(picture: torch.Tensor) -> Image.Image:
    return Image.fromarray(picture.permute(1, 2, 0).cpu().numpy())


def channel_grid(
    photo: torch.Tensor,
    contributions: torch.Tensor,
    channels: list[int],
    totals: list[float],
    combined: torch.Tensor,
    grand_total: float | None = None,
    tile: int = 224,
    colormap: str = "jet",
    alpha: float = 0.5,
) -> Image.Image:
    """The "Grad-CAM per feature map" picture: one tile per feature map's contribution ``w_c * A_c``
    (all on one colour scale, so tiles compare), then the combined map (on its own scale: ReLU of the sum,
    scaled to its maximum, as the overlay), and the colour scale; as many columns as leave the fewest
    empty cells (:func:`grid_columns`).

    Args:
        photo: (3, h, w) uint8, the model's view of the photo (the crop).
        contributions: (N, h', w') contribution maps at layer resolution.
        channels, totals: the channel indices and their summed contributions, for the captions.
        grand_total: the sum over every channel; captions give each tile's share of it.
        combined: (h, w) the final map in [0, 1].
    """
    contributions, combined = contributions.to(photo.device), combined.to(photo.device)  # maps may be on a GPU
    small = F.interpolate(photo[None].float(), size=(tile, tile), mode="bilinear", align_corners=False)[0]
    small = small.round().clamp(0, 255).to(torch.uint8)
    scale = contributions.clamp(min=0).amax().clamp(min=1e-12)
    maps = F.interpolate(contributions[None].float(), size=(tile, tile), mode="bilinear", align_corners=False)[0]

    def caption_of(channel: int, total: float) -> str:
        if grand_total:
            return f"channel {channel}: {100 * total / grand_total:.1f}%"
        return f"channel {channel}: {total:+.3g}"

    tiles = [
        (overlay(small, (m / scale).clamp(0, 1), alpha, colormap), caption_of(c, t))
        for m, c, t in zip(maps, channels, totals, strict=True)
    ]
    resized = F.interpolate(combined[None, None].float(), size=(tile, tile), mode="bilinear", align_corners=False)
    tiles.append((overlay(small, resized[0, 0].clamp(0, 1), alpha, colormap), "combined: ReLU of the sum"))
    font = _font(max(12, tile // 13))
    caption = int(font.size) + 10 if isinstance(font, ImageFont.FreeTypeFont) else 18
    columns = grid_columns(len(tiles))
    rows = (len(tiles) + columns - 1) // columns
    line_height = max(10, tile // 18) + 4
    footer = 16 + 2 * (line_height + 2) + 4
    grid = Image.new("RGB", (columns * tile, rows * (tile + caption) + footer), "white")
    draw = ImageDraw.Draw(grid)
    for i, (picture, text) in enumerate(tiles):
        x, y = (i % columns) * tile, (i // columns) * (tile + caption)
        grid.paste(to_pil(picture), (x, y + caption))
        draw.text((x + 4, y + 4), text, fill="black", font=font)
    small_font = _font(max(10, tile // 18))
    bottom = rows * (tile + caption)
    grid.paste(to_pil(colour_bar(min(columns * tile - 8, 3 * tile), 10, colormap)), (4, bottom + 4))
    notes = ["low to high contribution w*A; % = share of the sum of all channels",
             "one colour scale for the channels; the combined map on its own"]  # fmt: skip
    for number, note in enumerate(notes):
        draw.text((4, bottom + 16 + number * (line_height + 2)), note, fill="black", font=small_font)
    return grid


def grid_columns(count: int) -> int:
    """Columns for ``count`` tiles: about a square (at most twice as wide as high), with the fewest empty
    cells (17 tiles: 6 x 3 with one empty cell, not 5 x 4 with three); ties go to the squarer grid.

    Example:
        >>> grid_columns(9), grid_columns(17), grid_columns(5)
        (3, 6, 3)
    """
    square = math.ceil(math.sqrt(max(1, count)))
    shapely = [c for c in range(square, square + 3) if 2 * math.ceil(count / c) >= c] or [square]
    return min(shapely, key=lambda c: (-count % c, c))


def colour_bar(width: int, height: int, colormap: str = "jet") -> torch.Tensor:
    """(3, height, width) uint8: the colour scale from low (left) to high (right)."""
    ramp = torch.linspace(0, 1, width)[None].expand(height, -1)
    return (colorize(ramp, colormap) * 255).round().to(torch.uint8)


def with_legend(
    picture: torch.Tensor,
    title: str,
    colormap: str = "jet",
    peak: float | None = None,
    empty: str | None = None,
    shared: float | None = None,
) -> torch.Tensor:
    """``picture`` (3, H, W) uint8 with a footer: ``title`` and the colour scale ("low ... high, each map
    scaled to its own maximum", with the map's raw maximum ``peak`` where given, or the photo's strongest
    map's ``shared`` maximum with ``--scale shared``), sized to the picture; for an empty map, the sentence
    ``empty`` instead of the scale. Text wraps at word boundaries to the picture's width (a narrow photo's
    legend is never cut off), and the scale's words go under the bar when they do not fit beside it."""
    height, width = picture.shape[1:]
    size = max(11, min(28, round(width / 45)))
    font = _font(size)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def length(text: str) -> float:
        return measure.textlength(text, font=font) if hasattr(measure, "textlength") else len(text) * size * 0.6

    usable = max(1, width - 12)
    lines: list[tuple[str, tuple[int, int, int]]] = [(line, (0, 0, 0)) for line in _wrapped(title, usable, length)]
    high = "high (scaled to this map's maximum)" if peak is None else f"high = {peak:.3g} (this map's maximum)"
    if shared is not None:
        high = f"high = {shared:.3g} (shared; this map: {peak or 0:.3g})"
    bar_width = max(40, min(width // 3, 400))
    low = length("low ")
    bar_line, beside = None, False
    if empty is not None:
        lines += [(line, (160, 20, 20)) for line in _wrapped(empty, usable, length)]
    else:
        bar_line = len(lines)
        beside = 6 + low + bar_width + 6 + length(high) <= width - 6
        if not beside:
            bar_width = max(20, min(bar_width, int(usable - low - 6)))
        lines.append(("", (0, 0, 0)))  # the bar's line
        if not beside:
            lines += [(line, (0, 0, 0)) for line in _wrapped(high, usable, length)]
    step = size + 6
    footer = Image.new("RGB", (width, len(lines) * step + 10), "white")
    draw = ImageDraw.Draw(footer)
    for number, (text, colour) in enumerate(lines):
        draw.text((6, 4 + number * step), text, fill=colour, font=font)
    if bar_line is not None:
        y = 4 + bar_line * step
        draw.text((6, y), "low", fill="black", font=font)
        bar = to_pil(colour_bar(bar_width, max(6, size // 2), colormap))
        footer.paste(bar, (int(6 + low), y + (size - bar.height) // 2 + 2))
        if beside:  # else its words are on the lines under the bar
            draw.text((int(6 + low + bar_width + 6), y), high, fill="black", font=font)
    below = torch.from_numpy(np.asarray(footer).copy()).permute(2, 0, 1)
    return torch.cat([picture, below.to(picture.device)], dim=1)


def _wrapped(text: str, width: float, length: Callable[[str], float]) -> list[str]:
    """``text`` in lines of at most ``width`` (as ``length`` measures), broken between words; a word longer
    than a line is broken where it must."""
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        candidate = f"{current} {word}" if current else word
        if length(candidate) <= width:
            current = candidate
            continue
        if current:
            lines.append(current)
        while length(word) > width and len(word) > 1:
            cut = max(1, int(len(word) * width / max(length(word), 1)))
            lines.append(word[:cut])
            word = word[cut:]
        current = word
    if current:
        lines.append(current)
    return lines or [""]


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """PIL's bundled font at ``size`` pixels (scalable with FreeType; the fixed bitmap font without)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()
