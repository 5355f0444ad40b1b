"""``gradcam evaluate``'s verdict: which method to trust on these photos, why, and how sure that is.

Each photo ranks the methods on every faithfulness metric it has (deletion and insertion AUC, Average Drop,
Increase in Confidence, ROAD; the pointing game where boxes were given); a method's score on a photo is its
mean rank there (1 = best on every metric), and its score overall the mean over photos. The recommendation
is the best overall score, with its reason (the mean rank, the metrics it leads, the per-photo spread) and
its uncertainty: the share of bootstrap resamples of the photos (``RESAMPLES``, seeded) in which the same
method still comes first. A metric on which every method scores the same cannot separate them, and is said
so (the pointing game is 100% for every method, a random map included, when the box covers most of the
photo). Methods that fail the sanity check and the random baseline are never recommended.

Example:
    >>> verdict = recommend(evaluation.rows, evaluation.summary)                      # doctest: +SKIP
    >>> verdict["text"]
    'Recommended: finercam @ bn2 (mean rank 2.1 of 6 over 30 photos, spread 1.2; first in 87% of ...'
"""

from __future__ import annotations

from typing import Any

import torch

# (column, better) for the ranking: the faithfulness metrics (the sanity check decides eligibility instead)
RANKED = (("deletion_auc", "lower"), ("insertion_auc", "higher"), ("average_drop", "lower"),
          ("increase_in_confidence", "higher"), ("road_combined", "higher"), ("pointing", "higher"),
          ("energy_pointing", "higher"))  # fmt: skip
RESAMPLES = 1000
FEW_PHOTOS = 10  # under this many photos, the verdict says it is weak evidence
TITLES = {"deletion_auc": "deletion AUC", "insertion_auc": "insertion AUC", "average_drop": "Average Drop",
          "increase_in_confidence": "Increase in Confidence", "road_combined": "ROAD",
          "pointing": "pointing game", "energy_pointing": "energy pointing game"}  # fmt: skip
BASELINES = ("randomcam",)


def _ranks(values: torch.Tensor, better: str) -> torch.Tensor:
    """Ranks (1 = best) of (photos, methods) values along methods, ties sharing their mean rank."""
    signed = values if better == "lower" else -values
    below = (signed[:, None, :] < signed[:, :, None]).sum(dim=2).float()
    equal = (signed[:, None, :] == signed[:, :, None]).sum(dim=2).float()
    return below + (equal + 1) / 2


def recommend(rows: list[dict[str, Any]], summary: list[dict[str, Any]]) -> dict[str, Any]:
    """The verdict (see the module): ``recommended`` (a method @ layer key or None), ``text`` (one paragraph),
    ``mean_rank`` per key, ``spread`` per key, ``bootstrap_first`` (the share of resamples won),
    ``photos``, ``metrics`` used and ``inseparable`` (metrics on which every method scored the same)."""
    keys = [entry["method"] + " @ " + str(entry["layer"]) for entry in summary]
    row_keys = {entry_key: entry for entry_key, entry in zip(keys, summary, strict=True)}
    photos = sorted({row["image"] for row in rows})
    by = {(row["key"], row["image"]): row for row in rows}
    used, inseparable, per_metric = [], [], []
    for column, better in RANKED:
        if not all(column in by.get((k, p), {}) for k in keys for p in photos):
            continue
        values = torch.tensor([[by[(k, p)][column] for k in keys] for p in photos], dtype=torch.float64)
        if len(keys) > 1 and bool((values.amax(dim=1) - values.amin(dim=1) <= 1e-9).all()):
            inseparable.append(column)
            continue
        used.append(column)
        per_metric.append(_ranks(values, better))
    verdict: dict[str, Any] = {"recommended": None, "photos": len(photos), "metrics": used,
                               "inseparable": inseparable, "mean_rank": {}, "spread": {},
                               "bootstrap_first": None}  # fmt: skip
    cannot = [f"{TITLES[c]}: every method scores the same here, so it cannot separate them" for c in inseparable]
    eligible = [
        i
        for i, k in enumerate(keys)
        if row_keys[k]["method"] not in BASELINES and row_keys[k].get("sanity_passed") is not False
    ]
    if len(keys) < 2 or not per_metric or not eligible or not photos:
        reason = "one method only" if len(keys) < 2 else "no metric separates the methods"
        verdict["text"] = " ".join([f"No recommendation: {reason}.", *[f"{c}." for c in cannot]])
        return verdict
    scores = torch.stack(per_metric).mean(dim=0)  # (photos, methods): the mean rank on each photo
    mean = scores.mean(dim=0)
    spread = scores.std(dim=0, unbiased=False)
    verdict["mean_rank"] = {k: round(float(mean[i]), 3) for i, k in enumerate(keys)}
    verdict["spread"] = {k: round(float(spread[i]), 3) for i, k in enumerate(keys)}
    chosen = torch.tensor(eligible)
    best = eligible[int(mean[chosen].argmin())]
    generator = torch.Generator().manual_seed(0)
    picks = torch.randint(0, len(photos), (RESAMPLES, len(photos)), generator=generator)
    resampled = scores[picks].mean(dim=1)[:, chosen]  # (RESAMPLES, eligible)
    first = float((chosen[resampled.argmin(dim=1)] == best).double().mean())
    verdict["recommended"], verdict["bootstrap_first"] = keys[best], round(first, 3)
    leads = [TITLES[c] for c, ranks in zip(used, per_metric, strict=True)
             if int(ranks.mean(dim=0)[chosen].argmin()) == eligible.index(best)]  # fmt: skip
    runner = sorted(eligible, key=lambda i: float(mean[i]))[1] if len(eligible) > 1 else None
    parts = [
        f"Recommended: {keys[best]}: mean rank {float(mean[best]):.2f} of {len(keys)} over {len(photos)} "
        f"photo{'s' if len(photos) != 1 else ''} (per-photo spread {float(spread[best]):.2f}) on "
        f"{', '.join(TITLES[c] for c in used)}; best on {', '.join(leads) or 'no single metric, but overall'}.",
        f"It comes first in {first:.0%} of {RESAMPLES} bootstrap resamples of the photos"
        + (f"; the next is {keys[runner]} (mean rank {float(mean[runner]):.2f})." if runner is not None else "."),
    ]
    if len(photos) < FEW_PHOTOS:
        parts.append(f"{len(photos)} photo{'s are' if len(photos) != 1 else ' is'} weak evidence: evaluate on "
                     f"{FEW_PHOTOS * 3} or more of your own before trusting the ranking.")  # fmt: skip
    excluded = [k for i, k in enumerate(keys) if i not in eligible]
    if excluded:
        parts.append(f"Not eligible: {', '.join(excluded)} (a random baseline, or failed the sanity check).")
    parts += [f"{c}." for c in cannot]
    verdict["text"] = " ".join(parts)
    return verdict
