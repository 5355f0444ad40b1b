#!/usr/bin/env bash
# Session 3's GPU check (run with .gpu-wheels carried; see bench/gpu_check.sh): the command line on CUDA with
# the new pictures (frames, thumbnails, legend) and targets="all" on CUDA against a forward pass.
set -u
OUT=${OUT:-/tmp/gradcam-gpu}
mkdir -p "$OUT"
bash bench/gpu_check.sh cli
cp /tmp/gradcam-gpu/cli.txt "$OUT/cli.txt" 2>/dev/null
export PYTHONPATH=$PWD/src
timeout 120 python3 -m gradcam explain examples --device cuda --out /tmp/run-all --quiet --target all --frame full --legend
echo "target all exit $?" >> "$OUT/cli.txt"
ls /tmp/run-all >> "$OUT/cli.txt"
timeout 240 python3 - > "$OUT/all_classes_cuda.md" 2>&1 <<'PY'
import time, torch, torchvision, gradcam
dev = "cuda"
for name, batch in [("resnet50", 1), ("resnet50", 32)]:
    m = torchvision.models.get_model(name).eval().to(dev)
    x = torch.randn(batch, 3, 224, 224, device=dev)
    def fwd():
        with torch.inference_mode(): return m(x)
    def every(): return gradcam.explain(m, x, "gradcam", "layer4", targets="all")
    for f in (fwd, every): f(); torch.cuda.synchronize()
    times = {}
    for label, f in (("forward", fwd), ("all", every)):
        t = []
        for _ in range(10):
            torch.cuda.synchronize(); s = time.perf_counter(); f(); torch.cuda.synchronize(); t.append(time.perf_counter() - s)
        times[label] = sorted(t)[5]
    ex = every(); one = gradcam.explain(m, x, "gradcam", "layer4", targets=[[3, 500]] * batch)
    diff = (ex.raw[:, [3, 500]].float() - one.raw).abs().max().item()
    print(f"| {name} | {batch} | {times['forward']:.4f} | {times['all']:.4f} | {times['all']/times['forward']:.2f} | {diff:.2e} |")
PY
