"""The Ray engine on a local instance against the local engine, on the same folder.

    python bench/bench_ray.py --images 500 --actors 2

Both run as `gradcam explain` child processes (start-up, model loading and writing included), on a
folder of copies of the example photos, with the embedded model. The Ray run starts its own local
instance with this machine's CPUs.
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

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--cpus-per-actor", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        sources = sorted(EXAMPLES.glob("*.jpg"))
        for i in range(args.images):
            shutil.copy(sources[i % len(sources)], folder / f"img{i:06d}.jpg")
        base = [sys.executable, "-m", "gradcam", "explain", str(folder), "--quiet", "--batch-size", str(args.batch)]
        local = timed([*base, "--out", str(Path(tmp) / "local"), "--workers", "2"])
        distributed = timed([*base, "--out", str(Path(tmp) / "ray"), "--engine", "ray", "--actors", str(args.actors),
                             "--cpus-per-actor", str(args.cpus_per_actor)])  # fmt: skip
    print(f"{args.images} images, efficientnet_lite0, batch {args.batch}, {os.cpu_count()} cores; "
          f"Ray: local instance, {args.actors} actors x {args.cpus_per_actor} CPU, 1 torch thread each")  # fmt: skip
    print("| engine | seconds | images / s | vs local |")
    print("|---|---:|---:|---:|")
    print(f"| local (2 decoding workers) | {local:.1f} | {args.images / local:.1f} | 1.00 |")
    print(f"| ray | {distributed:.1f} | {args.images / distributed:.1f} | {local / distributed:.2f} |")


if __name__ == "__main__":
    main()
