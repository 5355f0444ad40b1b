"""LeGrad against torchcam's LeGrad and a plain forward pass, in one run (turn about).

    python bench/bench_legrad.py --batch 4 --repeats 7
    python bench/bench_legrad.py --batch 32 --repeats 10 --device cuda

torchvision ViT-B/16 at 224 px (random weights, its head drawn at random: torchvision starts it at zero),
the last 4 blocks for both, one class per image. Ours: one forward pass, then per block and target one
backward pass through that block and the head to the attention's output (``dS/dA = (dS/do) V^T``).
torchcam's: per-head attention probabilities requested from every chosen block and replayed, then the same
backward passes. Prints the medians and the ratios to the forward pass, and the maps' agreement.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torchvision

sys.path.insert(0, str(Path(__file__).parent))
import gradcam  # noqa: E402
from bench_core import interleaved_medians  # noqa: E402
from gradcam.result import normalise, upsample  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16().eval().to(args.device)
    torch.nn.init.normal_(model.heads.head.weight, std=0.05)
    x = torch.randn(args.batch, 3, 224, 224, device=args.device)
    classes = [int(c) for c in torch.randint(0, 1000, (args.batch,))]
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    def forward() -> object:
        with torch.no_grad():
            return model(x)

    runs = {"forward": forward, "ours": lambda: gradcam.explain(model, x, "legrad", targets=classes)}
    try:
        from torchcam.methods import LeGrad

        def theirs() -> torch.Tensor:
            with LeGrad(model, list(model.encoder.layers)[-4:]) as cam:
                return cam(classes, model(x))[0]

        runs["torchcam"] = theirs
    except ImportError:
        print("torchcam is not installed: only ours")
    medians = interleaved_medians(runs, args.repeats, sync)
    base = medians["forward"]
    print(f"ViT-B/16, batch {args.batch}, {args.device}, median of {args.repeats}")
    print("| run | seconds | x forward |")
    print("|---|---:|---:|")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds:.3f} | {seconds / base:.2f} |")
    if "torchcam" in runs:
        ours = gradcam.explain(model, x, "legrad", targets=classes).maps[:, 0].cpu()
        reference = normalise(upsample(runs["torchcam"]()[:, None].float(), (224, 224)))[:, 0].cpu()
        r = min(np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(ours.numpy(), reference.numpy(), strict=True))
        print(f"lowest correlation of the maps with torchcam's: {r:.6f}")


if __name__ == "__main__":
    main()
