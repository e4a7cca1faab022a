"""VideoMAE V2 dual masking vs v1, side by side: training MACs and measured step time.

For each model size and clip length, one process builds the same VideoMAE twice (decoder mask
none / running cell at `--decoder-ratio`, default 0.5, identical weights) and times forward + backward + AdamW on
the same random clips, alternating v1 and dual step by step (median of `--steps` each, after a
warm-up step). MACs are progvid's analytic count (`progressive.flops`, the official convention:
the cube embedding counted on all tokens; `executed` counts what runs).

    .venv/bin/python bench/dual_masking.py --out bench/dual_masking.md
"""
# ruff: noqa: E402

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: progvid/__init__.py

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from evidence import write_report  # bench/ is sys.path[0]

from progvid.models import videomae
from progvid.progressive.flops import model_flops


def step_time(model: torch.nn.Module, video: torch.Tensor, opt: torch.optim.Optimizer,
              gen: torch.Generator, precision: str) -> float:
    dtype = {"bf16": torch.bfloat16}.get(precision)
    t = time.perf_counter()
    b, _, frames, h, w = video.shape
    mask = model.random_mask(b, frames, video.device, gen, img_size=(h, w))
    dmask = model.random_decoder_mask(b, frames, video.device, gen, img_size=(h, w))
    with torch.autocast(video.device.type, dtype=dtype, enabled=dtype is not None):
        loss = model(video, mask, decoder_mask=dmask).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    if video.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def measure(size: str, frames: int, img: int, batch: int, steps: int, device: str,
            precision: str, decoder_ratio: float = 0.5) -> dict:
    torch.manual_seed(0)
    v1 = videomae(size, num_frames=frames, img_size=img).to(device).train()
    dual = videomae(size, num_frames=frames, img_size=img, decoder_mask="running_cell",
                    decoder_mask_ratio=decoder_ratio).to(device).train()
    dual.load_state_dict(v1.state_dict())
    opts = {m: torch.optim.AdamW(m.parameters(), lr=1e-6, fused=True) for m in (v1, dual)}
    video = torch.randn(batch, 3, frames, img, img, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    times: dict[str, list[float]] = {"v1": [], "dual": []}
    for i in range(steps + 1):
        for name, m in (("v1", v1), ("dual", dual)) if i % 2 == 0 else (("dual", dual), ("v1", v1)):
            t = step_time(m, video, opts[m], gen, precision)
            if i:  # the first step of each warms up kernels and the allocator
                times[name].append(t)
    f1, f2 = model_flops(v1, frames), model_flops(dual, frames)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"size": size, "frames": frames, "img": img, "batch": batch,
            "gmacs_train_v1": f1.train / 1e9, "gmacs_train_dual": f2.train / 1e9,
            "macs_ratio": f2.train / f1.train, "executed_ratio": f2.executed_train / f1.executed_train,
            "decoder_tokens_v1": f1.decoder_tokens, "decoder_tokens_dual": f2.decoder_tokens,
            "step_s_v1": med["v1"], "step_s_dual": med["dual"], "time_ratio": med["dual"] / med["v1"],
            "steps": steps}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="small,base")
    p.add_argument("--frames", default="16,2")
    p.add_argument("--img", type=int, default=224)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--decoder-ratio", type=float, default=0.5, choices=(0.25, 0.5, 0.75),
                   help="the running cell's decoder masking ratio (VideoMAE V2's default 0.5)")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for size in args.sizes.split(","):
        for frames in (int(f) for f in args.frames.split(",")):
            row = measure(size, frames, args.img, args.batch, args.steps, args.device, args.precision,
                          args.decoder_ratio)
            rows.append(row)
            print(json.dumps(row), flush=True)
    load = os.getloadavg()
    lines = [f"# Dual masking (VideoMAE V2 running cell, decoder ratio {args.decoder_ratio:g}) vs v1", "",
             f"- date: {time.strftime('%Y-%m-%d')}; {platform.machine()}, {os.cpu_count()} CPUs, "
             f"torch {torch.__version__}, device {args.device}, {args.precision}, {args.threads} threads; "
             f"load average at the end {load[0]:.1f}",
             f"- command: `.venv/bin/python bench/dual_masking.py --sizes {args.sizes} --frames "
             f"{args.frames} --img {args.img} --batch {args.batch} --steps {args.steps} --device "
             f"{args.device} --precision {args.precision} --threads {args.threads} --decoder-ratio {args.decoder_ratio:g}`",
             "- mask ratio 0.9 (tube), decoder 4 blocks; v1 and dual share weights and clips; steps "
             "alternate; median step time (forward, backward, fused AdamW)", "",
             "| model | frames | decoder tokens v1 -> dual | training GMACs v1 | dual | MACs ratio "
             "(official / executed) | step s v1 | dual | time ratio |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| ViT-{r['size'][0].upper()} | {r['frames']} | {r['decoder_tokens_v1']} -> "
                     f"{r['decoder_tokens_dual']} | {r['gmacs_train_v1']:.4g} | {r['gmacs_train_dual']:.4g} | "
                     f"{r['macs_ratio']:.3f} / {r['executed_ratio']:.3f} | {r['step_s_v1']:.3f} | "
                     f"{r['step_s_dual']:.3f} | {r['time_ratio']:.3f} |")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        write_report(Path(args.out), report)  # keeps the hand-written reading
    return 0


if __name__ == "__main__":
    sys.exit(main())
