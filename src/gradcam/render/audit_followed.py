"""The audit page's "Followed classes" section (``gradcam audit --classes``): for each followed class, its
mean map on photos of other classes, the photos where the model finds most evidence for it, the flags and
the experiment that tests them. Every name is escaped."""

from __future__ import annotations

from collections.abc import Callable
from html import escape
from typing import Any

from .audit_parts import figure, photos, share


def followed_section(entries: list[dict[str, Any]], pictures: Any, evidence: Callable[..., str]) -> str:
    """``entries``: ``audit.json``'s ``followed``; ``evidence(entry, pictures, followed=True)`` draws an
    experiment as on a class page."""
    if not entries:
        return ""
    cards = []
    for number, entry in enumerate(entries):
        agreed = entry["agreement"]
        facts = (f"{photos(entry['other_photos'])} of other classes: mean probability "
                 f"{share(entry['probability_on_others'])}, predicted as {entry['name']} on "
                 f"{photos(entry['predicted_on_others'])}; {photos(entry['photos'])} of the class itself")  # fmt: skip
        if agreed is not None and agreed["maps"] is not None:
            control = agreed["runner_up_maps"]
            facts += f"; its maps there agree {share(agreed['maps'])} across the photos " + (
                f"(the same photos' runner-up maps among themselves: {share(control)})" if control is not None else
                "(no control: it is itself the runner-up class of most of these photos)")  # fmt: skip
        strongest = "".join(
            figure(
                pictures.photo(p["key"], f"followed:{number}"),
                f"{p['key']} ({p['class']['label']}): {share(p['probability'])}",
                f"map of {entry['name']} on {p['key']}",
            )
            for p in entry["strongest"]
        )
        means = figure(pictures.file(entry["others_picture"]), "its mean map on other classes' photos")
        if entry.get("picture"):
            means = figure(pictures.file(entry["picture"]), "its mean map on its own photos") + means
        reasons = "".join(f"<p class=reason>{escape(r)}</p>" for r in entry["reasons"])
        flagged = " flagged" if entry["flagged"] else ""
        cards.append(
            f'<div class="card{flagged}" id="followed-{entry["index"]}"><h3>{escape(entry["name"])} '
            f"(class {entry['index']}) on every photo</h3><p class=muted>{escape(facts)}</p>{reasons}"
            f"{evidence(entry, pictures, followed=True)}<div class=row>{means}</div>"
            f"<p class=muted>Photos of other classes where the model finds the most evidence for "
            f"{escape(entry['name'])} (its probability):</p><div class=row>{strongest}</div></div>"
        )  # fmt: skip
    return (
        "<h2 id=followed>Followed classes</h2><p class=muted>Each followed class's map on every photo: where the "
        "model finds evidence for it in photos that do not show it. Flagged when those maps agree across the "
        "photos far more than the same photos' maps for their runner-up class, or sit in a corner, on the border or "
        f"at one fixed off-centre place.</p>{''.join(cards)}"
    )
