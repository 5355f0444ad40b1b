"""Explain a video, streaming: an ``.mp4`` with the map laid over every frame, a contact sheet PNG, and a
record in the run's manifest.

Two ways, chosen by the model:
- a video classifier (torchvision's ``r3d_18``, ``mc3_18``, ``r2plus1d_18``, ``s3d``): clips of 16 frames,
  each explained in space and time with :func:`gradcam.explain` on (1, 3, T, H, W); every frame gets its
  slice of the clip's map;
- any image model, frame by frame (batches of frames), optionally smoothed over time: ``smoothing = s``
  keeps ``s`` of the previous frame's map (``m_t = s m_(t-1) + (1 - s) m_t``, 0 = off).

The target is the same for the whole video, so the overlay does not flicker between classes: ``--target``,
else the class with the highest mean score over the first clip (or batch of frames). Only the frames of
one clip or batch are held at a time, so memory does not grow with the video's length.

Example:
    >>> record = explain_video(load_model("r3d_18"), "match.mp4", "match", VideoOptions(out=Path("out")))
    ...                                                                          # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..explain import explain
from ..io.images import Geometry, preprocess
from ..io.models import LoadedModel
from ..io.video import VideoWriter, read_frames, video_info
from ..render.viz import _font, colour_bar, overlay_image, to_pil
from ..result import normalise
from .records import PhotoRecord, Prediction, TargetRecord
from .writer import label_of, save_picture, slug

SHEET_FRAMES = 12


@dataclass(frozen=True)
class VideoOptions:
    out: Path
    method: str = "gradcam"
    layer: str | None = None
    target: int | None = None
    alpha: float = 0.5
    colormap: str = "jet"
    batch_size: int = 8
    every: int = 1  # explain every n-th frame (the others are skipped in the output too)
    smoothing: float = 0.0  # frame by frame: the share of the previous frame's map kept
    max_side: int | None = None  # draw (and encode) frames at most this long
    replace: bool = False


def explain_video(
    bundle: LoadedModel,
    path: str | Path,
    key: str,
    options: VideoOptions,
    progress: Callable[[int], object] | None = None,
) -> PhotoRecord:
    """Explain every ``options.every``-th frame of the video at ``path`` into ``options.out / key``
    (``.{method}.{class}.mp4`` and ``.contact-sheet.png``); returns its record. ``progress(n)`` hears of
    each n frames done."""
    info = video_info(path)
    base = options.out / key
    clip = int(bundle.extra.get("video_clip", 0))
    if not 0 <= options.smoothing < 1:
        raise ValueError(f"smoothing must be in [0, 1), got {options.smoothing}")
    frames = read_frames(path, options.every)
    device = next(bundle.model.parameters()).device
    writer: VideoWriter | None = None
    sheet: list[tuple[int, Image.Image]] = []
    sheet_step = max(1, math.ceil(max(1, info.frames // options.every) / SHEET_FRAMES))
    state: dict[str, Any] = {"target": options.target, "previous": None, "scores": [], "logits": [], "layer": None}
    done = 0
    video_file = None
    for group in _groups(frames, clip or options.batch_size):
        pictures = [_drawn_size(frame, options.max_side) for _, frame in group]
        inputs, geometry = _inputs(pictures, bundle, clip)
        maps = _explain_group(bundle, inputs.to(device), clip, options, state)[: len(group)]  # a padded clip
        if writer is None:
            label = label_of(bundle.labels, state["target"])
            video_file = base.with_name(f"{base.name}.{options.method}.{state['target']}-{slug(label)}.mp4")
            _refuse_existing(video_file, options.replace)
            base.parent.mkdir(parents=True, exist_ok=True)
            writer = VideoWriter(video_file.with_name(video_file.name + ".partial.mp4"), info.fps / options.every,
                                 pictures[0].size)  # fmt: skip
        for (index, _), picture, heat in zip(group, pictures, maps, strict=True):
            drawn = overlay_image(picture, heat, _on(geometry, picture), options.alpha, options.colormap)
            writer.write(drawn)
            if (index // options.every) % sheet_step == 0 and len(sheet) < SHEET_FRAMES:
                small = drawn.copy()
                small.thumbnail((320, 320))
                sheet.append((index, small))
        done += len(group)
        if progress is not None:
            progress(len(group))
    if writer is None or video_file is None:
        raise ValueError(f"{path}: no frames decoded")
    writer.close()
    writer.path.replace(video_file)  # the finished file appears whole
    sheet_file = base.with_name(f"{base.name}.{options.method}.contact-sheet.png")
    picture = contact_sheet(
        sheet, info.fps, f"{options.method} for {label_of(bundle.labels, state['target'])}", options
    )
    save_picture(picture, sheet_file, "png")
    return _record(bundle, str(path), info, options, state, video_file, sheet_file, done, pictures[0].size)


def _groups(frames: Any, size: int) -> Any:
    group = []
    for item in frames:
        group.append(item)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def _drawn_size(frame: Image.Image, max_side: int | None) -> Image.Image:
    if max_side and max(frame.size) > max_side:
        frame = frame.copy()
        frame.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return frame


def _inputs(pictures: list[Image.Image], bundle: LoadedModel, clip: int) -> tuple[torch.Tensor, Geometry]:
    """(T, 3, h, w) frames for an image model, or one (1, 3, T, h, w) clip (the last clip padded by repeating
    its last frame) for a video classifier."""
    prepared = [preprocess(picture, bundle.preprocessing) for picture in pictures]
    geometry = prepared[0][1]
    stacked = torch.stack([pixels for pixels, _ in prepared])
    if not clip:
        return stacked, geometry
    if len(stacked) < clip:
        stacked = torch.cat([stacked, stacked[-1:].expand(clip - len(stacked), -1, -1, -1)])
    return stacked.permute(1, 0, 2, 3)[None], geometry


def _explain_group(
    bundle: LoadedModel, inputs: torch.Tensor, clip: int, options: VideoOptions, state: dict[str, Any]
) -> list[torch.Tensor]:
    """The (h, w) map of each frame of the group, for the video's one target."""
    if state["target"] is None:  # the class with the highest mean score over the first clip or batch
        with torch.inference_mode():
            logits = bundle.model(inputs)
        state["target"] = int(logits.float().mean(0).argmax())
    count = len(inputs) if not clip else 1
    ex = explain(bundle.model, inputs, options.method, bundle.layer_for(options.layer), [state["target"]] * count,
                 labels=bundle.labels)  # fmt: skip
    state["layer"] = ex.layer
    if ex.logits is not None:
        state["logits"].append(ex.logits.float().cpu())
    state["scores"] += ex.scores[:, 0].float().cpu().tolist()
    if clip:  # (1, 1, T, h, w): one map per frame of the clip
        maps = list(ex.maps[0, 0].cpu().unbind(0))
    else:
        maps = []
        for heat in ex.maps[:, 0].cpu():
            if options.smoothing and state["previous"] is not None:
                heat = normalise(options.smoothing * state["previous"] + (1 - options.smoothing) * heat)
            state["previous"] = heat
            maps.append(heat)
    return maps


def _on(geometry: Geometry, picture: Image.Image) -> Geometry:
    return Geometry((picture.height, picture.width), geometry.resized, geometry.crop_origin, geometry.crop)


def _refuse_existing(path: Path, replace: bool) -> None:
    if path.exists() and not replace:
        raise FileExistsError(f"{path}: exists; pass --overwrite to replace it")


def contact_sheet(
    tiles: list[tuple[int, Image.Image]], fps: float, title: str, options: VideoOptions, columns: int = 4
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
    bar = to_pil(colour_bar(min(200, columns * width // 3), 8, options.colormap))
    sheet.paste(bar, (6, 26))
    draw.text((bar.width + 12, 22), "low to high heat (each frame scaled to its own maximum)", fill="black",
              font=_font(11))  # fmt: skip
    for i, (index, tile) in enumerate(tiles):
        x, y = (i % columns) * width, header + (i // columns) * (height + caption)
        draw.text((x + 4, y + 2), f"frame {index} ({index / fps:.1f} s)", fill="black", font=_font(12))
        sheet.paste(tile, (x, y + caption))
    return sheet


def _record(
    bundle: LoadedModel,
    path: str,
    info: Any,
    options: VideoOptions,
    state: dict[str, Any],
    video_file: Path,
    sheet_file: Path,
    done: int,
    drawn: tuple[int, int],
) -> PhotoRecord:
    target = state["target"]
    predictions: list[Prediction] = []
    if state["logits"]:
        mean = torch.cat(state["logits"]).softmax(-1).mean(0)
        top = mean.topk(min(5, mean.numel()))
        predictions = [
            Prediction(int(i), label_of(bundle.labels, int(i)), probability=round(float(p), 6))
            for p, i in zip(top.values, top.indices, strict=True)
        ]
    record = TargetRecord(
        index=target,
        label=label_of(bundle.labels, target),
        score=float(np.mean(state["scores"])) if state["scores"] else 0.0,
        files={"video": str(video_file), "contact_sheet": str(sheet_file)},
    )
    return PhotoRecord(
        path=path,
        status="ok",
        method=options.method,
        layer=state["layer"],
        size=info.size,
        overlay_size=drawn,
        predictions=tuple(predictions),
        targets=(record,),
        frames=done,
        fps=round(info.fps / options.every, 3),
    )
