"""#27 item 9: `gradcam evaluate` ends with a verdict (which method, why, how sure), says which metrics cannot
separate the methods, and estimates its run time before it starts."""

from __future__ import annotations

import json
from pathlib import Path

from gradcam.apps.cli import main
from gradcam.apps.recommend import recommend

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"  # the repository's: photos and their boxes


def _rows(values: dict[str, list[tuple[float, float]]], pointing: float | None = None) -> list[dict]:
    """Rows of (deletion, insertion) per photo for each method."""
    rows = []
    for method, per_photo in values.items():
        for number, (deletion, insertion) in enumerate(per_photo):
            row = {"method": method, "layer": "bn2", "key": f"{method} @ bn2", "image": f"p{number}.jpg",
                   "deletion_auc": deletion, "insertion_auc": insertion}  # fmt: skip
            if pointing is not None:
                row["pointing"] = pointing
            rows.append(row)
    return rows


def _summary(methods: list[str], failed: tuple[str, ...] = ()) -> list[dict]:
    return [{"method": m, "layer": "bn2", "sanity_passed": False if m in failed else None} for m in methods]


def test_the_verdict_by_hand():
    # a: best on both metrics on every photo; b: second; c: worst. Ranks by hand: a 1, b 2, c 3.
    values = {"a": [(0.1, 0.9)] * 12, "b": [(0.2, 0.8)] * 12, "c": [(0.3, 0.7)] * 12}
    verdict = recommend(_rows(values, pointing=100.0), _summary(list(values)))
    assert verdict["recommended"] == "a @ bn2" and verdict["bootstrap_first"] == 1.0
    assert verdict["mean_rank"] == {"a @ bn2": 1.0, "b @ bn2": 2.0, "c @ bn2": 3.0}
    assert verdict["metrics"] == ["deletion_auc", "insertion_auc"] and verdict["inseparable"] == ["pointing"]
    assert "pointing game: every method scores the same here, so it cannot separate them" in verdict["text"]
    assert "weak evidence" not in verdict["text"]  # 12 photos


def test_a_split_verdict_says_how_unsure_it_is_and_few_photos_are_weak_evidence():
    # a wins two photos, b wins the third: a is recommended, but far from every resample agrees
    values = {"a": [(0.1, 0.9), (0.1, 0.9), (0.5, 0.5)], "b": [(0.2, 0.8), (0.2, 0.8), (0.1, 0.9)]}
    verdict = recommend(_rows(values), _summary(list(values)))
    assert verdict["recommended"] == "a @ bn2" and 0.5 < verdict["bootstrap_first"] < 1.0
    # per-photo ranks of a: 1, 1, 2 -> mean 4/3, spread sqrt(2/9)
    assert abs(verdict["mean_rank"]["a @ bn2"] - 4 / 3) < 1e-3 and abs(verdict["spread"]["a @ bn2"] - 0.471) < 1e-3
    assert "3 photos are weak evidence" in verdict["text"]


def test_a_random_baseline_and_a_failed_sanity_check_are_never_recommended():
    values = {"randomcam": [(0.0, 1.0)] * 4, "bad": [(0.05, 0.95)] * 4, "good": [(0.3, 0.6)] * 4}
    verdict = recommend(_rows(values), _summary(list(values), failed=("bad",)))
    assert verdict["recommended"] == "good @ bn2" and "Not eligible: randomcam @ bn2, bad @ bn2" in verdict["text"]
    assert recommend(_rows({"a": [(0.1, 0.9)]}), _summary(["a"]))["text"].startswith("No recommendation")


def test_evaluate_estimates_its_time_and_ends_with_a_verdict(tmp_path, capsys):
    out = tmp_path / "ev"
    argv = ["evaluate", str(EXAMPLES / "chelsea.jpg"), str(EXAMPLES / "coffee.jpg"), "--methods",
            "gradcam,layercam,randomcam", "--steps", "4", "--boxes", str(EXAMPLES / "boxes.json"),
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    estimate = captured.out.splitlines()[0]  # said before the run starts
    assert estimate.startswith("about ") and "2 photos x 3 methods x 1 layer" in estimate
    assert "Recommended: " in captured.out and "Not eligible: randomcam" in captured.out
    verdict = json.loads((out / "results.json").read_text())["verdict"]
    assert verdict["recommended"] in ("gradcam @ bn2", "layercam @ bn2") and verdict["photos"] == 2
    assert "pointing" in verdict["inseparable"]  # the cat's box covers most of the photo: 100% for every method
    assert "## Verdict" in (out / "report.md").read_text() and "<h2>Verdict</h2>" in (out / "report.html").read_text()
