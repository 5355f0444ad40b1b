"""What each step of a folder run costs per photo, in CPU milliseconds on one PyTorch thread.

    python bench/bench_steps.py --photos 160 --turns 2

The photos are bench_folder.py's (0.1 to 1 megapixels). Steps: plain inference's decode and preprocessing
(the reduced JPEG decode), ours (full resolution, kept for the overlay), the forward pass under
``torch.inference_mode()``, ``gradcam.explain`` (Grad-CAM at the default layer), and the writer
(``PhotoWriter.prepare`` per batch, ``PhotoWriter.write`` per photo: overlay, thumbnail, record). Each is
timed with ``time.process_time`` (the process's CPU time), the best of ``--turns``. On a machine whose
cores all run this work, plain inference can go at most (its steps) / (ours) as fast as ``gradcam explain``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

import gradcam
from bench_folder import PlainDataset, make_folder, source_photos
from gradcam.io.models import load_model
from gradcam.pipeline.decode import PhotoDataset
from gradcam.pipeline.local import BatchExplainer
from gradcam.pipeline.options import RunOptions
from gradcam.pipeline.writer import PhotoWriter, PreparedMaps


def cpu_ms(run: Callable[[], object], photos: int) -> float:
    start = time.process_time()
    run()
    return (time.process_time() - start) / photos * 1000


def one_turn(
    paths: list[Path], plain: PlainDataset, ours: PhotoDataset, writer: PhotoWriter, batch: int, turn: int
) -> dict[str, float]:
    model = load_model().model
    count = len(paths)
    costs = {"plain decode + preprocess": cpu_ms(lambda: [plain[i] for i in range(count)], count)}
    items = [ours[i] for i in range(count)]
    costs["our decode + preprocess"] = cpu_ms(lambda: [ours[i] for i in range(count)], count)
    batches = [items[i : i + batch] for i in range(0, count, batch)]
    inputs = [torch.stack([item.input for item in chunk]) for chunk in batches]

    def forward() -> None:
        with torch.inference_mode():
            for x in inputs:
                model(x)

    costs["forward pass (inference_mode)"] = cpu_ms(forward, count)
    explained: list[gradcam.Explanation] = []
    costs["gradcam.explain"] = cpu_ms(lambda: explained.extend(gradcam.explain(model, x) for x in inputs), count)
    prepared: list[PreparedMaps] = []
    costs["PhotoWriter.prepare"] = cpu_ms(lambda: prepared.extend(writer.prepare(ex) for ex in explained), count)

    def write() -> None:
        for b, (chunk, ex) in enumerate(zip(batches, explained, strict=True)):
            for row, item in enumerate(chunk):
                writer.write(str(paths[item.index]), f"t{turn}/{b}-{row}", item, ex, row, prepared=prepared[b])

    costs["PhotoWriter.write"] = cpu_ms(write, count)
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=160)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--turns", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    bundle = load_model()
    turns = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_folder(Path(tmp), args.photos, source_photos(Path(tmp), (0.1, 1.0)))
        paths = sorted(folder.rglob("*.jpg"))
        options = RunOptions(out=Path(tmp) / "out", batch_size=args.batch, workers=0, overwrite=True)
        plain, ours = (
            PlainDataset(paths, bundle.preprocessing),
            PhotoDataset(paths, bundle.preprocessing, options.max_megapixels, options.max_side, options.frame),
        )
        writer = PhotoWriter(BatchExplainer(bundle, options).write_options(), bundle.labels)
        turns = [one_turn(paths, plain, ours, writer, args.batch, turn) for turn in range(args.turns)]
    best = {name: min(turn[name] for turn in turns) for name in turns[0]}
    print(f"{args.photos} photos of 0.1 to 1 megapixels, batch {args.batch}, one PyTorch thread, best of {args.turns}")
    print("| step | CPU ms per photo |\n|---|---:|")
    for name, value in best.items():
        print(f"| {name} | {value:.1f} |")
    plain_total = best["plain decode + preprocess"] + best["forward pass (inference_mode)"]
    ours_total = sum(
        best[name] for name in best if name not in ("plain decode + preprocess", "forward pass (inference_mode)")
    )
    print(f"| plain inference, all steps | {plain_total:.1f} |\n| gradcam explain, all steps | {ours_total:.1f} |")
    print(f"at most {plain_total / ours_total:.2f} of plain inference laid out the same way")


if __name__ == "__main__":
    main()
