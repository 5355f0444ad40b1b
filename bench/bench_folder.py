"""A folder of photos through `gradcam explain` vs batched plain inference, and peak memory vs folder size.

    python bench/bench_folder.py --counts 1000 10000 --batch 16 --workers 2
    python bench/bench_folder.py --counts 1000 10000 --batch 64 --workers 8 --device cuda

For each count: a folder of that many JPEGs (copies of the example photos), then
1. plain inference: the same DataLoader decoding and preprocessing, the model's forward pass under
   ``torch.inference_mode()``, nothing written (images per second);
2. ``gradcam explain`` on the folder in a child process, writing overlays, maps and the manifest
   (images per second, and the child's peak RSS including its decoding workers).
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

import torch
from torch.utils.data import DataLoader

from gradcam.images import DEFAULT_MAX_MEGAPIXELS
from gradcam.models import load_model
from gradcam.runner import PhotoDataset, RunOptions

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def make_folder(root: Path, count: int) -> Path:
    folder = root / f"photos{count}"
    folder.mkdir()
    sources = sorted(EXAMPLES.glob("*.jpg"))
    for i in range(count):
        sub = folder / f"{i // 1000:03d}"
        sub.mkdir(exist_ok=True)
        shutil.copy(sources[i % len(sources)], sub / f"img{i:06d}.jpg")
    return folder


def plain_inference(folder: Path, batch: int, workers: int, device: str) -> float:
    bundle = load_model(device=device)
    paths = sorted(folder.rglob("*.jpg"))
    dataset = PhotoDataset(
        paths, bundle.preprocessing, RunOptions(out=Path("."), max_megapixels=DEFAULT_MAX_MEGAPIXELS)
    )
    loader = DataLoader(dataset, batch_size=batch, num_workers=workers, collate_fn=lambda x: x)
    start = time.perf_counter()
    with torch.inference_mode():
        for items in loader:
            bundle.model(torch.stack([item["input"] for item in items]).to(device)).cpu()  # the result, on the host
    return len(paths) / (time.perf_counter() - start)


def explain_child(folder: Path, out: Path, batch: int, workers: int, device: str) -> tuple[float, float]:
    command = [sys.executable, "-m", "gradcam", "explain", str(folder), "--out", str(out), "--quiet",
               "--batch-size", str(batch), "--workers", str(workers), "--device", device]  # fmt: skip
    start = time.perf_counter()
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"gradcam explain failed with {status}")
    count = sum(1 for _ in folder.rglob("*.jpg"))
    return count / seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"efficientnet_lite0 on {where}, batch {args.batch}, {args.workers} decoding workers, {os.cpu_count()} cores")
    print("| images | plain inference (img/s) | gradcam explain (img/s) | ratio | peak RSS of explain (MB) |")
    print("|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for count in args.counts:
            folder = make_folder(Path(tmp), count)
            plain = plain_inference(folder, args.batch, args.workers, args.device)
            ours, rss = explain_child(folder, Path(tmp) / f"out{count}", args.batch, args.workers, args.device)
            print(f"| {count} | {plain:.1f} | {ours:.1f} | {ours / plain:.2f} | {rss:.0f} |", flush=True)
            shutil.rmtree(folder)
            shutil.rmtree(Path(tmp) / f"out{count}")


if __name__ == "__main__":
    main()
