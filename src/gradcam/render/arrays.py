"""Pictures of volumes and signals: a montage of slices with the map over each, and a signal plot.

Example:
    >>> picture = montage(read_array(Path("scan.nii.gz")), heat, "gradcam for tumour (1)")   # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from ..io.arrays import ArrayInput
from .viz import _font, overlay, to_pil, with_legend

MONTAGE_SLICES = 16
TILE = 160  # pixels of a montage tile's longer side


def _slice_axis(item: ArrayInput) -> int:
    """The axis a montage walks: NIfTI's last (axial in RAS space), else the first (D of (D, H, W))."""
    return 2 if item.nifti else 0


def montage(
    item: ArrayInput, heat: torch.Tensor, caption: str, alpha: float = 0.5, colormap: str = "jet"
) -> Image.Image:
    """Up to ``MONTAGE_SLICES`` evenly spaced slices of the volume (its first channel, windowed to its 1st-99th
    percentiles, grey) with the map over each, in a grid, each slice numbered, with a colour scale."""
    volume = item.values[0]
    axis = _slice_axis(item)
    depth = volume.shape[axis]
    count = min(MONTAGE_SLICES, depth)
    picks = sorted({round((i + 0.5) * depth / count - 0.5) for i in range(count)})
    sample = volume.flatten()[:: max(1, volume.numel() // 1_000_000)]
    low, high = torch.quantile(sample, torch.tensor([0.01, 0.99])).tolist()
    span = high - low if high > low else 1.0
    tiles = []
    for index in picks:
        plane = volume.select(axis, index)
        heat_plane = heat.select(axis, index)
        if item.nifti:  # show RAS slices the radiological way up: rows are y, flipped
            plane, heat_plane = plane.T.flip(0), heat_plane.T.flip(0)
        grey = ((plane - low) / span).clamp(0, 1)
        scale = TILE / max(grey.shape)
        size = (max(1, round(grey.shape[0] * scale)), max(1, round(grey.shape[1] * scale)))
        grey = F.interpolate(grey[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
        heat_tile = F.interpolate(heat_plane[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
        photo = (grey * 255).round().to(torch.uint8).expand(3, -1, -1)
        tile = to_pil(overlay(photo, heat_tile.clamp(0, 1), alpha, colormap))
        name = ("xyz" if item.nifti else "dhw")[axis]
        draw = ImageDraw.Draw(tile)
        font = _font(12)
        text = f"{name} = {index}"
        right, bottom = (int(v) for v in font.getbbox(text)[2:])
        draw.rectangle((0, 0, right + 6, bottom + 4), fill=(30, 30, 30))
        draw.text((3, 1), text, fill=(235, 235, 235), font=font)
        tiles.append(tile)
    columns = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    height, width = max(t.height for t in tiles), max(t.width for t in tiles)
    sheet = Image.new("RGB", (columns * (width + 4) - 4, rows * (height + 4) - 4), "white")
    for number, tile in enumerate(tiles):
        r, c = divmod(number, columns)
        sheet.paste(tile, (c * (width + 4), r * (height + 4)))
    picture = torch.from_numpy(np.asarray(sheet).copy()).permute(2, 0, 1)
    return to_pil(with_legend(picture, caption, colormap))


def signal_plot(item: ArrayInput, heat: torch.Tensor, caption: str, colormap: str = "jet") -> Image.Image:
    """Each channel of the signal (at most 12) as a line over a band coloured by the map, one row each."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    values = item.values.numpy()
    channels = min(12, values.shape[0])
    length = values.shape[1]
    figure, axes = plt.subplots(channels, 1, figsize=(10, 1.3 + 1.1 * channels), sharex=True, squeeze=False,
                                layout="constrained")  # fmt: skip
    band = heat.numpy()[None, :]
    for row in range(channels):
        axis = axes[row, 0]
        low, high = float(values[row].min()), float(values[row].max())
        pad = (high - low) * 0.05 or 1.0
        axis.imshow(band, aspect="auto", cmap=colormap, vmin=0, vmax=1, alpha=0.55,
                    extent=(0, length, low - pad, high + pad), interpolation="bilinear")  # fmt: skip
        axis.plot(np.arange(length) + 0.5, values[row], color="black", linewidth=0.8)
        axis.set_ylim(low - pad, high + pad)
        axis.set_ylabel(f"ch {row}", rotation=0, ha="right", va="center")
        axis.set_yticks([])
    axes[-1, 0].set_xlabel("position")
    figure.suptitle(caption, fontsize=11)
    mappable = plt.cm.ScalarMappable(cmap=colormap, norm=matplotlib.colors.Normalize(0, 1))
    figure.colorbar(mappable, ax=axes[:, 0].tolist(), fraction=0.02, pad=0.01, label="map (scaled to its maximum)")
    canvas: Any = figure.canvas
    canvas.draw()
    picture = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba()).convert("RGB")
    plt.close(figure)
    return picture
