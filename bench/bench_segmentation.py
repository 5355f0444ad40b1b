"""Per-class maps of a segmentation model against its forward pass and pytorch-grad-cam's semantic segmentation
path (its tutorial's: one ``GradCAM`` call per class with a ``SemanticSegmentationTarget``), measured
interleaved in one run.

    python bench/bench_segmentation.py --size 512 --classes 1 5 --repeats 7

A SegFormer of B0's shape (hidden sizes 32/64/160/256, depths 2/2/2/2, decoder 256, 150 ADE20K classes) built
from its config with random weights (offline); every run explains the ``--classes`` largest painted regions at
``segformer.stages.3`` (the same classes, regions and layer on both sides). Prints a Markdown table of median
seconds per photo and the ratio to the forward pass.
"""

from __future__ import annotations

import argparse
import warnings

import torch

from bench_core import interleaved_medians
from gradcam.detection import explain_boxes
from gradcam.segmentation import SegmentationDetector

LAYER = "segformer.stages.3"


def segformer_b0() -> torch.nn.Module:
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    config = SegformerConfig(num_labels=150, hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2],
                             decoder_hidden_size=256)  # fmt: skip
    return SegformerForSemanticSegmentation(config).eval()


class Logits(torch.nn.Module):
    """The model's logits alone (pytorch-grad-cam takes a tensor output)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(pixel_values=x).logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--classes", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    net = segformer_b0()
    x = torch.randn(1, 3, args.size, args.size)
    with torch.no_grad():
        painted = net(pixel_values=x).logits.argmax(1)[0]
    classes, counts = painted.unique(return_counts=True)
    order = classes[counts.argsort(descending=True)].tolist()
    print(f"SegFormer-B0 shape, {args.size} px, {torch.get_num_threads()} threads, {len(order)} classes painted, "
          f"median of {args.repeats}")  # fmt: skip

    def forward() -> None:
        with torch.inference_mode():
            net(pixel_values=x)

    runs = {"forward pass": forward}
    for count in args.classes:
        detector = SegmentationDetector(conf=0.0, max_boxes=count, min_area=0.0)
        runs[f"ours, {count} classes"] = lambda d=detector: explain_boxes(net, x, d, layer=LAYER)
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

        wrapped = Logits(net)
        peer = GradCAM(wrapped, [net.get_submodule(LAYER)])
        for count in args.classes:

            def per_class(count: int = count) -> None:
                for label in order[:count]:
                    mask = (painted == label).float().numpy()
                    peer(x, targets=[SemanticSegmentationTarget(label, mask)])

            runs[f"pytorch-grad-cam, {count} classes"] = per_class
    except ImportError:
        print("pytorch-grad-cam is not installed: its rows are left out")
    medians = interleaved_medians(runs, args.repeats)
    base = medians["forward pass"]
    print("| run | s per photo | x forward |\n|---|---|---|")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds:.3f} | {seconds / base:.2f} |")


if __name__ == "__main__":
    main()
