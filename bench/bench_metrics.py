"""Metric costs against the plain forward passes they need, and pytorch-grad-cam's ROAD.

    python bench/bench_metrics.py --images 4 --steps 16

ResNet-18 (random seeded weights), 224 px, CPU, Grad-CAM maps at ``layer4``.
- deletion + insertion: 2 x (steps + 1) perturbed images per image, vs the same number of plain forwards;
- ROAD, MoRF and LeRF at 20/40/60/80%: 8 imputed images per image, vs 8 plain forwards per image;
- pytorch-grad-cam's ``ROADCombined`` on the same maps (its imputation is one sparse solve per image).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torchvision

import gradcam
from gradcam import metrics


def seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(args.images, 3, 224, 224)
    ex = gradcam.explain(model, x, "gradcam", "layer4")
    maps, classes = ex.maps[:, 0], ex.targets[:, 0]

    def plain(count: int) -> Callable[[], object]:
        batch = x.repeat((count + args.images - 1) // args.images, 1, 1, 1)[:count]

        def run() -> None:
            with torch.inference_mode():
                for start in range(0, count, args.batch):
                    model(batch[start : start + args.batch])

        return run

    curve_images = 2 * (args.steps + 1) * args.images
    rows = []
    di = seconds(lambda: metrics.deletion_insertion(model, x, maps, classes, args.steps, args.batch), args.repeats)
    di_plain = seconds(plain(curve_images), args.repeats)
    rows.append((f"deletion + insertion ({curve_images} images)", di, di_plain))
    road = seconds(lambda: metrics.road(model, x, maps, classes, batch_size=args.batch), args.repeats)
    road_plain = seconds(plain(8 * args.images), args.repeats)
    rows.append((f"ROAD MoRF+LeRF 20/40/60/80% ({8 * args.images} images)", road, road_plain))
    try:
        from pytorch_grad_cam.metrics.road import ROADCombined
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

        combined = ROADCombined(percentiles=[20, 40, 60, 80])
        targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in classes]
        theirs = seconds(lambda: combined(x, maps.numpy(), targets, model), 1)
        rows.append(("pytorch-grad-cam ROADCombined (same maps)", theirs, road_plain))
    except ImportError:
        pass
    print(f"ResNet-18, {args.images} images, 224 px, {torch.get_num_threads()} threads, median of {args.repeats}")
    print("| metric | s / image | plain forwards, s / image | ratio |")
    print("|---|---:|---:|---:|")
    for name, ours, base in rows:
        print(f"| {name} | {ours / args.images:.3f} | {base / args.images:.3f} | {ours / base:.2f} |")


if __name__ == "__main__":
    main()
