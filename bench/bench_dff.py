"""Deep Feature Factorization against pytorch-grad-cam's and a plain forward pass, in one run (turn about).

    python bench/bench_dff.py --batch 8 --k 5 --repeats 5
    python bench/bench_dff.py --batch 64 --k 5 --repeats 10 --device cuda

ResNet-50 (random weights) at 224 px, ``layer4``, k concepts of the whole batch. Ours: one forward pass
without gradients, NMF by HALS in torch, the votes through the network's tail. pytorch-grad-cam's: its
forward pass, scikit-learn's NMF, each concept map resized to the image, ``fc`` on the concepts.
Prints the medians and the ratios to the forward pass.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).parent))
import gradcam  # noqa: E402
from bench_core import interleaved_medians  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval().to(args.device)
    x = torch.randn(args.batch, 3, 224, 224, device=args.device)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    def forward() -> object:
        with torch.no_grad():
            return model(x)

    runs = {"forward": forward, "ours": lambda: gradcam.concepts(model, x, k=args.k, layer="layer4")}
    try:
        from pytorch_grad_cam import DeepFeatureFactorization

        peer = DeepFeatureFactorization(model=model, target_layer=model.layer4, computation_on_concepts=model.fc)
        runs["pytorch-grad-cam"] = lambda: peer(x, n_components=args.k)
    except ImportError:
        print("pytorch-grad-cam is not installed: only ours")
    medians = interleaved_medians(runs, args.repeats, sync)
    print(f"ResNet-50 layer4, batch {args.batch}, k {args.k}, {args.device}, median of {args.repeats}")
    print("| run | seconds | x forward |")
    print("|---|---:|---:|")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds:.3f} | {seconds / medians['forward']:.2f} |")


if __name__ == "__main__":
    main()
