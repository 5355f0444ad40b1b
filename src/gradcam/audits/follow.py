"""Follow a class over every photo (``gradcam audit --classes``): where does the model find evidence for it
in photos that do not show it?

A class's maps on its own photos say what the model looks at when the class is there. Its maps on the
*other* classes' photos say what in any photo pulls the model towards it: a watermark, a border, a
texture the model learnt with the class shows up there at the same place whatever the photo shows. For
each followed class the audit takes its map on every photo (one more target in the same batched pass:
one backward per batch) and judges the maps on the other classes' photos with the same rules as a
class's own maps as a whole are judged (:func:`~gradcam.audits.findings.flags`, ``agreement``; see
:func:`followed_agreement`): around the mean of the same photos' runner-up maps (maps of another class the
photo does not show), the followed class's maps agree across the photos by at least ``FLAG_AGREEMENT``,
and by ``AGREEMENT_MARGIN`` more than the runner-up maps agree among themselves (photos whose runner-up
is the followed class itself are left out of both).

The region rules (corner, border, fixed place) are reported but flag nothing here: where a class is
absent its map is what weak gradient is left, and that often sits on the border. Measured on the
planted corner model's clean photos: "cat" and "coffee" had 50% of their energy in one corner and 80% on
the border on photos of other classes, and removing that region changed nothing.

A flagged class gets the experiments (:mod:`~gradcam.audits.experiments`) on those photos: the region
is removed from the photos where the class is most probable, and pasted onto those where it is least.

Example:
    >>> result = gradcam.audit("photos/", truth="photos/", classes=["stamped"])    # doctest: +SKIP
    >>> result.report["followed"][0]["reasons"]
    ["its maps agree across 120 different photos: 81% of their variation is shared (around x 0.81, ..."]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..pipeline.naming import label_of
from .engine import Columns, Measured
from .findings import _NO_REGIONS, FIXED_RADIUS, MIN_FLAG_SIZE, _class, _grid_list, _number, agreement_figures, flags
from .measure import CORNERS, agreement, energy_shares, peak_of

STRONGEST = 6  # photos of other classes listed per followed class, the most probable for it first
MAX_FOLLOWED = 32  # classes one audit follows: each costs one more backward pass per batch
FOLLOW_MEMORY = 2**30  # bytes of followed maps kept (16 x 16 float16 grids: 512 bytes a photo per class)


def follow_budget(photos: int, classes: int, grid: int = 16) -> str | None:
    """Why following ``classes`` over ``photos`` is refused (one line), or None when it is within the time
    (:data:`MAX_FOLLOWED`) and memory (:data:`FOLLOW_MEMORY`) budget."""
    if classes > MAX_FOLLOWED:
        return (
            f"{classes} classes: at most {MAX_FOLLOWED} are followed in one audit (each is one more backward pass "
            "per batch); name the classes, or give --truth so that 'all' means the dataset's classes"
        )
    needed = photos * classes * grid * grid * 2
    if needed > FOLLOW_MEMORY:
        return (f"{classes} classes over {photos} photos would keep {needed / 2**30:.1f} GiB of maps (at most "
                f"{FOLLOW_MEMORY / 2**30:.0f} GiB): follow fewer classes or audit fewer photos at a time")  # fmt: skip
    return None


def usable_maps(grids: np.ndarray) -> torch.Tensor:
    """``grids`` as float32 without the empty maps."""
    maps = torch.from_numpy(grids.astype(np.float32))
    return maps[maps.flatten(1).sum(1) > 0]


def control_maps(view: Columns, rows: np.ndarray, index: int) -> np.ndarray:
    """The runner-up maps of ``rows`` (photos of other classes) whose runner-up is not followed class
    ``index`` itself (that map is the followed map: no control of itself)."""
    return view.control_grids[rows[view.control[rows] != index]]


def followed_centre(own_maps: np.ndarray, runner_up_maps: np.ndarray) -> torch.Tensor:
    """What a followed class's maps on other classes' photos are measured around: the mean of the same
    photos' runner-up maps (maps of another class the photo does not show: what such maps share, a centre
    bias or a diffuse spread, is no agreement), or, with under ``2 * MIN_FLAG_SIZE`` of them (the followed
    class is the runner-up of most photos), the mean of the photos' own classes' maps."""
    return _centre(usable_maps(runner_up_maps), own_maps)


def _centre(control: torch.Tensor, own_maps: np.ndarray) -> torch.Tensor:
    if len(control) >= 2 * MIN_FLAG_SIZE:
        return control.mean(0)
    own = usable_maps(own_maps)
    return own.mean(0) if len(own) else torch.zeros(own_maps.shape[-2:])


def followed_agreement(maps: np.ndarray, own_maps: np.ndarray, runner_up_maps: np.ndarray) -> dict[str, Any]:
    """The agreement of a followed class's maps on other classes' photos (``maps``) around
    :func:`followed_centre`, and, as the control, the same photos' runner-up maps' agreement among
    themselves, each half around the other half's mean (cross-fitted: around their own mean the estimate
    is -1/(n-1) whatever the maps); None with under ``2 * MIN_FLAG_SIZE`` runner-up maps."""
    control = usable_maps(runner_up_maps)
    centre = _centre(control, own_maps)
    figures = agreement_figures(maps, maps[:0], centre, centre)
    figures["runner_up_maps"] = None
    if len(control) >= 2 * MIN_FLAG_SIZE:
        first, second = control[0::2], control[1::2]
        halves = [h for h in (agreement(first, second.mean(0)), agreement(second, first.mean(0))) if h is not None]
        figures["runner_up_maps"] = _number(sum(halves) / len(halves)) if halves else None
    return figures


def followed_entries(measured: Measured, followed: Sequence[int], labels: Any) -> list[dict[str, Any]]:
    """``audit.json``'s ``followed``: one entry per followed class, in the order asked."""
    return [followed_entry(measured, number, index, labels) for number, index in enumerate(followed)]


def followed_entry(measured: Measured, number: int, index: int, labels: Any) -> dict[str, Any]:
    """The figures of followed class ``index`` (``number``: its place in the followed columns)."""
    view = measured.models[0]
    others = np.nonzero(view.explained != index)[0]
    own = np.nonzero(view.explained == index)[0]
    grids = view.followed_grids[:, number].astype(np.float32)
    probability = view.followed_probability[:, number]
    maps = torch.from_numpy(grids[others])
    full = usable_maps(grids[others])
    mean_map = maps.mean(0) if len(maps) else torch.zeros(grids.shape[-2:])
    entry: dict[str, Any] = {
        "index": index, "name": label_of(labels, index), "photos": len(own), "other_photos": len(others),
        "probability_on_others": _number(probability[others].mean()) if len(others) else None,
        "predicted_on_others": int((view.predicted[others] == index).sum()),
        "mean_map": _grid_list(grids[own].mean(0)) if len(own) else None,
        "others_mean_map": _grid_list(mean_map), "agreement": None, "energy_border": None,
        "energy_corners": {name: None for name in CORNERS}, "peak": None, "peak_consistency": None,
        "flagged": False, "reasons": [], "shortcut_score": 0.0, "evidence": None,
        "strongest": [
            {"key": measured.item(int(r)).key, "path": measured.item(int(r)).path, "map_row": int(r),
             "class": _class(labels, view.explained[r]), "probability": _number(probability[r])}
            for r in others[np.argsort(-probability[others], kind="stable")][:STRONGEST]
        ],
    }  # fmt: skip
    if len(others) < MIN_FLAG_SIZE:
        return entry
    agreed = followed_agreement(grids[others], view.grids[others], control_maps(view, others, index))
    shares = energy_shares(full) if len(full) else None  # reported for reading; the flag is the agreement's
    border = _number(shares.border.mean()) if shares is not None else None
    corners = {name: _number(shares.corners[:, i].mean()) if shares is not None else None
               for i, name in enumerate(CORNERS)}  # fmt: skip
    y, x = peak_of(mean_map[None])[0].tolist()
    consistency = None
    if shares is not None:
        near = torch.hypot(shares.peak[:, 0] - y, shares.peak[:, 1] - x) <= FIXED_RADIUS
        consistency = float(near.float().mean())
    reasons, score = flags(_NO_REGIONS, None, (y, x), agreed)
    entry.update(
        agreement=agreed, energy_border=border, energy_corners=corners,
        peak=[_number(y), _number(x)], peak_consistency=_number(consistency), flagged=bool(reasons),
        reasons=[f"on {len(others)} photos of other classes: {reason}" for reason in reasons],
        shortcut_score=_number(score),
    )  # fmt: skip
    return entry
