"""Peak memory of `gradcam explain` on the worst small inputs (docs/security.md, docs/benchmarks.md).

Each input is explained in its own process (`--workers 0`, so decoding happens in that process too); the
table gives the file's size on disk, the exit code, the peak RSS of the process and the first line it
printed on stderr.

    python bench/bench_hostile.py            # writes the inputs into a temporary folder, prints a table
"""

from __future__ import annotations

import argparse
import io
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image


def corrupt_jpeg_declaring(width: int, height: int) -> bytes:
    """A small valid JPEG whose frame header is rewritten to declare ``width`` x ``height``."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def write_inputs(folder: Path) -> dict[str, Path]:
    """The hostile and the largest legitimate inputs of docs/security.md."""
    files = {
        "10000 x 1 PNG": folder / "wide.png",
        "14000 x 14000 1-bit PNG": folder / "bilevel.png",
        "corrupt JPEG declaring 65500 x 65500": folder / "declared.jpg",
        "4032 x 3024 JPEG (a phone photo)": folder / "phone.jpg",
        "6300 x 6300 flat PNG (39.7 MP)": folder / "flat.png",
    }
    Image.new("L", (10000, 1), 128).save(files["10000 x 1 PNG"])
    Image.new("1", (14000, 14000), 1).save(files["14000 x 14000 1-bit PNG"])
    files["corrupt JPEG declaring 65500 x 65500"].write_bytes(corrupt_jpeg_declaring(65500, 65500))
    noise = np.random.default_rng(1).integers(0, 255, (3024 // 8, 4032 // 8, 3), dtype=np.uint8)
    phone = Image.fromarray(noise).resize((4032, 3024), Image.Resampling.BICUBIC)
    phone.save(files["4032 x 3024 JPEG (a phone photo)"])
    Image.new("RGB", (6300, 6300), (200, 120, 40)).save(files["6300 x 6300 flat PNG (39.7 MP)"])
    return files


# The child reports its own high-water mark: ``ru_maxrss`` would not do, since Linux carries it over
# across exec, so a child of a large process (a test runner) starts with its parent's peak.
_MEASURED_CLI = """
import sys
from gradcam.apps.cli import main
code = main(sys.argv[1:])
status = open("/proc/self/status").read()
print("peak-rss-kb", status.split("VmHWM:")[1].split()[0], file=sys.stderr)
sys.exit(code)
"""


def run_measured(cli_args: list[str]) -> tuple[int, float, list[str]]:
    """Run ``gradcam CLI_ARGS`` in a fresh process (Linux); its exit code, its own peak RSS in MB and
    its stderr lines (the measurement line removed)."""
    done = subprocess.run([sys.executable, "-c", _MEASURED_CLI, *cli_args], capture_output=True, text=True)
    lines = done.stderr.splitlines()
    peak = next(float(line.split()[1]) / 1024 for line in lines if line.startswith("peak-rss-kb"))
    return done.returncode, peak, [line for line in lines if not line.startswith("peak-rss-kb")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", default=None, help="write the inputs here instead of a temporary folder")
    args = parser.parse_args()
    folder = Path(args.keep or tempfile.mkdtemp(prefix="gradcam-hostile-"))
    folder.mkdir(parents=True, exist_ok=True)
    print("| input | on disk | exit | peak RSS (MB) | message |")
    print("|---|---:|---:|---:|---|")
    for label, path in write_inputs(folder).items():
        out = folder / f"out-{path.stem}"
        code, peak, lines = run_measured(["explain", str(path), "--workers", "0", "--quiet", "--out", str(out)])
        message = next((line for line in lines if line.strip()), "")
        size = path.stat().st_size
        shown = f"{size / 1024:.1f} KB" if size < 1024**2 else f"{size / 1024**2:.1f} MB"
        print(f"| {label} | {shown} | {code} | {peak:.0f} | {message.replace(str(folder) + os.sep, '')[:110]} |")


if __name__ == "__main__":
    main()
