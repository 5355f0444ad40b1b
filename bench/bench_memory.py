"""Peak RSS over many explain() calls on a small model: it must stay flat.

python bench/bench_memory.py --calls 1000
"""

from __future__ import annotations

import argparse
import resource

import torch
import torchvision

import gradcam


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    checkpoints = {10, 100, args.calls // 2, args.calls}
    print("| calls | peak RSS (MB) |")
    print("|---:|---:|")
    for call in range(1, args.calls + 1):
        gradcam.explain(model, x, "gradcam++", targets="top-3")
        if call in checkpoints:
            print(f"| {call} | {peak_rss_mb():.1f} |")


if __name__ == "__main__":
    main()
