"""The planted suite (#28 item 6): every kind of ``scripts/shortcut_demo.py`` (marks of different shapes,
sizes, opacities and places, a stripe, a colour cast, and a clean dataset), each with its own head trained
on the embedded model, audited with the experiments asked for on the planted class; prints the markdown
table that docs/audit.md records (flag rate on the planted class, false flags on the clean classes).

    python scripts/shortcut_suite.py OUT_DIR [--per-class 24] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import shortcut_demo as demo  # noqa: E402


def run_kind(folder: Path, kind: str, seed: int, per_class: int) -> dict:
    import gradcam

    if not (folder / "head.pt").exists():
        folder.mkdir(parents=True, exist_ok=True)
        photos = demo.build_dataset(folder, per_class, seed, kind)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            demo.train_head(photos, folder)
    photos = folder / "photos"
    result = gradcam.audit(photos, "efficientnet_lite0", weights=str(folder / "head.pt"), labels=folder / "labels.txt",
                           truth=photos, out=folder / "audit", overwrite=True, prove=[demo.SHORTCUT])  # fmt: skip
    classes = {entry["name"]: entry for entry in result.classes}
    planted = classes[demo.SHORTCUT]
    clean = [entry for name, entry in classes.items() if name != demo.SHORTCUT or kind == "clean"]
    return {"kind": kind, "seed": seed, "planted": planted, "false_flags": sum(e["flagged"] for e in clean),
            "clean": len(clean)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-class", type=int, default=24)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--kinds", nargs="+", default=list(demo.KINDS), choices=list(demo.KINDS))
    args = parser.parse_args(argv)
    print(
        "| kind | tuned on? | seed | planted class flagged | agreement (runner-up) | removing it: drop "
        "(random region) | pasting it: gain (random) | confirmed | clean classes flagged |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for kind in args.kinds:
        for seed in args.seeds:
            row = run_kind(args.out / f"{kind}-{seed}", kind, seed, args.per_class)
            p, e = row["planted"], row["planted"]["evidence"] or {}
            agreed = p["agreement"] or {}
            planted = "(none planted)" if kind == "clean" else ("yes" if p["flagged"] else "no")

            def two(a: object, b: object, percent: bool) -> str:
                if a is None:
                    return "-"
                return f"{a:.0%} ({b:.0%})" if percent else f"{a:+.2f} ({b:+.2f})"

            print(
                f"| {kind} | {'held out' if kind in demo.HELD_OUT else 'yes'} | {seed} | {planted} | "
                f"{agreed.get('maps')} ({agreed.get('runner_up_maps')}) | "
                f"{two(e.get('occlusion_drop'), e.get('occlusion_drop_random'), True)} | "
                f"{two(e.get('transplant_gain'), e.get('transplant_gain_random'), False)} | "
                f"{'yes' if e.get('confirmed') else 'no'} | {row['false_flags']} of {row['clean']} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
