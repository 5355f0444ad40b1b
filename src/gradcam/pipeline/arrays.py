"""Explain a volume or a signal file: the map written back as an array (NIfTI in the source's space, or
``.npy``), a picture (a montage of slices for a volume, a plot for a signal) and a record in the run's
manifest.

Example:
    >>> record = explain_array(bundle, Path("scan.nii.gz"), "scan", ArrayOptions(out=Path("out")))  # doctest: +SKIP
    >>> record.targets[0].files
    {'map': 'out/scan.gradcam.1-tumour.map.nii.gz', 'montage': 'out/scan.gradcam.1-tumour.montage.png'}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from ..explain import explain
from ..io.arrays import ArrayInput, map_path, read_array, write_map
from ..io.models import LoadedModel
from ..render.viz import _font, overlay, to_pil, with_legend
from .records import PhotoRecord, TargetRecord
from .writer import label_of, save_picture, slug, top_predictions

MONTAGE_SLICES = 16
TILE = 160  # pixels of a montage tile's longer side


@dataclass(frozen=True)
class ArrayOptions:
    out: Path
    method: str = "gradcam"
    layer: str | None = None
    target: Any = None  # None: the top class; an index, "top3", ... as for photos
    alpha: float = 0.5
    colormap: str = "jet"
    replace: bool = False


def explain_array(bundle: LoadedModel, path: Path, key: str, options: ArrayOptions) -> PhotoRecord:
    """One volume or signal file through ``bundle``'s model; raises ArrayReadError or ValueError in one line."""
    item = read_array(path)
    parameter = next(bundle.model.parameters())
    values = item.values[None].to(parameter.device, parameter.dtype)
    ex = explain(bundle.model, values, options.method, bundle.layer_for(options.layer), options.target,
                 labels=bundle.labels)  # fmt: skip
    if ex.logits is None:
        raise ValueError(f"{path}: the model's output is not (B, num_classes) class scores")
    predictions = top_predictions(ex.logits, bundle.labels, similarity=False)[0]
    targets = []
    for k in range(ex.maps.shape[1]):
        index = int(ex.targets[0, k]) if ex.targets is not None else k
        label = label_of(bundle.labels, index)
        stem = options.out / f"{key}.{options.method}.{index}-{slug(label)}"
        stem.parent.mkdir(parents=True, exist_ok=True)
        heat = ex.maps[0, k].detach().float().cpu()
        kind = "montage" if item.kind == "volume" else "plot"
        map_file, picture_path = (
            map_path(stem.with_name(stem.name + ".map"), item),
            stem.with_name(f"{stem.name}.{kind}.png"),
        )
        existing = [p for p in (map_file, picture_path) if p.exists()]
        if existing and not options.replace:
            raise FileExistsError(f"{existing[0]} exists; pass --overwrite to replace it")
        caption = f"{options.method} for {label} ({index}), score {float(ex.scores[0, k]):.2f}"
        if item.kind == "volume":
            picture = montage(item, heat, caption, options.alpha, options.colormap)
        else:
            picture = signal_plot(item, heat, caption, options.colormap)
        write_map(heat.numpy(), map_file, item)
        save_picture(picture, picture_path, "png")
        targets.append(TargetRecord(index=index, label=label, score=float(ex.scores[0, k]),
                                    files={"map": str(map_file), kind: str(picture_path)}))  # fmt: skip
    return PhotoRecord(path=str(path), status="ok", method=options.method, layer=ex.layer,
                       predictions=tuple(predictions), targets=tuple(targets), kind=item.kind,
                       shape=item.shape)  # fmt: skip


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
