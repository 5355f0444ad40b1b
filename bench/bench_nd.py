"""Signals, volumes and clips: Grad-CAM's cost against the model's plain forward pass, and a long video's
peak memory (issue 14).

    python bench/bench_nd.py                 # the cost table
    python bench/bench_nd.py --video 100 2000   # peak RSS of `gradcam explain VIDEO` at two lengths

Each cost row: median seconds of a plain forward pass under ``torch.inference_mode()`` and of
``gradcam.explain(model, x, "gradcam")`` (the layer found automatically), in one run.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import gradcam


def interleaved(first, second, repeats: int) -> tuple[float, float, float]:
    """Median seconds of each of two functions timed turn about, and the median of the per-turn ratios
    (second / first): a slow spell of the machine hits both sides of a turn, so the ratio stays honest on a
    noisy, shared CPU."""
    first(), second()
    a, b, ratios = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        first()
        middle = time.perf_counter()
        second()
        end = time.perf_counter()
        a.append(middle - start)
        b.append(end - middle)
        ratios.append((end - middle) / (middle - start))
    return statistics.median(a), statistics.median(b), statistics.median(ratios)


def median_seconds(function, repeats: int) -> float:
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def signal_model() -> nn.Module:
    """A 1-D CNN on 12-lead, 5,000-sample signals (an ECG classifier's shape)."""
    layers: list[nn.Module] = []
    channels = 12
    for width in (32, 64, 128, 128):
        layers += [nn.Conv1d(channels, width, 7, stride=2, padding=3), nn.BatchNorm1d(width), nn.ReLU()]
        channels = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(channels, 5)).eval()


class _EcgBlock(nn.Module):
    """A residual block of the ECG ResNet (Ribeiro et al., Nature Communications 2020): two convolutions
    of kernel 17, the second with stride 4; the skip path max-pooled and projected to the new width."""

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(channels, width, 17, padding=8, bias=False)
        self.bn1 = nn.BatchNorm1d(width)
        self.conv2 = nn.Conv1d(width, width, 17, stride=4, padding=8, bias=False)
        self.bn2 = nn.BatchNorm1d(width)
        self.skip = nn.Sequential(nn.MaxPool1d(4), nn.Conv1d(channels, width, 1, bias=False))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.act(self.bn1(self.conv1(x))))
        return self.act(self.bn2(y + self.skip(x)))


def ecg_resnet() -> nn.Module:
    """An ECG classifier of the published shape (Ribeiro et al. 2020: 12 leads, 4,096 samples, a first
    convolution of 64 filters and four residual blocks of 128, 196, 256 and 320): 6 classes, random weights."""
    blocks: list[nn.Module] = [nn.Conv1d(12, 64, 17, padding=8, bias=False), nn.BatchNorm1d(64), nn.ReLU()]
    channels = 64
    for width in (128, 196, 256, 320):
        blocks.append(_EcgBlock(channels, width))
        channels = width
    return nn.Sequential(*blocks, nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(channels, 6)).eval()


def volume_model() -> nn.Module:
    """A 3-D CNN on 96^3 volumes (a CT classifier's shape: two convolutions per stage, 4 stages)."""
    layers: list[nn.Module] = []
    channels = 1
    for width in (16, 32, 64, 128):
        layers += [nn.Conv3d(channels, width, 3, stride=2, padding=1), nn.BatchNorm3d(width), nn.ReLU()]
        layers += [nn.Conv3d(width, width, 3, padding=1), nn.BatchNorm3d(width), nn.ReLU()]
        channels = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(channels, 2)).eval()


def cost_table(repeats: int, only: list[str] | None = None) -> None:
    import torchvision

    torch.manual_seed(0)
    cases = [
        ("signal (8, 12, 5000)", signal_model(), torch.randn(8, 12, 5000)),
        ("signal, ECG ResNet (8, 12, 4096)", ecg_resnet(), torch.randn(8, 12, 4096)),
        ("volume (1, 1, 96, 96, 96)", volume_model(), torch.randn(1, 1, 96, 96, 96)),
        ("r3d_18 clip (1, 3, 16, 112, 112)", torchvision.models.video.r3d_18().eval(), torch.randn(1, 3, 16, 112, 112)),
        ("efficientnet_lite0 frames (16, 3, 224, 224)", gradcam.load_model().model, torch.randn(16, 3, 224, 224)),
    ]
    print(f"CPU, {torch.get_num_threads()} threads, median of {repeats}")
    print("| input | layer | forward (s) | Grad-CAM (s) | ratio (median of turns) |")
    print("|---|---|---:|---:|---:|")
    for name, model, x in cases:
        if only and not any(word in name for word in only):
            continue

        def forward(model=model, x=x):
            with torch.inference_mode():
                model(x)

        layer = gradcam.explain(model, x[:1]).layer
        plain, ours, ratio = interleaved(
            forward, lambda model=model, x=x, layer=layer: gradcam.explain(model, x, "gradcam", layer), repeats
        )
        print(f"| {name} | {layer} | {plain:.3f} | {ours:.3f} | {ratio:.2f} |", flush=True)


def video_memory(lengths: list[int]) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_video import moving_square

    print("| frames | seconds | frames/s | peak RSS (MB) |")
    print("|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for frames in lengths:
            path = moving_square(Path(tmp) / f"v{frames}.mp4", frames=frames, fps=25)
            out = Path(tmp) / f"out{frames}"
            code = (
                "import resource, sys; from gradcam.apps.cli import main; "
                f"code = main(['explain', {str(path)!r}, '--out', {str(out)!r}, '--quiet']); "
                "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)"
            )
            start = time.perf_counter()
            result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            seconds = time.perf_counter() - start
            peak = int(result.stdout.split()[-1]) / 1024
            print(f"| {frames} | {seconds:.1f} | {frames / seconds:.1f} | {peak:.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--video", type=int, nargs="*", metavar="FRAMES")
    parser.add_argument("--only", nargs="*", metavar="WORD", help="only the inputs whose name has a WORD (signal, ...)")
    args = parser.parse_args()
    if args.video:
        video_memory(args.video)
    else:
        cost_table(args.repeats, args.only)


if __name__ == "__main__":
    main()
