"""The one caption of a map: what was explained and what its number is, the same on an overlay's legend, a
montage, a signal plot, a contact sheet and the web page.

Example:
    >>> caption("gradcam", "tiger cat", 282, score=11.31, probability=0.94)
    'gradcam: tiger cat (282), logit 11.31, p = 0.94'
    >>> caption("gradcam", "tumour", 1, counterfactual=True, score=0.4, score_name="score")
    'gradcam: against tumour (1), score 0.40'
"""

from __future__ import annotations


def caption(
    method: str,
    label: str | None,
    index: int | None = None,
    *,
    counterfactual: bool = False,
    score: float | None = None,
    score_name: str = "logit",
    probability: float | None = None,
    similarity: bool = False,
) -> str:
    """``METHOD: [against ]LABEL (INDEX)[, logit S[, p = P]]``; with ``similarity`` the score is a cosine
    similarity (image-text prompts, shown without an index)."""
    what = label if label is not None else f"target {index}"
    if index is not None and not similarity and label != str(index):
        what = f"{what} ({index})"
    text = f"{method}: {'against ' if counterfactual else ''}{what}"
    if score is not None:
        text += f", cosine similarity {score:.3f}" if similarity else f", {score_name} {score:.2f}"
    if probability is not None and not similarity:
        text += f", p = {probability:.2f}"
    return text
