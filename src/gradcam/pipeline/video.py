"""Explain a video, streaming: an ``.mp4`` with the map laid over every frame, a contact sheet PNG, and a
record in the run's manifest.

Two ways, chosen by the model:
- a video classifier (torchvision's ``r3d_18``, ``mc3_18``, ``r2plus1d_18``, ``s3d``): clips of 16 frames,
  each explained in space and time with :func:`gradcam.explain` on (1, 3, T, H, W); every frame gets its
  slice of the clip's map;
- any image model, frame by frame (batches of frames), optionally smoothed over time: ``smoothing = s``
  keeps ``s`` of the previous frame's map (``m_t = s m_(t-1) + (1 - s) m_t``, 0 = off).

Without ``--target`` each frame (each clip, for a video classifier) is explained for its own top class: a pan
from the espresso to the cat is the espresso's map, then the cat's. With ``--target`` the whole video is
explained for that one class. Every frame of the mp4 and every tile of the contact sheet says which class
its map is of and the frame's probability of it. Temporal smoothing never mixes the maps of two classes.
Only the frames of one clip or batch are held at a time, so memory does not grow with the video's length.

Example:
    >>> record = explain_video(load_model("r3d_18"), "match.mp4", "match", RunOptions(out=Path("out")))
    ...                                                                          # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..explain import explain
from ..io.images import Geometry, check_working_size, framed, preprocess
from ..io.models import LoadedModel
from ..io.video import VideoReadError, VideoWriter, read_frames, video_info
from ..render.captions import caption
from ..render.video import contact_sheet, with_frame_caption
from ..render.viz import enlarged_for_drawing, enlarged_size, overlay_image, smooth_for_drawing
from ..result import normalise
from .naming import label_of, target_stem
from .options import RunOptions, UsageError, parse_target
from .records import PhotoRecord, Prediction, TargetRecord
from .writer import BROKEN_SCORES, non_finite_rows, save_picture

SHEET_FRAMES = 12


PER_FRAME = "the top class of each frame"


def video_target(options: RunOptions, labels: Any) -> int | None:
    """The one class a whole video is explained for: ``--target`` (an index or a class name), else None
    (each frame's own top class); a UsageError for several or ``topK``."""
    target = parse_target(options.target, labels)
    if target is None:
        return None
    if not isinstance(target, list) or len(target) != 1:
        raise UsageError("--target with videos: one class (an index or a name); the whole video is explained for it")
    return int(target[0])


def explain_video(
    bundle: LoadedModel,
    path: str | Path,
    key: str,
    options: RunOptions,
    progress: Callable[[int], object] | None = None,
) -> PhotoRecord:
    """Explain every ``options.video.every``-th frame of the video at ``path`` into ``options.out / key``
    (``.{method}.{class}.mp4`` and ``.contact-sheet.png``); returns its record. ``progress(n)`` hears of
    each n frames done."""
    info = video_info(path)
    try:  # the frames' size from the container, before any frame is decoded
        check_working_size(info.size, options.max_megapixels, str(path))
    except ValueError as error:
        raise VideoReadError(str(error)) from None
    every, smoothing = options.video.every, options.video.smoothing
    base = options.out / key
    clip = int(bundle.extra.get("video_clip", 0))
    if not 0 <= smoothing < 1:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    frames = read_frames(path, every)
    device = next(bundle.model.parameters()).device
    writer: VideoWriter | None = None
    sheet: list[tuple[int, Image.Image, str]] = []
    sheet_step = max(1, math.ceil(max(1, info.frames // every) / SHEET_FRAMES))
    # running sums, not per-frame lists: memory stays flat however long the video (a 200k-class head's
    # logits for 1,500 frames ran out of memory at the end)
    state: dict[str, Any] = {"target": video_target(options, bundle.labels), "previous": None, "score_sum": 0.0,
                             "probability_sum": None, "rows": 0, "layer": None, "previous_class": None,
                             "classes": {}}  # fmt: skip
    done = 0
    video_file = None
    for group in _groups(frames, clip or options.batch_size):
        pictures = [_drawn_size(frame, options.max_side) for _, frame in group]
        inputs, geometry = _inputs(pictures, bundle, clip, options.frame)
        maps, said = _explain_group(bundle, inputs.to(device), clip, options, state)
        if writer is None:
            target = state["target"]
            label = label_of(bundle.labels, target) if target is not None else None
            stem = target_stem(base.name, options.method, target, label, counterfactual=options.counterfactual)
            if target is None:
                stem = f"{base.name}.{options.method}.top-class"
            video_file = base.with_name(f"{stem}.mp4")
            _refuse_existing(video_file, options.overwrite)
            base.parent.mkdir(parents=True, exist_ok=True)
            writer = VideoWriter(video_file.with_name(video_file.name + ".partial.mp4"), info.fps / every,
                                 enlarged_size(pictures[0].size, options.max_side))  # fmt: skip
        for (index, _), picture, heat, (class_id, probability) in zip(group, pictures, maps, said, strict=False):
            shown, placed = enlarged_for_drawing(picture, _on(geometry, picture), options.max_side)  # a small video
            drawn = overlay_image(shown, heat, placed, options.alpha, options.colormap, options.tint)
            text = frame_text(bundle.labels, class_id, probability, options.counterfactual)
            if class_id is not None:
                state["classes"][class_id] = state["classes"].get(class_id, 0) + 1
            writer.write(with_frame_caption(drawn, text))
            if (index // every) % sheet_step == 0 and len(sheet) < SHEET_FRAMES:
                small = drawn.copy()
                small.thumbnail((320, 320))
                sheet.append((index, small, text))
        done += len(group)
        if progress is not None:
            progress(len(group))
    if writer is None or video_file is None:
        raise ValueError(f"{path}: no frames decoded")
    writer.close()
    writer.path.replace(video_file)  # the finished file appears whole
    sheet_file = base.with_name(f"{base.name}.{options.method}.contact-sheet.png")
    title = caption(options.method, label_of(bundle.labels, state["target"]), state["target"],
                    counterfactual=options.counterfactual) if state["target"] is not None else (
        f"{options.method} for {PER_FRAME} (above each frame: its class and probability)")  # fmt: skip
    picture = contact_sheet(sheet, info.fps, title, options.colormap)
    save_picture(picture, sheet_file, "png")
    drawn_size = enlarged_size(pictures[0].size, options.max_side)
    return _record(bundle, str(path), info, options, state, video_file, sheet_file, done, drawn_size)


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


def _inputs(
    pictures: list[Image.Image], bundle: LoadedModel, clip: int, frame: str = "crop"
) -> tuple[torch.Tensor, Geometry]:
    """(T, 3, h, w) frames for an image model, or one (1, 3, T, h, w) clip (the last clip padded by repeating
    its last frame) for a video classifier, each frame preprocessed for ``frame`` (crop, full, squash)."""
    spec = framed(bundle.preprocessing, frame, pictures[0].size)
    prepared = [preprocess(picture, spec) for picture in pictures]
    geometry = prepared[0][1]
    stacked = torch.stack([pixels for pixels, _ in prepared])
    if not clip:
        return stacked, geometry
    if len(stacked) < clip:
        stacked = torch.cat([stacked, stacked[-1:].expand(clip - len(stacked), -1, -1, -1)])
    return stacked.permute(1, 0, 2, 3)[None], geometry


def _explain_group(
    bundle: LoadedModel, inputs: torch.Tensor, clip: int, options: RunOptions, state: dict[str, Any]
) -> tuple[list[torch.Tensor], list[tuple[int | None, float | None]]]:
    """The (h, w) map of each frame of the group, for the video's one target or each frame's own top class
    (each clip's, for a video classifier), and each frame's (class, probability of it)."""
    count = len(inputs) if not clip else 1
    fixed = state["target"]
    ex = explain(bundle.model, inputs, options.cam_method(), bundle.layer_for(options.layer),
                 [fixed] * count if fixed is not None else None, labels=bundle.labels,
                 counterfactual=options.counterfactual, eigen_smooth=options.eigen_smooth,
                 prefix_tokens=options.prefix_tokens, grid=options.token_grid)  # fmt: skip
    state["layer"] = ex.layer
    if non_finite_rows(ex.logits, ex.scores):
        raise ValueError(BROKEN_SCORES)
    classes: list[int | None] = [int(c) for c in ex.targets[:, 0]] if ex.targets is not None else [None] * count
    chances: list[float | None] = [None] * count
    if ex.logits is not None:
        probabilities = ex.logits.detach().float().softmax(-1).cpu()
        total = state["probability_sum"]
        state["probability_sum"] = probabilities.sum(0) if total is None else total + probabilities.sum(0)
        chances = [float(probabilities[row, c]) if c is not None else None for row, c in enumerate(classes)]
    state["score_sum"] += float(ex.scores[:, 0].detach().float().sum())
    state["rows"] += len(ex.scores)
    if clip:  # (1, 1, T, h, w): one map per frame of the clip (the last clip padded: cut by the caller's zip)
        maps = list(ex.maps[0, 0].cpu().unbind(0))
        return maps, [(classes[0], chances[0])] * len(maps)
    maps = []
    # drawn as the photos' overlays are: a coarse grid's map smoothed, not creased (render.viz)
    drawn = (
        smooth_for_drawing(ex.maps, (int(ex.raw.shape[-2]), int(ex.raw.shape[-1]))) if ex.raw.dim() == 4 else ex.maps
    )
    for heat, class_id in zip(drawn[:, 0].cpu(), classes, strict=True):
        smoothing = options.video.smoothing
        if smoothing and state["previous"] is not None and state["previous_class"] == class_id:
            heat = normalise(smoothing * state["previous"] + (1 - smoothing) * heat)  # never two classes' maps
        state["previous"], state["previous_class"] = heat, class_id
        maps.append(heat)
    return maps, list(zip(classes, chances, strict=True))


def frame_text(labels: Any, class_id: int | None, probability: float | None, counterfactual: bool = False) -> str:
    """What a frame's map is of: ``espresso p = 0.95`` (``against espresso ...`` for a counterfactual map)."""
    if class_id is None:
        return ""
    said = f"{'against ' if counterfactual else ''}{label_of(labels, class_id)}"
    return said if probability is None else f"{said} p = {probability:.2f}"


def _on(geometry: Geometry, picture: Image.Image) -> Geometry:
    return Geometry((picture.height, picture.width), geometry.resized, geometry.crop_origin, geometry.crop)


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: exists; pass --overwrite to replace it")


def _record(
    bundle: LoadedModel,
    path: str,
    info: Any,
    options: RunOptions,
    state: dict[str, Any],
    video_file: Path,
    sheet_file: Path,
    done: int,
    drawn: tuple[int, int],
) -> PhotoRecord:
    target = state["target"]
    predictions: list[Prediction] = []
    if state["probability_sum"] is not None and state["rows"]:
        mean = state["probability_sum"] / state["rows"]
        top = mean.topk(min(5, mean.numel()))
        predictions = [
            Prediction(int(i), label_of(bundle.labels, int(i)), probability=round(float(p), 6))
            for p, i in zip(top.values, top.indices, strict=True)
        ]
    label = label_of(bundle.labels, target) if target is not None else PER_FRAME
    if target is None and state["classes"]:  # which classes the frames were explained for, most frames first
        counts = sorted(state["classes"].items(), key=lambda kv: (-kv[1], kv[0]))
        label += ": " + ", ".join(f"{label_of(bundle.labels, c)} ({n} frames)" for c, n in counts[:10])
    record = TargetRecord(
        index=target,
        label=label,
        score=state["score_sum"] / state["rows"] if state["rows"] else 0.0,
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
        fps=round(info.fps / options.video.every, 3),
    )
