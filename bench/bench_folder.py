"""A folder of photos through `gradcam explain` vs batched plain inference, and peak memory vs folder size.

    python bench/bench_folder.py --counts 1000 10000 --batch 16 --workers 2
    python bench/bench_folder.py --counts 1000 10000 --batch 64 --workers 8 --device cuda

For each count: a folder of that many JPEGs (20 distinct photos of 0.1 to 1 megapixels made from
scikit-image's public-domain photos, at quality 90, copied round; ``--megapixels 12`` for phone-sized
photos instead), then
1. plain inference: the same DataLoader decoding and preprocessing, the model's forward pass under
   ``torch.inference_mode()``, nothing written (images per second);
2. plain inference laid out as ``gradcam explain`` lays out a CPU run: one copy of the model per PyTorch
   thread, each in its own thread with one PyTorch thread, decoding its own batches (on a GPU the same
   as 1, and skipped);
3. ``gradcam explain`` on the folder in a child process, writing overlays, maps and the manifest
   (images per second, and the child's peak RSS including its decoding workers).
The ratios are 3 / 1 and 3 / 2.
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
from torch.utils.data import DataLoader, Dataset

from gradcam.io.images import DEFAULT_MAX_MEGAPIXELS, preprocess, read_image
from gradcam.io.models import Preprocessing, load_model
from gradcam.pipeline.replicas import batch_ranges, explain_side_by_side, replica_count, replicate, torch_threads


def source_photos(root: Path, megapixels: tuple[float, float], count: int = 20) -> list[Path]:
    """``count`` JPEGs of ``megapixels`` (low, high) each, from scikit-image's photos, sizes drawn at random."""
    import random

    import skimage.data
    from PIL import Image

    rng = random.Random(0)
    names = ("chelsea", "coffee", "astronaut", "rocket", "camera")
    photos = [Image.fromarray(getattr(skimage.data, name)()).convert("RGB") for name in names]
    made = []
    for i in range(count):
        photo = photos[i % len(photos)]
        area = rng.uniform(*megapixels) * 1e6
        height = int((area * photo.height / photo.width) ** 0.5)
        width = int(height * photo.width / photo.height)
        path = root / f"source{i:02d}.jpg"
        photo.resize((width, height), Image.Resampling.BICUBIC).save(path, quality=90)
        made.append(path)
    return made


def make_folder(root: Path, count: int, sources: list[Path]) -> Path:
    folder = root / f"photos{count}"
    folder.mkdir()
    for i in range(count):
        sub = folder / f"{i // 1000:03d}"
        sub.mkdir(exist_ok=True)
        shutil.copy(sources[i % len(sources)], sub / f"img{i:06d}.jpg")
    return folder


class PlainDataset(Dataset):
    """Plain inference's input: the same reader, with the JPEG decoder's reduced decode where the photo is
    at least twice the model's resize (what a classifier alone would do), and the same preprocessing."""

    def __init__(self, paths: list[Path], spec: Preprocessing) -> None:
        self.paths, self.spec = paths, spec

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = read_image(self.paths[index], draft_size=self.spec.resize, max_megapixels=DEFAULT_MAX_MEGAPIXELS)
        return preprocess(image, self.spec)[0]


def plain_inference(folder: Path, batch: int, workers: int, device: str) -> float:
    bundle = load_model(device=device)
    paths = sorted(folder.rglob("*.jpg"))
    dataset = PlainDataset(paths, bundle.preprocessing)
    loader = DataLoader(dataset, batch_size=batch, num_workers=workers)
    start = time.perf_counter()
    with torch.inference_mode():
        for inputs in loader:
            bundle.model(inputs.to(device)).cpu()  # the result, on the host
    return len(paths) / (time.perf_counter() - start)


def plain_side_by_side(folder: Path, batch: int) -> float:
    """Plain inference with ``gradcam explain``'s CPU layout (see the module's docstring)."""
    bundle = load_model()
    model = bundle.model
    paths = sorted(folder.rglob("*.jpg"))
    dataset = PlainDataset(paths, bundle.preprocessing)
    batches = iter(batch_ranges(len(paths), batch))
    models = replicate(model, replica_count(model, "cpu", None))

    def replica(copy: torch.nn.Module):
        def forward(indices: range):
            with torch.inference_mode():
                copy(torch.stack([dataset[i] for i in indices]))
            return lambda: None

        return forward

    start = time.perf_counter()
    with torch_threads(max(1, torch.get_num_threads() // len(models))):
        explain_side_by_side(lambda: next(batches, None), [replica(m) for m in models], tick=lambda: None)
    return len(paths) / (time.perf_counter() - start)


def explain_child(
    folder: Path, out: Path, batch: int, workers: int, device: str, extra: list[str]
) -> tuple[float, float]:
    command = [sys.executable, "-m", "gradcam", "explain", str(folder), "--out", str(out), "--quiet",
               "--batch-size", str(batch), "--workers", str(workers), "--device", device, *extra]  # fmt: skip
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
    parser.add_argument("--megapixels", type=float, nargs=2, default=[0.1, 1.0], metavar=("LOW", "HIGH"))
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more `gradcam explain` options")
    args = parser.parse_args()
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    low, high = args.megapixels
    extra = " ".join(args.extra) or "defaults"
    print(f"efficientnet_lite0 on {where}, batch {args.batch}, {args.workers} decoding workers, {os.cpu_count()} "
          f"cores, photos of {low:g} to {high:g} megapixels, explain options: {extra}")  # fmt: skip
    print(
        "| images | plain inference (img/s) | plain, side by side (img/s) | gradcam explain (img/s) | ratio "
        "| ratio to side by side | peak RSS of explain (MB) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        sources = source_photos(Path(tmp), (args.megapixels[0], args.megapixels[1]))
        for count in args.counts:
            folder = make_folder(Path(tmp), count, sources)
            plain = plain_inference(folder, args.batch, args.workers, args.device)
            side = plain_side_by_side(folder, args.batch) if args.device == "cpu" else plain
            out = Path(tmp) / f"out{count}"
            ours, rss = explain_child(folder, out, args.batch, args.workers, args.device, args.extra)
            print(
                f"| {count} | {plain:.1f} | {side:.1f} | {ours:.1f} | {ours / plain:.2f} | {ours / side:.2f} "
                f"| {rss:.0f} |",
                flush=True,
            )
            shutil.rmtree(folder)
            shutil.rmtree(Path(tmp) / f"out{count}")


if __name__ == "__main__":
    main()
