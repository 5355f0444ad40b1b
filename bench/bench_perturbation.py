"""Score-CAM and Ablation-CAM against pytorch-grad-cam, and SS-CAM, IS-CAM and Smooth Grad-CAM++ against
torchcam: seconds per image, peak memory, map agreement.

    python bench/bench_perturbation.py --images 2 --size 224
    python bench/bench_perturbation.py --images 1 --size 112 --variants --samples 4

ResNet-18 (random seeded weights), layer ``layer4``, 224 px, CPU. Each run happens in a fresh child
process so that its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

CHILD = r"""
import json, resource, sys, time, torch, torchvision
import gradcam
from gradcam.methods.perturbation import AblationCAM, ScoreCAM
kind, images, size, samples = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[5])
torch.manual_seed(0)
model = torchvision.models.resnet18().eval()
x = torch.randn(images, 3, size, size)
with torch.no_grad():
    targets = model(x).argmax(1).tolist()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if kind.startswith("tc-"):
    import torchcam.methods as tc
    cls, options = {"tc-sscam": (tc.SSCAM, {"num_samples": samples, "std": 2.0}),
                    "tc-iscam": (tc.ISCAM, {"num_samples": samples}),
                    "tc-smoothgradcam++": (tc.SmoothGradCAMpp, {"num_samples": samples, "std": 0.3})}[kind]
    with cls(model, target_layer="layer4", input_shape=(3, size, size), **options) as extractor:
        out = model(x)
        maps = extractor(targets, out)[0].detach()
    maps = torch.nn.functional.interpolate(maps[:, None], size=(size, size), mode="bilinear")[:, 0].numpy()
elif kind.startswith("pgc-"):
    from pytorch_grad_cam import AblationCAM as PA, ScoreCAM as PS
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    cls = PS if kind == "pgc-scorecam" else PA
    with cls(model=model, target_layers=[model.layer4]) as cam:
        cam.batch_size = 32
        maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
else:
    from gradcam.methods.perturbation import ISCAM, SSCAM, SmoothGradCAMpp
    method = {"scorecam": ScoreCAM(batch_size=32), "ablationcam": AblationCAM(batch_size=64),
              "scorecam-top64": ScoreCAM(batch_size=32, top_channels=64),
              "scorecam-top128": ScoreCAM(batch_size=32, top_channels=128),
              "sscam": SSCAM(batch_size=32, samples=samples), "iscam": ISCAM(batch_size=32, samples=samples),
              "smoothgradcam++": SmoothGradCAMpp(samples=samples)}[kind]
    maps = gradcam.explain(model, x, method, "layer4", targets=targets).maps[:, 0].numpy()
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
import numpy as np
np.save(sys.argv[4], maps)
result = {"seconds_per_image": seconds / images, "peak_rss_mb": peak / 1024, "growth_mb": (peak - before) / 1024}
print(json.dumps(result))
"""


def run(kind: str, images: int, size: int, path: str, samples: int = 4) -> dict:
    command = [sys.executable, "-c", CHILD, kind, str(images), str(size), path, str(samples)]
    environment = {**os.environ, "TQDM_DISABLE": "1"}
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=environment)
    return json.loads(out.stdout.strip().splitlines()[-1])


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([np.corrcoef(x.ravel(), y.ravel())[0, 1] for x, y in zip(a, b, strict=True)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--tmp", default="/tmp")
    parser.add_argument("--variants", action="store_true", help="SS-CAM, IS-CAM, Smooth Grad-CAM++ against torchcam")
    parser.add_argument("--samples", type=int, default=4, help="noisy samples / path steps of the variants")
    args = parser.parse_args()
    kinds = ["ablationcam", "pgc-ablationcam", "scorecam", "pgc-scorecam", "scorecam-top128", "scorecam-top64"]
    if args.variants:
        kinds = ["sscam", "tc-sscam", "iscam", "tc-iscam", "smoothgradcam++", "tc-smoothgradcam++"]
    results, maps = {}, {}
    for kind in kinds:
        path = os.path.join(args.tmp, f"bench-{kind}.npy")
        start = time.perf_counter()
        results[kind] = run(kind, args.images, args.size, path, args.samples)
        results[kind]["wall"] = time.perf_counter() - start
        maps[kind] = np.load(path)
    reference = {"ablationcam": "pgc-ablationcam", "scorecam": "pgc-scorecam", "scorecam-top128": "scorecam",
                 "scorecam-top64": "scorecam", "sscam": "tc-sscam", "iscam": "tc-iscam",
                 "smoothgradcam++": "tc-smoothgradcam++"}  # fmt: skip
    print(f"ResNet-18 layer4, {args.images} images, {args.size} px, {os.cpu_count()} cores")
    print("| run | s / image | peak RSS (MB) | vs | speed-up | map correlation |")
    print("|---|---:|---:|---|---:|---:|")
    for kind in kinds:
        row = results[kind]
        if kind in reference:
            other = reference[kind]
            speedup = results[other]["seconds_per_image"] / row["seconds_per_image"]
            r = correlation(maps[kind], maps[other])
            seconds, peak = row["seconds_per_image"], row["peak_rss_mb"]
            print(f"| {kind} | {seconds:.2f} | {peak:.0f} | {other} | {speedup:.1f}x | {r:.4f} |")
        else:
            print(f"| {kind} | {row['seconds_per_image']:.2f} | {row['peak_rss_mb']:.0f} | | | |")


if __name__ == "__main__":
    main()
