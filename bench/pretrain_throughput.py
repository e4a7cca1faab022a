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

`--matrix` (what bench/gpu_check.sh runs on a GPU) times one model in bf16 instead, ours and
transformers side by side, in several variants (`--variants eager,ckpt,compile,compile+ckpt`:
torch.compile and/or activation checkpointing on both sides), each with its compile time, its
peak memory of one step (CUDA: torch.cuda.max_memory_allocated, total and over the pre-step
level) and its MFU against the bf16 matmul rate measured in the same run; then ours alone, eager,
at each TPL stage's clip length (`--stage-frames 2,4,8,16`): the clips/s a training step demands
from the data loader, and from those step times the time floor of TPL's default plan at this
fixed batch against its FLOPs ratio (bench/tpl_floor.py's formula). Results go to `--json` after every variant, so a run cut short keeps what
it measured; `--budget-s` skips what would not fit:

    python bench/pretrain_throughput.py --matrix --device cuda --size base --img-size 224 --batch 32
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
from tpl_floor import PLAN_STEPS, floor_ratio  # bench/ is sys.path[0]

from progvid.interop.hf import to_transformers
from progvid.models import videomae
from progvid.progressive.flops import model_flops

FRAMES, IMG, BATCH, MASK = 16, 112, 8, 0.9
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
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


def make_opt(model: torch.nn.Module, engine: bool = False) -> torch.optim.Optimizer:
    """torch's default AdamW (what transformers' Trainer uses), or progvid's engine optimizer:
    VideoMAE parameter groups and the fused AdamW kernel."""
    if engine:
        from progvid.engine.trainer import param_groups

        return torch.optim.AdamW(param_groups(model, WD), lr=LR, betas=BETAS, fused=True)
    return torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, weight_decay=WD)


def build(size: str, frames: int, img: int, device: torch.device, ckpt: bool = False,
          with_hf: bool = True, overrides: dict[str, int] | None = None,
          model_alone: bool = False) -> dict[str, Any]:
    """`ours` trains with the engine's optimizer, `hf` with torch's default AdamW; with
    `model_alone`, `model` is a copy of ours under torch's default AdamW too (the model alone
    against transformers', optimizer for optimizer)."""
    torch.manual_seed(0)
    ours = videomae(size, num_frames=frames, img_size=img, patch_size=16, mask_ratio=MASK,
                    grad_checkpointing=ckpt, **(overrides or {})).to(device).train()
    out: dict[str, Any] = {"ours": ours, "opt_ours": make_opt(ours, engine=True)}
    if model_alone:
        plain = copy.deepcopy(ours)
        out.update(model=plain, opt_model=make_opt(plain))
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
    # the mask's count, as the engine passes it (counting it would be a host sync on CUDA)
    masked = model.mask_counts(video.shape[2], img_size=tuple(video.shape[-2:]))[0]
    with autocast(device, precision):
        loss = model(video, mask, num_masked=masked).loss
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


STEP = {"ours": step_ours, "model": step_ours, "hf": step_hf}
SIDES = ("ours", "model", "hf")


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
               precision: str, rounds: int, steps: int, flops_clip: float, mm_n: int,
               warmup: int = 2) -> dict[str, Any]:
    sides = [s for s in SIDES if s in m]
    for side in sides:
        for _ in range(warmup):
            STEP[side](m[side], m[f"opt_{side}"], video, mask, device, precision)
    rates: dict[str, list[float]] = {s: [] for s in sides}
    mm_rates: list[float] = []  # the machine's matmul rate, re-measured each round (same load)
    for r in range(rounds):
        order = sides if r % 2 == 0 else sides[::-1]  # A B C, C B A, ...
        for side in order:
            rates[side].append(time_block(side, m, video, mask, steps, device, precision))
        mm_rates.append(matmul_rate(device, DTYPES[precision], mm_n, reps=3))
        print(f"  [{precision}] round {r + 1}/{rounds}: "
              + " ".join(f"{s} {rates[s][-1]:.2f}" for s in sides) + " clips/s",
              file=sys.stderr, flush=True)
    out: dict[str, Any] = {"raw": rates, "matmul_rounds": mm_rates}
    for s in sides:
        out[s] = statistics.median(rates[s])
        out[f"{s}_best"] = max(rates[s])
        # MFU per round against the matmul rate measured in that round; median over rounds.
        out[f"mfu_{s}"] = statistics.median(
            r * flops_clip / mm for r, mm in zip(rates[s], mm_rates, strict=True))
    for s in sides:
        if s == "hf" or "hf" not in rates:
            continue
        # median ratio, best-block ratio, and the per-round ratios (adjacent blocks see similar
        # machine load; their median is the most load-robust figure).
        out[f"ratio_{s}"] = out[s] / out["hf"]
        out[f"ratio_{s}_best"] = out[f"{s}_best"] / out["hf_best"]
        out[f"ratio_{s}_rounds"] = [a / b for a, b in zip(rates[s], rates["hf"], strict=True)]
        out[f"ratio_{s}_round_median"] = statistics.median(out[f"ratio_{s}_rounds"])
    return out


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
    # Fixed glibc mmap threshold: large blocks are mmapped and go back to the OS when freed, so the
    # warm step's freed activations are not kept in the heap (which would hide the next peak).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
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
    for side in (s for s in SIDES if s in m):
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


def _loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "n/a"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--rounds", type=int, default=4, help="alternating rounds per precision")
    ap.add_argument("--steps", type=int, default=3, help="training steps per timed block")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--ckpt-img-size", type=int, default=224,
                    help="clip size of the ViT-B checkpointing memory probe")
    ap.add_argument("--ckpt-batch", type=int, default=2)
    ap.add_argument("--profile", action="store_true", help="torch.profiler top ops, both sides")
    ap.add_argument("--json", help="also write all figures to this JSON file")
    ap.add_argument("--matrix", action="store_true",
                    help="bf16 variants (eager/compile x activation checkpointing) of one model, "
                    "ours vs transformers, then ours at each --stage-frames (see the docstring)")
    ap.add_argument("--variants", default="eager,ckpt,compile,compile+ckpt",
                    help="--matrix: variants, in order")
    ap.add_argument("--frames", type=int, default=FRAMES, help="--matrix: clip length")
    ap.add_argument("--stage-frames", default="2,4,8,16",
                    help="--matrix: clip lengths of the TPL stages (ours alone, eager)")
    ap.add_argument("--compile-backend", default="inductor",
                    help="--matrix: torch.compile backend (`eager` only exercises the code path)")
    ap.add_argument("--budget-s", type=float, default=1e9,
                    help="--matrix: skip variants that would start too late to fit")
    ap.add_argument("--size", default="small", help="--matrix: model size (and memory probes)")
    ap.add_argument("--img-size", type=int, default=IMG, help="--matrix: clip size")
    ap.add_argument("--batch", type=int, default=BATCH, help="--matrix: clips per step")
    ap.add_argument("--matmul-n", type=int, default=0,
                    help="--matrix: n of the n x n bf16 matmul rate (default 8192 CUDA, 1024 CPU)")
    ap.add_argument("--model-overrides", default="",
                    help="--matrix: videomae() overrides, e.g. embed_dim=32,depth=2 (rehearsals)")
    # internal: memory probe in a fresh process
    ap.add_argument("--mem-probe", choices=["ours", "hf", "ours-ckpt"], help=argparse.SUPPRESS)
    ap.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.mem_probe:
        mem_probe(args)
        return
    if args.matrix:
        matrix(args)
        return

    device = torch.device(args.device)
    precisions = [p for p in args.precisions.split(",") if p]
    res: dict[str, Any] = {"machine": machine(), "threads": torch.get_num_threads(),
                           "args": vars(args), "throughput": {}, "memory": {},
                           "loadavg_start": _loadavg()}
    log = sys.stderr

    # Machine rate first (quiet machine, nothing else allocated).
    n = 2048 if device.type == "cpu" else 8192
    res["matmul"] = {p: matmul_rate(device, DTYPES[p], n, reps=8) for p in ("fp32", "bf16")}
    res["matmul_n"] = n
    print(f"  matmul {n}: fp32 {res['matmul']['fp32'] / 1e9:.0f} GFLOP/s, "
          f"bf16 {res['matmul']['bf16'] / 1e9:.0f} GFLOP/s", file=log, flush=True)

    configs = [("small", IMG, BATCH, precisions)]
    if device.type == "cuda":
        configs.append(("base", 224, BATCH, ["bf16"]))
    for size, img, batch, precs in configs:
        m = build(size, FRAMES, img, device, model_alone=True)
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
            t = throughput(m, video, mask, device, p, args.rounds, args.steps, flops_clip, n)
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

    res["loadavg_end"] = _loadavg()
    print(report(res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1, default=str)


# --------------------------------------------------------------------------------------------
# --matrix: bf16 variants of one model (what bench/gpu_check.sh runs on a GPU)
# --------------------------------------------------------------------------------------------
def step_memory(side: str, m: dict, video: torch.Tensor, mask: torch.Tensor,
                device: torch.device, precision: str) -> dict[str, int] | None:
    """Peak allocated memory of one training step (CUDA only): total, and over the level just
    before the step (activations and temporaries; gradients are freed by zero_grad)."""
    if device.type != "cuda":
        return None
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    STEP[side](m[side], m[f"opt_{side}"], video, mask, device, precision)
    sync(device)
    peak = torch.cuda.max_memory_allocated(device)
    return {"peak": peak, "base": base, "delta": peak - base}


def model_overrides(args: argparse.Namespace) -> dict[str, int]:
    """`--model-overrides embed_dim=32,depth=2` -> videomae() keyword arguments."""
    out = {}
    for item in filter(None, (args.model_overrides or "").split(",")):
        key, _, value = item.partition("=")
        out[key.strip()] = int(value)
    return out


def run_variant(args: argparse.Namespace, variant: str, device: torch.device,
                mm_n: int) -> dict[str, Any]:
    """One variant (`eager`, `ckpt`, `compile`, `compile+ckpt`), both sides, side by side."""
    parts = set(variant.split("+"))
    unknown = parts - {"eager", "ckpt", "compile"}
    if unknown:
        raise ValueError(f"unknown variant part(s) {sorted(unknown)} in {variant!r}")
    ckpt, comp = "ckpt" in parts, "compile" in parts
    m = build(args.size, args.frames, args.img_size, device, ckpt=ckpt,
              overrides=model_overrides(args))
    out: dict[str, Any] = {"errors": {}}
    if ckpt:  # transformers 5 renamed it; older releases have only the first name
        hf = m["hf"]
        getattr(hf, "activation_checkpointing_enable", hf.gradient_checkpointing_enable)()
    video, mask = make_batch(m["ours"], args.batch, args.frames, args.img_size, device)
    fl = model_flops(m["ours"], args.frames, args.img_size)
    out["train_macs_clip"] = fl.train
    for side in ("ours", "hf"):
        try:
            if comp:
                m[side] = torch.compile(m[side], backend=args.compile_backend)
            t = time.perf_counter()
            STEP[side](m[side], m[f"opt_{side}"], video, mask, device, "bf16")  # compiles, warms
            sync(device)
            out[f"first_step_s_{side}"] = time.perf_counter() - t
            out[f"mem_{side}"] = step_memory(side, m, video, mask, device, "bf16")
        except Exception as exc:  # noqa: BLE001 - recorded; the other side still runs
            out["errors"][side] = f"{type(exc).__name__}: {exc}"[:800]
            print(f"  [{variant}] {side} failed: {out['errors'][side]}", file=sys.stderr, flush=True)
            del m[side], m[f"opt_{side}"]
    if "ours" in m or "hf" in m:
        t = throughput(m, video, mask, device, "bf16", args.rounds, args.steps, 2 * fl.train,
                       mm_n, warmup=1)
        out.update({k: v for k, v in t.items()})
    del m
    return out


def stage_rates(args: argparse.Namespace, device: torch.device, frames_list: list[int],
                mm_n: int, deadline: float, res: dict[str, Any], save: Any) -> None:
    """Ours alone, eager, bf16, at each stage's clip length (one model sized for the longest,
    as a TPL run builds it): the clips/s the training step asks of the loader."""
    m = build(args.size, max(frames_list + [args.frames]), args.img_size, device, with_hf=False,
              overrides=model_overrides(args))
    for f in frames_list:
        if time.perf_counter() > deadline:
            res["stages"][str(f)] = {"skipped": "time budget"}
            continue
        video, mask = make_batch(m["ours"], args.batch, f, args.img_size, device)
        for _ in range(2):
            step_ours(m["ours"], m["opt_ours"], video, mask, device, "bf16")
        rates, mms = [], []
        for _ in range(args.rounds):
            rates.append(time_block("ours", m, video, mask, args.steps, device, "bf16"))
            mms.append(matmul_rate(device, torch.bfloat16, mm_n, reps=3))
        macs = model_flops(m["ours"], f, args.img_size).train
        rate = statistics.median(rates)
        res["stages"][str(f)] = {
            "clips_per_s": rate, "step_ms": 1e3 * args.batch / rate, "batch": args.batch,
            "train_macs_clip": macs, "raw": rates,
            "mfu": statistics.median(r * 2 * macs / mm for r, mm in zip(rates, mms, strict=True)),
            "mem": step_memory("ours", m, video, mask, device, "bf16")}
        print(f"  [stage {f} frames] ours {rate:.1f} clips/s", file=sys.stderr, flush=True)
        save()
    del m
    st = res["stages"]
    if all("step_ms" in st.get(str(f), {}) for f in PLAN_STEPS):  # TPL's default plan, fixed batch
        floor, flops = floor_ratio({f: st[str(f)]["step_ms"] for f in PLAN_STEPS},
                                   {f: st[str(f)]["train_macs_clip"] for f in PLAN_STEPS})
        res["tpl_floor"] = {"floor": floor, "flops_ratio": flops}
        save()


def matrix(args: argparse.Namespace) -> None:
    import gc

    t0 = time.perf_counter()
    device = torch.device(args.device)
    variants = [v for v in args.variants.split(",") if v]
    frames_list = [int(f) for f in args.stage_frames.split(",") if f]
    res: dict[str, Any] = {"machine": machine(), "args": vars(args), "precision": "bf16",
                           "variants": {}, "stages": {}, "threads": torch.get_num_threads()}

    def save() -> None:
        res["seconds"] = time.perf_counter() - t0
        if args.json:
            tmp = args.json + ".tmp"
            with open(tmp, "w") as f:
                json.dump(res, f, indent=1, default=str)
            os.replace(tmp, args.json)

    n = args.matmul_n or (8192 if device.type == "cuda" else 1024)
    res["matmul_n"] = n
    res["matmul_bf16"] = matmul_rate(device, torch.bfloat16, n, reps=8)
    print(f"  matmul {n}: bf16 {res['matmul_bf16'] / 1e12:.2f} TFLOP/s", file=sys.stderr, flush=True)
    save()

    def tidy() -> None:
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        torch._dynamo.reset()

    # compile variants last: the stage rates (the loader's demand) must not wait for them
    early = [v for v in variants if "compile" not in v]
    late = [v for v in variants if "compile" in v]
    for group in (early, None, late):
        if group is None:
            try:
                stage_rates(args, device, frames_list, n, t0 + args.budget_s, res, save)
            except Exception as exc:  # noqa: BLE001
                res["stages"]["error"] = f"{type(exc).__name__}: {exc}"[:800]
            tidy()
            continue
        for v in group:
            left = args.budget_s - (time.perf_counter() - t0)
            # a compiled variant costs two compilations (ours, transformers)
            need = (30.0 if device.type == "cuda" else 10.0) * (2 if "compile" in v else 0.5)
            if left < need:
                res["variants"][v] = {"skipped": f"time budget ({left:.0f} s left, ~{need:.0f} s "
                                                 "needed)"}
                save()
                continue
            print(f"  [{v}] ...", file=sys.stderr, flush=True)
            try:
                res["variants"][v] = run_variant(args, v, device, n)
            except Exception as exc:  # noqa: BLE001 - one variant failing leaves the others
                res["variants"][v] = {"error": f"{type(exc).__name__}: {exc}"[:800]}
                print(f"  [{v}] failed: {res['variants'][v]['error']}", file=sys.stderr, flush=True)
            save()
            tidy()
    save()
    print(matrix_report(res))


def matrix_report(res: dict[str, Any]) -> str:
    a = res["args"]
    gib = 2**30
    lines = [f"{a['size']} {a['frames']}x{a['img_size']} batch {a['batch']} bf16 on "
             f"{res['machine'].get('gpu') or res['machine'].get('cpu')}; bf16 matmul "
             f"{res['matmul_n']}^3: {res['matmul_bf16'] / 1e12:.2f} TFLOP/s",
             "", "| variant | ours clips/s | hf clips/s | ours/hf | MFU ours | MFU hf | first step "
             "ours / hf (s) | peak memory ours / hf (GiB) |", "|---|---|---|---|---|---|---|---|"]
    for v, r in res["variants"].items():
        if "ours" not in r and "hf" not in r:
            lines.append(f"| {v} | {r.get('skipped') or r.get('error') or r.get('errors')} "
                         "| | | | | | |")
            continue

        def mem(side: str, r: dict = r) -> str:
            x = r.get(f"mem_{side}")
            return f"{x['peak'] / gib:.1f}" if x else "n/a"

        def num(key: str, fmt: str, scale: float = 1.0, r: dict = r) -> str:
            return format(r[key] * scale, fmt) if key in r else "n/a"

        lines.append(f"| {v} | {num('ours', '.1f')} | {num('hf', '.1f')} | "
                     f"{num('ratio_ours', '.2f')}x | {num('mfu_ours', '.1f', 100)}% | "
                     f"{num('mfu_hf', '.1f', 100)}% | {num('first_step_s_ours', '.1f')} / "
                     f"{num('first_step_s_hf', '.1f')} | {mem('ours')} / {mem('hf')} |")
        if r.get("errors"):
            lines.append(f"|  errors: {r['errors']} | | | | | | | |")
    lines += ["", "| stage frames | ours clips/s (eager) | step ms | MFU |", "|---|---|---|---|"]
    for f, r in res["stages"].items():
        if isinstance(r, dict) and "clips_per_s" in r:
            lines.append(f"| {f} | {r['clips_per_s']:.1f} | {r['step_ms']:.1f} | "
                         f"{100 * r['mfu']:.1f}% |")
        else:
            lines.append(f"| {f} | {r} | | |")
    if "tpl_floor" in res:
        t = res["tpl_floor"]
        lines += ["", f"TPL's default plan at this fixed batch (800 / 400 / 800 / 200 steps at 2 / 4 / 8 / 16 "
                  f"frames against 800 16-frame steps; bench/tpl_floor.py): model time {t['floor']:.3f}x "
                  f"the baseline's at {t['flops_ratio']:.3f}x its FLOPs (target FLOPs + 0.05: "
                  f"{'under' if t['floor'] <= t['flops_ratio'] + 0.05 else 'over'})."]
    return "\n".join(lines)


def report(res: dict[str, Any]) -> str:
    mb = 2**20
    mm = res["matmul"]
    lines = [
        f"threads: {res['threads']}; device: {res['args']['device']}; "
        f"transformers attention: {res.get('attn_impl_hf')}",
        f"matmul {res['matmul_n']}^3 (2n^3 FLOPs): fp32 {mm['fp32'] / 1e9:.1f} GFLOP/s, "
        f"bf16 {mm['bf16'] / 1e9:.1f} GFLOP/s (at start, best of 8); per round (best of 3, "
        "median): " + "; ".join(
            f"{k} {p} {statistics.median(t[p]['matmul_rounds']) / 1e9:.0f} "
            f"(max {max(t[p]['matmul_rounds']) / 1e9:.0f}) GFLOP/s"
            for k, t in res["throughput"].items() for p in ("fp32", "bf16") if p in t),
        "",
        f"load average (1/5/15 min) at start {res['loadavg_start']}, at end {res['loadavg_end']}",
        "",
        "ours = progvid's engine step (VideoMAE parameter groups, fused AdamW); model = the same "
        "progvid model under torch's default AdamW, like transformers' side (the model alone); "
        "hf = transformers' VideoMAEForPreTraining under torch's default AdamW.",
        "",
        "| config | precision | side | clips/s | **/hf** (median clips/s) "
        "| median of per-round ratios | best block /hf | MFU | hf clips/s | MFU hf |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, t in res["throughput"].items():
        for p in ("fp32", "bf16"):
            if p not in t:
                continue
            r = t[p]
            for side in (s for s in SIDES if s != "hf" and s in r):
                lines.append(
                    f"| {key} | {p} | {side} | {r[side]:.2f} | **{r[f'ratio_{side}']:.2f}x** "
                    f"| {r[f'ratio_{side}_round_median']:.2f}x | {r[f'ratio_{side}_best']:.2f}x "
                    f"| {100 * r[f'mfu_{side}']:.1f}% | {r['hf']:.2f} "
                    f"| {100 * r['mfu_hf']:.1f}% |")
    for side in ("ours", "model"):
        rows = [f"{k} {p}: " + ", ".join(f"{x:.2f}" for x in t[p][f"ratio_{side}_rounds"])
                for k, t in res["throughput"].items() for p in ("fp32", "bf16")
                if p in t and f"ratio_{side}_rounds" in t[p]]
        if rows:
            lines.append(f"\nper-round {side}/hf ratios: " + "; ".join(rows))
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
