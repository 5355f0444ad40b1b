"""Proof by experiment for a flagged class: does the class's score depend on the suspected region?

A flag says where a class's maps sit; it does not prove that the model needs what is there. Two
experiments do, with forward passes only (no gradients), on up to ``PROOF_PHOTOS`` photos:

- occlusion: the region is removed from the class's own photos, filled from its surroundings (a normalised
  box blur of the pixels outside the region, as ROAD imputes removed pixels from their neighbours, Rong et
  al., ICML 2022), and the class's probability falls by ``occlusion_drop`` (relative: 0.64 = 64% lower);
- transplant: the region is pasted from the class's photos onto photos of other classes, at the same
  place, and the class's probability there rises by ``transplant_gain`` (absolute, in probability).

Each is run again with a random region of the same shape and area (the suspected region shifted to where
it overlaps itself least), which says how much any region of that size matters: a shortcut's figures are
far above the random region's. The suspected region is the grid cells where the class's mean map exceeds
the other classes' mean map by at least half its largest excess, at most ``MAX_REGION`` of the frame.

Example:
    >>> evidence, picture = prove(bundle, 5, own_paths, other_paths, region)    # doctest: +SKIP
    >>> evidence["verdict"]
    'the score depends on this region: removing it drops the probability of stamped by 91% (a random ...'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..hooks import preserved_state, run_model
from ..io.images import DEFAULT_MAX_MEGAPIXELS, model_view
from ..io.models import LoadedModel
from ..pipeline.decode import decode
from ..pipeline.naming import label_of
from ..render.viz import to_pil
from ..targets import select_logits
from .follow import control_maps, followed_centre

PROOF_PHOTOS = 24
MAX_REGION = 0.3
CONFIRM_DROP = 0.2  # removing the region drops the probability by 20 points (of 100) more than a random one
CONFIRM_GAIN = 0.1  # or pasting it raises the probability by 0.1 more than a random one
PICTURE_SIDE = 128


def suspected_region(class_mean: torch.Tensor, others_mean: torch.Tensor, max_area: float = MAX_REGION) -> torch.Tensor:
    """The (G, G) cells where ``class_mean`` exceeds ``others_mean`` by at least half the largest excess,
    the strongest ones only if they cover more than ``max_area`` of the frame (at least one cell)."""
    excess = (class_mean.float() - others_mean.float()).clamp(min=0)
    if float(excess.max()) <= 0:
        excess = class_mean.float()
    cells = excess >= 0.5 * excess.max()
    limit = max(1, math.floor(max_area * excess.numel()))
    if int(cells.sum()) > limit:
        threshold = excess.flatten().topk(limit).values[-1]
        cells = excess >= threshold
    return cells


def random_region(region: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``region`` shifted (with wrap-around, so the area is kept) to one of 16 random places, the one that
    overlaps the original least."""
    height, width = region.shape
    best, overlap = region, math.inf
    for _ in range(16):
        dy = int(torch.randint(0, height, (1,), generator=generator))
        dx = int(torch.randint(0, width, (1,), generator=generator))
        moved = torch.roll(region, shifts=(dy, dx), dims=(0, 1))
        shared = int((moved & region).sum())
        if shared < overlap:
            best, overlap = moved, shared
    return best


def _on_input(cells: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(cells[None, None].float(), size=size, mode="nearest")[0, 0]


def filled(inputs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``inputs`` (B, C, H, W) with the pixels under ``mask`` ((H, W) or one per image (B, H, W); 1 =
    removed) replaced by a normalised box blur of the pixels outside it (a box a quarter of the image wide,
    enough to reach across the region); where none is in reach, the mean of the pixels outside. The box
    sums come from integral images, so the cost does not grow with the box."""
    masks = (mask if mask.dim() == 3 else mask[None]).to(inputs)[:, None]  # (B or 1, 1, H, W)
    keep = 1 - masks
    side = max(3, (max(inputs.shape[-2:]) // 4) | 1)
    values, weights = _box_sum(inputs * keep, side), _box_sum(keep.expand(inputs.shape[0], 1, -1, -1), side)
    outside = (inputs * keep).sum(dim=(2, 3), keepdim=True) / keep.sum(dim=(2, 3), keepdim=True).clamp(min=1)
    imputed = torch.where(weights > 1e-6, values / weights.clamp(min=1e-6), outside)
    return inputs * keep + imputed * masks


def _box_sum(x: torch.Tensor, side: int) -> torch.Tensor:
    """The sum of ``x`` (B, C, H, W) over a ``side`` x ``side`` box centred on each pixel (zero outside),
    from an integral image: four lookups per pixel."""
    half = side // 2
    padded = F.pad(x.double(), (half + 1, half, half + 1, half))
    integral = padded.cumsum(dim=2).cumsum(dim=3)
    height, width = x.shape[-2:]
    bottom, right = integral[..., side:, side:], integral[..., :height, side:]
    left, corner = integral[..., side:, :width], integral[..., :height, :width]
    return (bottom - right - left + corner).to(x.dtype)


def _probabilities(bundle: LoadedModel, inputs: torch.Tensor, index: int) -> torch.Tensor:
    with preserved_state(bundle.model), torch.inference_mode():
        parameter = next(bundle.model.parameters())
        logits = select_logits(run_model(bundle.model, inputs.to(parameter.device, parameter.dtype))).float()
    return logits.softmax(dim=1)[:, index].cpu()


def _inputs(bundle: LoadedModel, paths: Sequence[str], frame: str, max_megapixels: float) -> torch.Tensor | None:
    decoded = [decode(Path(p), bundle.preprocessing, max_megapixels, frame=frame, picture=False) for p in paths]
    good = [d.input for d in decoded if d.input is not None]
    if not good:
        return None
    size = good[0].shape
    same = [g for g in good if g.shape == size]  # "full" frames differ in size: the first photo's size only
    return torch.stack(same)


def _figures(values: torch.Tensor) -> tuple[float | None, float | None]:
    if values.numel() == 0:
        return None, None
    return round(float(values.mean()), 4), round(float(values.std(unbiased=False)), 4)


def prove(
    bundle: LoadedModel,
    index: int,
    own_paths: Sequence[str],
    other_paths: Sequence[str],
    region: torch.Tensor,
    frame: str = "crop",
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    seed: int = 0,
    known: torch.Tensor | None = None,
) -> tuple[dict[str, Any], Image.Image | None]:
    """The ``evidence`` entry of class ``index`` (see the module) and its picture: a photo of the class,
    the region on it, the photo with the region removed, a photo of another class, and that photo with
    the region pasted on. ``region``: (G, G) bool cells, from :func:`suspected_region`. ``known``: the
    class's probability on the first ``own_paths`` where the audit measured it already (saves a pass; not
    for ``frame="full"``, whose photos are squashed here and so seen otherwise than by the audit)."""
    if frame == "full":  # one input size for a batch; the region is relative to the frame
        frame, known = "squash", None
    own = _inputs(bundle, list(own_paths)[:PROOF_PHOTOS], frame, max_megapixels)
    other = _inputs(bundle, list(other_paths)[:PROOF_PHOTOS], frame, max_megapixels)
    generator = torch.Generator().manual_seed(seed)
    name = label_of(bundle.labels, index)
    area = float(region.float().mean())
    ys, xs = torch.nonzero(region, as_tuple=True)
    place = [
        round((float(ys.float().mean()) + 0.5) / region.shape[0], 4),
        round((float(xs.float().mean()) + 0.5) / region.shape[1], 4),
    ]
    empty: dict[str, Any] = {
        "region_area": round(area, 4), "region_place": place, "photos": 0, "other_photos": 0,
        "occlusion_drop": None, "occlusion_drop_std": None, "occlusion_drop_random": None,
        "occlusion_drop_random_std": None, "transplant_gain": None, "transplant_gain_std": None,
        "transplant_gain_random": None, "transplant_gain_random_std": None, "confirmed": False,
        "verdict": f"no photo of {name} could be read again for the experiment", "picture": None,
    }  # fmt: skip
    if own is None:
        return empty, None
    size = (int(own.shape[-2]), int(own.shape[-1]))
    mask = _on_input(region, size)
    randoms = [_on_input(random_region(region, generator), size) for _ in range(len(own))]
    own_count = min(len(own_paths), PROOF_PHOTOS)
    if known is not None and len(known) >= own_count == len(own):  # every photo read again: the audit's figures
        base = known[:own_count].float()
    else:
        base = _probabilities(bundle, own, index)
    removed = filled(own, mask)
    removed_random = filled(own, torch.stack(randoms))
    drop = (base - _probabilities(bundle, removed, index)) / base.clamp(min=1e-6)
    drop_random = (base - _probabilities(bundle, removed_random, index)) / base.clamp(min=1e-6)
    evidence = dict(empty, photos=len(own))
    evidence["occlusion_drop"], evidence["occlusion_drop_std"] = _figures(drop)
    evidence["occlusion_drop_random"], evidence["occlusion_drop_random_std"] = _figures(drop_random)
    pasted = None
    if other is not None and other.shape[-2:] == own.shape[-2:]:
        donors = own[torch.arange(len(other)) % len(own)]
        pasted = other * (1 - mask) + donors * mask
        pasted_random = torch.stack([
            other[j] * (1 - randoms[j % len(own)]) + donors[j] * randoms[j % len(own)] for j in range(len(other))
        ])  # fmt: skip
        before = _probabilities(bundle, other, index)
        gain = _probabilities(bundle, pasted, index) - before
        gain_random = _probabilities(bundle, pasted_random, index) - before
        evidence["other_photos"] = len(other)
        evidence["transplant_gain"], evidence["transplant_gain_std"] = _figures(gain)
        evidence["transplant_gain_random"], evidence["transplant_gain_random_std"] = _figures(gain_random)
    evidence["confirmed"], evidence["verdict"] = _verdict(name, evidence)
    transplant = None if pasted is None or other is None else (other[0], pasted[0])
    picture = _picture(bundle, own[0], mask, removed[0], transplant)
    return evidence, picture


def _verdict(name: str, e: dict[str, Any]) -> tuple[bool, str]:
    drop, drop_random = e["occlusion_drop"], e["occlusion_drop_random"]
    gain, gain_random = e["transplant_gain"], e["transplant_gain_random"]
    removing = (f"removing it drops the probability of {name} by {drop:.0%} (a random region of the same size: "
                f"{drop_random:.0%}, over {e['photos']} photos)")  # fmt: skip
    pasting = ""
    if gain is not None:
        pasting = (f"; pasting it onto {e['other_photos']} photos of other classes raises it by {gain:+.2f} "
                   f"(a random region: {gain_random:+.2f})")  # fmt: skip
    confirmed = drop - drop_random >= CONFIRM_DROP or (gain is not None and gain - gain_random >= CONFIRM_GAIN)
    lead = "the score depends on this region" if confirmed else "not confirmed: the score barely depends on this region"
    return confirmed, f"{lead}: {removing}{pasting}"


def _picture(
    bundle: LoadedModel,
    photo: torch.Tensor,
    mask: torch.Tensor,
    removed: torch.Tensor,
    transplant: tuple[torch.Tensor, torch.Tensor] | None,
) -> Image.Image:
    """photo | the region outlined | region removed | another class's photo | with the region pasted."""
    spec = bundle.preprocessing
    tiles = [model_view(photo, spec), model_view(photo, spec), model_view(removed, spec)]
    if transplant is not None:
        tiles += [model_view(transplant[0], spec), model_view(transplant[1], spec)]
    side = PICTURE_SIDE
    pictures = [to_pil(t.clamp(0, 255).to(torch.uint8)).resize((side, side), Image.Resampling.BILINEAR) for t in tiles]
    outline = np.asarray(F.interpolate(mask[None, None], size=(side, side), mode="nearest")[0, 0]) > 0.5
    inner = np.roll(outline, 1, 0) & np.roll(outline, -1, 0) & np.roll(outline, 1, 1) & np.roll(outline, -1, 1)
    edge = outline & ~inner
    marked = np.asarray(pictures[1]).copy()
    marked[edge] = (255, 40, 40)
    pictures[1] = Image.fromarray(marked)
    strip = Image.new("RGB", (len(pictures) * (side + 4) - 4, side), "white")
    for number, picture in enumerate(pictures):
        strip.paste(picture, (number * (side + 4), 0))
    return strip


def prove_classes(
    findings: Any, bundle: LoadedModel, frame: str, max_megapixels: float, asked: Sequence[int] = ()
) -> dict[int, Image.Image]:
    """Run the experiments for every flagged class and every class in ``asked`` (indices); each class entry
    of ``findings.head`` gets its ``evidence`` (None for the others). Returns the pictures by class index."""
    view = findings.measured.models[0]
    grids = torch.from_numpy(view.grids.astype(np.float32))
    pictures: dict[int, Image.Image] = {}
    for entry in findings.head["classes"]:
        entry["evidence"] = None
        index = entry["index"]
        if not (entry["flagged"] or index in asked):
            continue
        own_rows = np.nonzero(view.explained == index)[0]
        other_rows = _spread(np.nonzero(view.explained != index)[0], view.explained)
        if not len(other_rows):
            continue
        region = suspected_region(grids[own_rows].mean(0), grids[other_rows].mean(0))
        paths = [findings.measured.item(int(r)).path for r in own_rows]
        others = [findings.measured.item(int(r)).path for r in other_rows]
        known = torch.from_numpy(view.explained_probability[own_rows].astype(np.float32))
        entry["evidence"], picture = prove(bundle, index, paths, others, region, frame, max_megapixels, seed=index,
                                           known=known)  # fmt: skip
        if picture is not None:
            pictures[index] = picture
    return pictures


def _spread(rows: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """``rows`` reordered to take the classes in turn (one photo of each, then the next of each, ...), so
    that the first ``PROOF_PHOTOS`` of them cover the other classes evenly."""
    by_class: dict[int, list[int]] = {}
    for row in rows.tolist():
        by_class.setdefault(int(classes[row]), []).append(row)
    order: list[int] = []
    queues = list(by_class.values())
    depth = max((len(q) for q in queues), default=0)
    for turn in range(depth):
        order += [q[turn] for q in queues if turn < len(q)]
    return np.asarray(order, dtype=np.int64)


def prove_followed(
    findings: Any, bundle: LoadedModel, frame: str, max_megapixels: float, asked: Sequence[int] = ()
) -> dict[int, Image.Image]:
    """The experiments for every flagged followed class (``head["followed"]``) and every one in ``asked``,
    on the other classes' photos: the suspected region is removed from those where the class is most
    probable and pasted onto those where it is least. Returns the pictures by class index."""
    view = findings.measured.models[0]
    pictures: dict[int, Image.Image] = {}
    for number, entry in enumerate(findings.head.get("followed", [])):
        index = entry["index"]
        if not (entry["flagged"] or index in asked):
            continue
        others = np.nonzero(view.explained != index)[0]
        if len(others) < 2:
            continue
        ranked = others[np.argsort(-view.followed_probability[others, number], kind="stable")]
        half = min(PROOF_PHOTOS, len(ranked) // 2)  # two different sets of photos
        strongest, weakest = ranked[:half], _spread(ranked[half:][::-1].copy(), view.explained)
        grids = torch.from_numpy(view.followed_grids[others, number].astype(np.float32))
        centre = followed_centre(view.grids[others], control_maps(view, others, index))
        region = suspected_region(grids.mean(0), centre)
        paths = [findings.measured.item(int(r)).path for r in strongest]
        donors_of = [findings.measured.item(int(r)).path for r in weakest]
        known = torch.from_numpy(view.followed_probability[strongest, number].astype(np.float32))
        entry["evidence"], picture = prove(bundle, index, paths, donors_of, region, frame, max_megapixels,
                                           seed=index, known=known)  # fmt: skip
        if picture is not None:
            pictures[index] = picture
    return pictures
