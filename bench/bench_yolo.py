"""Per-box maps of a YOLO detector against its forward pass (with the NMS) and pytorch-grad-cam's Eigen-CAM
path (the one its YOLO tutorial offers: one class-agnostic map), measured interleaved in one run.

    python bench/bench_yolo.py --config yolov8n.yaml --boxes 1 10 --repeats 7

Random weights (offline): ``--conf 0`` keeps the top-scoring anchors, so the box count is exactly ``--boxes``.
Prints a Markdown table of median seconds per photo and the ratio to the forward pass with the NMS.
"""

from __future__ import annotations

import argparse
import warnings

import torch
from PIL import Image

import gradcam
from bench_core import interleaved_medians
from gradcam.detection import explain_boxes
from gradcam.io.letterbox import letterbox
from gradcam.io.yolo import YoloDetector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="yolov8n.yaml")
    parser.add_argument("--photo", default="examples/astronaut.jpg")
    parser.add_argument("--boxes", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    bundle = gradcam.load_model(f"yolo:{args.config}")
    net = bundle.model
    x = letterbox(Image.open(args.photo), 640)[0][None]
    nms = YoloDetector(bundle.extra["detector"].classes, conf=0.0, max_boxes=max(args.boxes))

    def forward_and_nms() -> None:
        with torch.inference_mode():
            nms.detect(net(x))

    runs = {"forward + NMS": forward_and_nms}
    for count in args.boxes:
        detector = YoloDetector(nms.classes, conf=0.0, max_boxes=count)
        runs[f"gradcam, {count} box(es)"] = lambda detector=detector: explain_boxes(net, x, detector)
    runs["gradcam eigencam (ours, 1 box)"] = lambda: explain_boxes(net, x, YoloDetector(nms.classes, 0.0, 0.45, 1),
                                                                    "eigencam")  # fmt: skip
    try:
        from pytorch_grad_cam import EigenCAM

        class FirstOutput(torch.nn.Module):  # the tutorial's wrapper: the decoded predictions only
            def __init__(self) -> None:
                super().__init__()
                self.net = net

            def forward(self, images: torch.Tensor) -> torch.Tensor:
                return self.net(images)[0]

        wrapped = FirstOutput().eval()
        layers = [net.get_submodule(name) for name in bundle.default_layer.split(",")]
        peer = EigenCAM(wrapped, layers)
        runs["pytorch-grad-cam EigenCAM (1 map)"] = lambda: peer(x, targets=[lambda o: o[4].max()])
    except ImportError:
        pass
    medians = interleaved_medians(runs, args.repeats)
    base = medians["forward + NMS"]
    print(f"| run ({args.config}, 640 px photo, {torch.get_num_threads()} threads) | s per photo | x forward + NMS |")
    print("|---|---|---|")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds:.3f} | {seconds / base:.2f} |")


if __name__ == "__main__":
    main()
