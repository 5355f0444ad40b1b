"""``make fuzz``: the fuzz suite again and again, each time with a new seed and the long profile, until
SECONDS have passed (default 600). Stops at the first failing property, and fails when a run's process
went above 2 GB (its own peak, read from /proc at its end).

    python tests/fuzz/run_for.py 600
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

LIMIT_MB = 2048
ROOT = Path(__file__).resolve().parents[2]
MEASURED_PYTEST = """
import sys
import pytest
code = pytest.main(sys.argv[1:])
print("peak-rss-kb", open("/proc/self/status").read().split("VmHWM:")[1].split()[0], file=sys.stderr)
sys.exit(code)
"""


def main() -> int:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 600.0
    deadline = time.monotonic() + seconds
    environment = {**os.environ, "GRADCAM_FUZZ_PROFILE": "long"}
    rounds = 0
    while time.monotonic() < deadline:
        seed = random.randrange(2**32)
        argv = ["tests/fuzz", "-q", "-x", "-p", "no:cacheprovider", f"--hypothesis-seed={seed}"]
        done = subprocess.run(
            [sys.executable, "-c", MEASURED_PYTEST, *argv], cwd=ROOT, env=environment, capture_output=True, text=True
        )
        rounds += 1
        peak = next((int(line.split()[1]) // 1024 for line in done.stderr.splitlines() if "peak-rss-kb" in line), -1)
        summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
        print(f"round {rounds}, seed {seed}: {summary}; peak RSS {peak} MB", flush=True)
        if done.returncode != 0:
            print(done.stdout[-6000:], done.stderr[-3000:], sep="\n")
            print(f"fuzz: failed in round {rounds}; reproduce with GRADCAM_FUZZ_PROFILE=long pytest tests/fuzz "
                  f"--hypothesis-seed={seed}")  # fmt: skip
            return 1
        if peak > LIMIT_MB:
            print(f"fuzz: round {rounds} peaked at {peak} MB, over {LIMIT_MB} MB")
            return 1
    print(f"fuzz: {rounds} rounds in {seconds:.0f} s, no failure, every process under {LIMIT_MB} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
