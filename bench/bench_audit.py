"""`gradcam audit` vs `gradcam explain` on the same folder, and the audit's peak memory vs folder size.

    python bench/bench_audit.py --counts 1000 10000

For each count: a folder of that many JPEGs of 0.1 to 1 megapixels (bench_folder.py's photos) laid out
as an ImageFolder of five ImageNet classes (so ``--truth`` applies: two backward passes per photo, the
true class's map and the predicted class's), then, each in a child process timed from the outside:
1. ``gradcam explain FOLDER`` with its default outputs (overlays, the manifest, index.html);
2. ``gradcam audit FOLDER --truth FOLDER`` (audit.json, audit.html, maps, the clusters).
Prints images per second, the ratio of the audit's time to explain's (the goal: at most 1.2) and the
audit's peak RSS (the child's, including its decoding workers). With ``--follow K``, a third run follows
the first K classes over every photo (``--classes``) and its time is printed beside the audit's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_folder import source_photos

CLASSES = {"tabby": "chelsea", "espresso": "coffee", "missile": "rocket", "suit": "astronaut", "tripod": "camera"}


def make_image_folder(root: Path, count: int, sources: list[Path]) -> Path:
    """``count`` photos in five class folders; source i goes to class i % 5 (the sources cycle the same way)."""
    folder = root / f"photos{count}"
    names = list(CLASSES)
    for i in range(count):
        sub = folder / names[i % len(names)]
        sub.mkdir(parents=True, exist_ok=True)
        shutil.copy(sources[i % len(sources)], sub / f"img{i:06d}.jpg")
    return folder


def child(arguments: list[str]) -> tuple[float, float]:
    """Seconds and peak RSS (MB) of ``python -m gradcam ARGUMENTS``."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "gradcam", *arguments])
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"gradcam {arguments[0]} failed with {status}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[1000])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-explain", action="store_true", help="only the audit (for the memory rows)")
    parser.add_argument("--follow", type=int, default=0, help="also time an audit following this many classes")
    args = parser.parse_args()
    common = ["--quiet", "--batch-size", str(args.batch), "--workers", str(args.workers), "--device", args.device]
    print(f"efficientnet_lite0, batch {args.batch}, {args.workers} decoding workers, {os.cpu_count()} cores, "
          "photos of 0.1 to 1 megapixels, 5 classes with --truth")  # fmt: skip
    follow = ",".join(list(CLASSES)[: args.follow])
    extra = f" audit --classes {follow} (s) | peak RSS with --classes (MB) |" if follow else ""
    print("| images | gradcam explain (img/s) | gradcam audit (img/s) | audit time / explain time | "
          f"peak RSS of audit (MB) |{extra}")  # fmt: skip
    print("|---:|---:|---:|---:|---:|" + ("---:|---:|" if follow else ""))
    with tempfile.TemporaryDirectory() as tmp:
        sources = source_photos(Path(tmp), (0.1, 1.0), count=len(CLASSES) * 4)
        for count in args.counts:
            folder = make_image_folder(Path(tmp), count, sources)
            explain_seconds = None
            if not args.skip_explain:
                explain_seconds, _ = child(["explain", str(folder), "--out", f"{tmp}/explain{count}", *common])
                shutil.rmtree(f"{tmp}/explain{count}")
            audit_seconds, rss = child(
                ["audit", str(folder), "--truth", str(folder), "--out", f"{tmp}/audit{count}", *common]
            )
            shutil.rmtree(f"{tmp}/audit{count}")
            followed = ""
            if follow:
                arguments = ["audit", str(folder), "--truth", str(folder), "--out", f"{tmp}/follow{count}", *common]
                follow_seconds, follow_rss = child([*arguments, "--classes", follow])
                shutil.rmtree(f"{tmp}/follow{count}")
                followed = f" {follow_seconds:.1f} (audit: {audit_seconds:.1f}) | {follow_rss:.0f} |"
            explain_rate = f"{count / explain_seconds:.1f}" if explain_seconds else "-"
            ratio = f"{audit_seconds / explain_seconds:.2f}" if explain_seconds else "-"
            row = f"| {count} | {explain_rate} | {count / audit_seconds:.1f} | {ratio} | {rss:.0f} |{followed}"
            print(row, flush=True)
            shutil.rmtree(folder)


if __name__ == "__main__":
    main()
