"""Every class's map at once (targets="all") against a plain forward pass, in one run.

    python bench/bench_all_classes.py --repeats 5

One 224 px image, random weights: ResNet-50 (`layer4`), the embedded EfficientNet-Lite0 (`bn2`) and VGG-19
(`features.35`, a 3-layer fully connected head). Rows: the plain forward pass, `targets="all"` (1,000
classes: one forward pass and one batched backward per chunk of classes), and, for comparison, the
1,000 classes as 1,000 targets of one call (one backward pass each).
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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-loop", action="store_true", help="skip the one-backward-per-class row")
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(1, 3, 224, 224)
    cases = [
        ("resnet50", torchvision.models.resnet50().eval(), "layer4"),
        ("efficientnet_lite0", gradcam.load_model("efficientnet_lite0", "none").model, "bn2"),
        ("vgg19", torchvision.models.vgg19().eval(), "features.35"),
    ]
    print(f"1 image, 224 px, {torch.get_num_threads()} threads, torch {torch.__version__}, median of {args.repeats}")
    columns = ["model", "layer", "forward s", "all 1,000 classes s", "x forward", "1,000 targets, one backward each s"]
    print("| " + " | ".join([*columns, "x forward"]) + " |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, model, layer in cases:

        def forward(model: torch.nn.Module = model) -> object:
            with torch.inference_mode():
                return model(x)

        runs = {
            "forward": forward,
            "all": lambda model=model, layer=layer: gradcam.explain(model, x, "gradcam", layer, targets="all"),
        }
        if not args.no_loop:
            every = [list(range(1000))]
            runs["loop"] = lambda model=model, layer=layer, every=every: gradcam.explain(
                model, x, "gradcam", layer, every
            )
        times = interleaved_medians(runs, args.repeats)
        loop = f"{times['loop']:.3f} | {times['loop'] / times['forward']:.1f}" if "loop" in times else "- | -"
        print(
            f"| {name} | {layer} | {times['forward']:.3f} | {times['all']:.3f} | "
            f"{times['all'] / times['forward']:.2f} | {loop} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
