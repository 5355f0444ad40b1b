#!/usr/bin/env bash
# Issue 11's GPU check, prepared for a session that has a lent device (carry .gpu-wheels, see
# bench/gpu_check.sh): the core cost and the folder throughput with the one writer, on CUDA, next to each
# other in one run. Expected wall time: about 6 minutes. Results under $OUT.
set -u
OUT=${OUT:-/tmp/gradcam-gpu}
mkdir -p "$OUT"
python3 -m pip install -q --no-deps .gpu-wheels/*.whl 2>/dev/null
python3 -m pip install -q jsonschema scikit-image 2>/dev/null
export PYTHONPATH=$PWD/src
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/gpu.txt"
timeout 150 python3 bench/bench_core.py --model resnet50 --batch 64 --repeats 20 --device cuda > "$OUT/core.md" 2>&1
timeout 400 python3 bench/bench_folder.py --counts 1000 10000 --batch 64 --workers 8 --device cuda > "$OUT/folder.md" 2>&1
tail -n 5 "$OUT"/*.md
