"""CAM against torchcam's CAM and a plain forward pass, in one process, the three runs interleaved (#30).

    python bench/bench_cam.py --model resnet50 --batch 2 --repeats 15
    python bench/bench_cam.py --model efficientnet_lite0 --batch 2 --repeats 25

Both sides give maps at the input's size scaled to [0, 1] (torchcam's 7 x 7 maps are upsampled and scaled for
it, as ``bench_methods.py`` does). Random weights for torchvision models; the embedded EfficientNet-Lite0 has
its ImageNet weights. Prints ms per image and the two ratios.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings

import torch
import torch.nn.functional as F
import torchvision

import gradcam


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    from torchcam.methods import CAM

    torch.manual_seed(0)
    if args.model == "efficientnet_lite0":
        model, fc, layer = gradcam.load_model().model.eval(), "classifier", "bn2"
    else:
        model, fc, layer = torchvision.models.get_model(args.model).eval(), "fc", "layer4"
    x = torch.randn(args.batch, 3, args.size, args.size)
    reference = copy.deepcopy(model)
    extractor = CAM(reference, target_layer=layer, fc_layer=fc)

    def forward() -> None:
        with torch.inference_mode():
            model(x)

    def peer() -> None:
        with torch.no_grad():
            out = reference(x)
            maps = extractor(out.argmax(1).tolist(), out)[0]
            flat = F.interpolate(maps[:, None], size=x.shape[2:], mode="bilinear", align_corners=False).flatten(1)
            low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
            (flat - low) / (high - low + 1e-8)

    runs = {"forward": forward, "ours": lambda: gradcam.explain(model, x, "cam", layer), "torchcam": peer}
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in times.items()}
    per_image = {name: round(seconds * 1000 / args.batch, 1) for name, seconds in median.items()}
    print(f"{args.model}, batch {args.batch}, {args.size} px, {torch.get_num_threads()} threads, median of "
          f"{args.repeats}: ms per image {per_image}; ours / torchcam {median['ours'] / median['torchcam']:.3f}, "
          f"ours / forward {median['ours'] / median['forward']:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
