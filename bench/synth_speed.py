"""Throughput of the synthetic dataset writer (render + encode + write), in clips per second.

    .venv/bin/python bench/synth_speed.py [--clips 200] [--size 64] [--frames 16]

Prints one row per (format, workers), plus rendering alone for reference. Target: >= 50 clips/s
for 64x64x16 clips. Results are recorded in bench/synth_speed.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from progvid.data.synthetic import MOTION_CLASSES, render_clip, write_dataset


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--frames", type=int, default=16)
    args = ap.parse_args()
    print(f"cpus: {os.cpu_count()}  cpu: {_cpu_model()}")
    print(f"clips: {args.clips} of {args.size}x{args.size}x{args.frames}; "
          f"load average before: {os.getloadavg()[0]:.2f}")
    print("| what | workers | clips/s |\n|---|---|---|")

    start = time.perf_counter()
    for i in range(args.clips):
        render_clip(i % len(MOTION_CLASSES), np.random.default_rng(i), size=args.size,
                    frames=args.frames)
    print(f"| render only (no encoding) | 1 | {args.clips / (time.perf_counter() - start):.0f} |")

    for fmt in ("mp4", "webm"):
        for workers in (1, 2):
            with tempfile.TemporaryDirectory() as tmp:
                # Wall time of the whole call, pool start-up included.
                start = time.perf_counter()
                write_dataset(Path(tmp) / "ds", train=args.clips, val=0, size=args.size,
                              frames=args.frames, fmt=fmt, workers=workers)
                rate = args.clips / (time.perf_counter() - start)
            print(f"| write_dataset {fmt} | {workers} | {rate:.0f} |")


if __name__ == "__main__":  # the guard matters: workers > 1 start fresh interpreters
    main()
