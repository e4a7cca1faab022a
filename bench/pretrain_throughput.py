"""Pre-training step throughput (clips/s): progvid VideoMAE vs transformers VideoMAEForPreTraining.

Both sides train the same model (ViT-S by default, 16 x 112 x 112 clips, tube mask 0.9, batch 8)
with identical initial weights (`progvid.interop.hf.to_transformers` of a deep copy), each with
its own AdamW (lr 1e-4, betas (0.9, 0.95), weight decay 0.05). One step = zero_grad, forward,
loss.backward(), optimizer.step(), on the same normalized random clip and the same tube mask.
bf16 = autocast around the forward of both. The two sides are timed side by side in ONE process,
alternating blocks of steps (A B, B A, A B, ...); the ratio ours / transformers is the figure to
read, absolute clips/s move with whatever else runs on the machine.

Also measured in the same run:
- the machine's dense matmul rate (n x n @ n x n, fp32 and bf16, 2 n^3 FLOPs each), and the model
  FLOPs utilization MFU = achieved model FLOP/s / measured matmul FLOP/s, where model FLOPs =
  2 x `progvid.progressive.flops.model_flops(...).train` (that function counts
  multiply-accumulates, training = 3 x forward; one MAC = 2 FLOPs);
- peak memory of one training step per clip, each configuration in a fresh subprocess (the script
  re-invokes itself with --mem-probe): on CPU the peak resident set (VmHWM, reset through
  /proc/self/clear_refs) minus the resident set just before the step, after a warm-up step, so
  weights, gradients and AdamW state are in the baseline and the delta is activations plus
  temporaries; on CUDA torch.cuda.max_memory_allocated minus memory_allocated likewise;
- ViT-B peak step memory with and without activation checkpointing (progvid).

    .venv/bin/python bench/pretrain_throughput.py [--device cpu|cuda] [--rounds N] [--skip-memory]
        [--steps K] [--threads T] [--profile] [--json out.json]

On CUDA it additionally times ViT-B 16 x 224 bf16 (both sides). See bench/pretrain_throughput.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from typing import Any

import torch

from progvid.interop.hf import to_transformers
from progvid.models import videomae
from progvid.progressive.flops import model_flops

FRAMES, IMG, BATCH, MASK = 16, 112, 8, 0.9
LR, BETAS, WD = 1e-4, (0.9, 0.95), 0.05


# --------------------------------------------------------------------------------------------
# Setup and one training step
# --------------------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, precision: str) -> Any:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def make_opt(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, weight_decay=WD)


def build(size: str, frames: int, img: int, device: torch.device, ckpt: bool = False,
          with_hf: bool = True) -> dict[str, Any]:
    torch.manual_seed(0)
    ours = videomae(size, num_frames=frames, img_size=img, patch_size=16, mask_ratio=MASK,
                    grad_checkpointing=ckpt).to(device).train()
    out: dict[str, Any] = {"ours": ours, "opt_ours": make_opt(ours)}
    if with_hf:
        hf = to_transformers(copy.deepcopy(ours)).to(device).train()
        out.update(hf=hf, opt_hf=make_opt(hf))
    return out


def make_batch(model: Any, batch: int, frames: int, img: int,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    video = torch.randn(batch, 3, frames, img, img, generator=g).to(device)  # normalized float
    mask = model.random_mask(batch, frames, device, generator=g, img_size=img)
    return video, mask


def step_ours(model: Any, opt: Any, video: torch.Tensor, mask: torch.Tensor,
              device: torch.device, precision: str, set_to_none: bool = True) -> torch.Tensor:
    opt.zero_grad(set_to_none=set_to_none)
    with autocast(device, precision):
        loss = model(video, mask).loss
    loss.backward()
    opt.step()
    return loss.detach()


def step_hf(model: Any, opt: Any, video: torch.Tensor, mask: torch.Tensor,
            device: torch.device, precision: str, set_to_none: bool = True) -> torch.Tensor:
    opt.zero_grad(set_to_none=set_to_none)
    with autocast(device, precision):
        loss = model(pixel_values=video.permute(0, 2, 1, 3, 4), bool_masked_pos=mask).loss
    loss.backward()
    opt.step()
    return loss.detach()


STEP = {"ours": step_ours, "hf": step_hf}


# --------------------------------------------------------------------------------------------
# Throughput, alternating
# --------------------------------------------------------------------------------------------
def time_block(side: str, m: dict, video: torch.Tensor, mask: torch.Tensor, steps: int,
               device: torch.device, precision: str) -> float:
    fn, model, opt = STEP[side], m[side], m[f"opt_{side}"]
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn(model, opt, video, mask, device, precision)
    sync(device)
    return steps * video.shape[0] / (time.perf_counter() - t0)


def throughput(m: dict, video: torch.Tensor, mask: torch.Tensor, device: torch.device,
               precision: str, rounds: int, steps: int, warmup: int = 2) -> dict[str, Any]:
    for side in ("ours", "hf"):
        for _ in range(warmup):
            STEP[side](m[side], m[f"opt_{side}"], video, mask, device, precision)
    rates: dict[str, list[float]] = {"ours": [], "hf": []}
    for r in range(rounds):
        order = ("ours", "hf") if r % 2 == 0 else ("hf", "ours")
        for side in order:
            rates[side].append(time_block(side, m, video, mask, steps, device, precision))
        print(f"  [{precision}] round {r + 1}/{rounds}: ours {rates['ours'][-1]:.2f} "
              f"hf {rates['hf'][-1]:.2f} clips/s", file=sys.stderr, flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    # Per-round ratio (adjacent blocks see similar machine load) as a spread indicator.
    per_round = [o / h for o, h in zip(rates["ours"], rates["hf"], strict=True)]
    return {"ours": med["ours"], "hf": med["hf"], "ratio": med["ours"] / med["hf"],
            "ratio_rounds": per_round, "raw": rates}


def check_losses(m: dict, video: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    """Forward-only losses of both sides (fp32, same weights): they should agree."""
    with torch.no_grad():
        a = m["ours"](video, mask).loss.item()
        b = m["hf"](pixel_values=video.permute(0, 2, 1, 3, 4), bool_masked_pos=mask).loss.item()
    return a, b


# --------------------------------------------------------------------------------------------
# Machine matmul rate
# --------------------------------------------------------------------------------------------
def matmul_rate(device: torch.device, dtype: torch.dtype, n: int, reps: int) -> float:
    """Best-of-`reps` dense matmul rate in FLOP/s (2 n^3 FLOPs per n x n @ n x n)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    for _ in range(2):
        torch.matmul(a, b)
    best = 0.0
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        torch.matmul(a, b)
        sync(device)
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


# --------------------------------------------------------------------------------------------
# Memory probes (fresh subprocess per configuration)
# --------------------------------------------------------------------------------------------
def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+)", f.read(), re.M)[1])


def mem_probe(args: argparse.Namespace) -> None:
    """One configuration: warm step, then the peak over the pre-step level of one more step."""
    device = torch.device(args.device)
    side = "hf" if args.mem_probe == "hf" else "ours"
    ckpt = args.mem_probe == "ours-ckpt"
    m = build(args.size, FRAMES, args.img_size, device, ckpt=ckpt, with_hf=side == "hf")
    video, mask = make_batch(m["ours"], args.batch, FRAMES, args.img_size, device)
    if side == "hf":  # keep only the side being measured
        del m["ours"], m["opt_ours"]
    fn, model, opt = STEP[side], m[side], m[f"opt_{side}"]
    # Warm step: allocates gradients and AdamW state (kept: set_to_none=False) and one-time
    # kernel/scratch buffers, so the baseline below holds weights + grads + optimizer state.
    fn(model, opt, video, mask, device, args.precision, set_to_none=False)
    import gc
    gc.collect()
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn(model, opt, video, mask, device, args.precision, set_to_none=False)
        sync(device)
        peak = torch.cuda.max_memory_allocated(device)
    else:
        with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM to the current RSS
            f.write("5")
        base = _status_kb("VmRSS") * 1024
        fn(model, opt, video, mask, device, args.precision, set_to_none=False)
        peak = _status_kb("VmHWM") * 1024
    print(json.dumps({"base": base, "peak": peak, "delta": peak - base, "batch": args.batch}))


def run_probe(device: str, which: str, size: str, img: int, batch: int, precision: str,
              threads: int) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--mem-probe", which, "--device", device,
           "--size", size, "--img-size", str(img), "--batch", str(batch), "--precision",
           precision, "--threads", str(threads)]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"memory probe {which} failed:\n{res.stderr[-3000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["seconds"] = time.perf_counter() - t0
    print(f"  [mem] {which} {size} {img} b{batch} {precision}: "
          f"{out['delta'] / 2**20:.0f} MB over baseline ({out['seconds']:.0f}s)",
          file=sys.stderr, flush=True)
    return out


# --------------------------------------------------------------------------------------------
# Profile
# --------------------------------------------------------------------------------------------
def profile(m: dict, video: torch.Tensor, mask: torch.Tensor, device: torch.device,
            precision: str, steps: int = 3, top: int = 18) -> str:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    out = []
    for side in ("ours", "hf"):
        fn, model, opt = STEP[side], m[side], m[f"opt_{side}"]
        fn(model, opt, video, mask, device, precision)
        with tprofile(activities=acts) as prof:
            for _ in range(steps):
                fn(model, opt, video, mask, device, precision)
            sync(device)
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        out.append(f"### {side} ({precision}, {steps} steps)\n\n```\n"
                   + prof.key_averages().table(sort_by=key, row_limit=top, max_name_column_width=48)
                   + "\n```\n")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"nproc": os.cpu_count(), "platform": platform.platform(),
                            "python": platform.python_version(), "torch": torch.__version__}
    try:
        import transformers
        info["transformers"] = transformers.__version__
    except ImportError:
        info["transformers"] = None
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = re.search(r"model name\s*:\s*(.*)", f.read())[1].strip()
        with open("/proc/meminfo") as f:
            info["ram_gib"] = int(re.search(r"MemTotal:\s+(\d+)", f.read())[1]) / 2**20
    except (OSError, TypeError):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--rounds", type=int, default=4, help="alternating rounds per precision")
    ap.add_argument("--steps", type=int, default=3, help="training steps per timed block")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--ckpt-img-size", type=int, default=112,
                    help="clip size of the ViT-B checkpointing memory probe")
    ap.add_argument("--ckpt-batch", type=int, default=4)
    ap.add_argument("--profile", action="store_true", help="torch.profiler top ops, both sides")
    ap.add_argument("--json", help="also write all figures to this JSON file")
    # internal: memory probe in a fresh process
    ap.add_argument("--mem-probe", choices=["ours", "hf", "ours-ckpt"], help=argparse.SUPPRESS)
    ap.add_argument("--size", default="small", help=argparse.SUPPRESS)
    ap.add_argument("--img-size", type=int, default=IMG, help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=BATCH, help=argparse.SUPPRESS)
    ap.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.mem_probe:
        mem_probe(args)
        return

    device = torch.device(args.device)
    precisions = [p for p in args.precisions.split(",") if p]
    res: dict[str, Any] = {"machine": machine(), "threads": torch.get_num_threads(),
                           "args": vars(args), "throughput": {}, "memory": {}}
    log = sys.stderr

    # Machine rate first (quiet machine, nothing else allocated).
    n = 2048 if device.type == "cpu" else 8192
    res["matmul"] = {p: matmul_rate(device, {"fp32": torch.float32, "bf16": torch.bfloat16}[p],
                                    n, reps=8) for p in ("fp32", "bf16")}
    res["matmul_n"] = n
    print(f"  matmul {n}: fp32 {res['matmul']['fp32'] / 1e9:.0f} GFLOP/s, "
          f"bf16 {res['matmul']['bf16'] / 1e9:.0f} GFLOP/s", file=log, flush=True)

    configs = [("small", IMG, BATCH, precisions)]
    if device.type == "cuda":
        configs.append(("base", 224, BATCH, ["bf16"]))
    for size, img, batch, precs in configs:
        m = build(size, FRAMES, img, device)
        res["attn_impl_hf"] = getattr(m["hf"].config, "_attn_implementation", None)
        video, mask = make_batch(m["ours"], batch, FRAMES, img, device)
        la, lb = check_losses(m, video, mask)
        fl = model_flops(m["ours"], FRAMES, img)
        flops_clip = 2 * fl.train  # MACs -> FLOPs
        key = f"{size}-{FRAMES}x{img}-b{batch}"
        res["throughput"][key] = {"loss_ours": la, "loss_hf": lb, "train_macs_clip": fl.train,
                                  "tokens": fl.tokens, "visible": fl.visible}
        print(f"  {key}: loss ours {la:.6f} hf {lb:.6f}; {fl.train / 1e9:.2f} GMAC/clip train",
              file=log, flush=True)
        for p in precs:
            t = throughput(m, video, mask, device, p, args.rounds, args.steps)
            for side in ("ours", "hf"):
                t[f"mfu_{side}"] = t[side] * flops_clip / res["matmul"][p]
            res["throughput"][key][p] = t
        if args.profile and size == "small":
            res["profile"] = "\n".join(profile(m, video, mask, device, p) for p in precs)
        del m

    if not args.skip_memory:
        mem = res["memory"]
        for p in precisions:
            for side in ("ours", "hf"):
                mem[f"small-{side}-{p}"] = run_probe(args.device, side, "small", IMG, BATCH, p,
                                                     args.threads)
        for which in ("ours", "ours-ckpt"):
            mem[f"base-{which}-fp32"] = run_probe(args.device, which, "base", args.ckpt_img_size,
                                                  args.ckpt_batch, "fp32", args.threads)

    print(report(res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1, default=str)


def report(res: dict[str, Any]) -> str:
    mb = 2**20
    mm = res["matmul"]
    lines = [
        f"threads: {res['threads']}; device: {res['args']['device']}; "
        f"transformers attention: {res.get('attn_impl_hf')}",
        f"matmul {res['matmul_n']}^3 (2n^3 FLOPs): fp32 {mm['fp32'] / 1e9:.1f} GFLOP/s, "
        f"bf16 {mm['bf16'] / 1e9:.1f} GFLOP/s",
        "",
        "| config | precision | ours clips/s | hf clips/s | ours/hf (median) | per-round ratios "
        "| MFU ours | MFU hf |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, t in res["throughput"].items():
        for p in ("fp32", "bf16"):
            if p not in t:
                continue
            r = t[p]
            rr = ", ".join(f"{x:.2f}" for x in r["ratio_rounds"])
            lines.append(f"| {key} | {p} | {r['ours']:.2f} | {r['hf']:.2f} | **{r['ratio']:.2f}x** "
                         f"| {rr} | {100 * r['mfu_ours']:.1f}% | {100 * r['mfu_hf']:.1f}% |")
    for key, t in res["throughput"].items():
        lines.append(f"\n{key}: {t['train_macs_clip'] / 1e9:.2f} GMAC = "
                     f"{2 * t['train_macs_clip'] / 1e9:.2f} GFLOP per clip per training step; "
                     f"fp32 loss ours {t['loss_ours']:.6f} vs hf {t['loss_hf']:.6f}")
    mem = res["memory"]
    if mem:
        lines += ["", "| memory probe | peak over pre-step RSS | per clip | baseline (weights+grads"
                  "+AdamW+runtime) |", "|---|---|---|---|"]
        for k, v in mem.items():
            lines.append(f"| {k} (batch {v['batch']}) | {v['delta'] / mb:.0f} MB | "
                         f"{v['delta'] / v['batch'] / mb:.1f} MB | {v['base'] / mb:.0f} MB |")
        for p in ("fp32", "bf16"):
            a, b = mem.get(f"small-ours-{p}"), mem.get(f"small-hf-{p}")
            if a and b:
                lines.append(f"\nViT-S {p} step memory ours/hf: {a['delta'] / b['delta']:.2f}")
        a, b = mem.get("base-ours-fp32"), mem.get("base-ours-ckpt-fp32")
        if a and b:
            lines.append(f"ViT-B activation checkpointing: {b['delta'] / mb:.0f} MB vs "
                         f"{a['delta'] / mb:.0f} MB = {100 * (1 - b['delta'] / a['delta']):.0f}% "
                         "lower")
    if res.get("profile"):
        lines += ["", res["profile"]]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
