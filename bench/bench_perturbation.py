"""Score-CAM and Ablation-CAM against pytorch-grad-cam: seconds per image, peak memory, map agreement.

    python bench/bench_perturbation.py --images 2 --size 224

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
kind, images, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
model = torchvision.models.resnet18().eval()
x = torch.randn(images, 3, size, size)
with torch.no_grad():
    targets = model(x).argmax(1).tolist()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if kind.startswith("pgc-"):
    from pytorch_grad_cam import AblationCAM as PA, ScoreCAM as PS
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    cls = PS if kind == "pgc-scorecam" else PA
    with cls(model=model, target_layers=[model.layer4]) as cam:
        cam.batch_size = 32
        maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
else:
    method = {"scorecam": ScoreCAM(batch_size=32), "ablationcam": AblationCAM(batch_size=64),
              "scorecam-top64": ScoreCAM(batch_size=32, top_channels=64),
              "scorecam-top128": ScoreCAM(batch_size=32, top_channels=128)}[kind]
    maps = gradcam.explain(model, x, method, "layer4", targets=targets).maps[:, 0].numpy()
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
import numpy as np
np.save(sys.argv[4], maps)
result = {"seconds_per_image": seconds / images, "peak_rss_mb": peak / 1024, "growth_mb": (peak - before) / 1024}
print(json.dumps(result))
"""


def run(kind: str, images: int, size: int, path: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, kind, str(images), str(size), path], capture_output=True,
                         text=True, check=True, env={**os.environ, "TQDM_DISABLE": "1"})  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([np.corrcoef(x.ravel(), y.ravel())[0, 1] for x, y in zip(a, b, strict=True)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--tmp", default="/tmp")
    args = parser.parse_args()
    kinds = ["ablationcam", "pgc-ablationcam", "scorecam", "pgc-scorecam", "scorecam-top128", "scorecam-top64"]
    results, maps = {}, {}
    for kind in kinds:
        path = os.path.join(args.tmp, f"bench-{kind}.npy")
        start = time.perf_counter()
        results[kind] = run(kind, args.images, args.size, path)
        results[kind]["wall"] = time.perf_counter() - start
        maps[kind] = np.load(path)
    reference = {"ablationcam": "pgc-ablationcam", "scorecam": "pgc-scorecam", "scorecam-top128": "scorecam",
                 "scorecam-top64": "scorecam"}  # fmt: skip
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
