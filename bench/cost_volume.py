"""Benchmark: shift-and-multiply cost volume (progvid) vs an unfold-based one.

Forward + backward time (median of alternating repeats) and peak extra memory (each config run
once in a fresh subprocess; rise of the peak RSS, VmHWM, over one forward + backward; Linux).
Inputs are (batch, C, H, W) feature maps per frame pair, d = 6, s = 2.

    .venv/bin/python bench/cost_volume.py [--batch 8] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from progvid.models.motion import cost_volume, displacements

CONFIGS = [(64, 56), (128, 28), (256, 14)]  # (channels, side): ResNet levels 1..3 at 224 px
D_MAX, STRIDE = 6, 2


def cost_volume_unfold(f1: torch.Tensor, f2: torch.Tensor, d: int = D_MAX, s: int = STRIDE):
    """Reference: gather all D*D shifted copies of f2 with unfold, multiply, sum channels."""
    n, c, h, w = f1.shape
    k = len(displacements(d, s))
    a, b = F.normalize(f1, dim=1, eps=1e-6), F.normalize(f2, dim=1, eps=1e-6)
    patches = F.unfold(b, kernel_size=k, dilation=s, padding=(k // 2) * s)  # (N, C*K*K, H*W)
    patches = patches.view(n, c, k * k, h, w)  # kernel index row-major: dy outer, dx inner
    return (a.unsqueeze(2) * patches).sum(1)


IMPLS = {"shift": lambda a, b: cost_volume(a, b, D_MAX, STRIDE, backend="torch"),
         "unfold": cost_volume_unfold}


def inputs(batch: int, c: int, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    f1 = torch.randn(batch, c, side, side, generator=g).requires_grad_()
    f2 = torch.randn(batch, c, side, side, generator=g).requires_grad_()
    return f1, f2


def step(impl: str, f1: torch.Tensor, f2: torch.Tensor) -> None:
    f1.grad = f2.grad = None
    IMPLS[impl](f1, f2).square().sum().backward()


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(impl: str, batch: int, c: int, side: int, threads: int) -> None:
    """Runs in a fresh process: print the peak RSS increase (MiB) of one forward + backward.

    The peak is VmHWM (Linux), reset to the current RSS first via /proc/self/clear_refs; not
    ru_maxrss, which keeps the parent's peak across fork + exec and so would hide the delta.
    """
    torch.set_num_threads(threads)
    f1, f2 = inputs(batch, c, side)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the high-water mark to the current RSS
    before = _status_kib("VmRSS")
    step(impl, f1, f2)
    print(json.dumps({"peak_mib": (_status_kib("VmHWM") - before) / 1024}))


def peak_memory(impl: str, batch: int, c: int, side: int, threads: int) -> float:
    cmd = [sys.executable, __file__, "--child", impl, str(batch), str(c), str(side), str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_mib"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        impl, *nums = args.child
        memory_child(impl, *(int(x) for x in nums))
        return
    torch.set_num_threads(args.threads)
    fmap = lambda c, s: args.batch * c * s * s * 4 / 2**20  # noqa: E731  MiB of one fp32 map
    print(f"batch {args.batch}, d={D_MAX}, s={STRIDE}, threads {args.threads}, torch "
          f"{torch.__version__}")
    print("| C x HxW | one map MiB | shift fwd+bwd ms | unfold fwd+bwd ms | shift peak MiB | "
          "unfold peak MiB |")
    print("|---|---|---|---|---|---|")
    for c, side in CONFIGS:
        f1, f2 = inputs(args.batch, c, side)
        with torch.no_grad():  # both give the same volume (dy outer, dx inner)
            torch.testing.assert_close(IMPLS["shift"](f1, f2), IMPLS["unfold"](f1, f2),
                                       atol=1e-5, rtol=1e-4)
        times: dict[str, list[float]] = {k: [] for k in IMPLS}
        for impl in IMPLS:  # warm-up
            step(impl, f1, f2)
        for _ in range(args.repeats):
            for impl in IMPLS:  # alternate so drifting machine load hits both alike
                t0 = time.perf_counter()
                step(impl, f1, f2)
                times[impl].append(1e3 * (time.perf_counter() - t0))
        ms = {k: statistics.median(v) for k, v in times.items()}
        mem = {k: peak_memory(k, args.batch, c, side, args.threads) for k in IMPLS}
        print(f"| {c} x {side}x{side} | {fmap(c, side):.1f} | {ms['shift']:.0f} | "
              f"{ms['unfold']:.0f} | {mem['shift']:.0f} | {mem['unfold']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
