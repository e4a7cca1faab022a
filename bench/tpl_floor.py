"""How TPL's fixed-batch wall-clock floor falls as the model grows (CPU, model alone).

With a fixed batch, TPL's default plan (2 / 4 / 8 / 16 frames, shares 1/8, 1/8, 1/2, 1/4 of the
baseline's frames) takes 800 / 400 / 800 / 200 steps where the one-stage baseline takes 800
16-frame steps: both read the same number of frames, and TPL pays 1,400 more fixed per-step
costs (operator dispatch, the optimizer). On the tiny CPU recipe that fixed cost is most of a
2-frame step, so TPL cannot meet its FLOPs ratio + 0.05 in time (bench/tpl_wallclock.md). This
script measures the same floor for bigger models, where a step's fixed cost is a smaller share:

    floor = sum_f steps_f x t(f) / (800 x t(16))

t(f) is the median time of one training step of the model alone at f frames (fresh masks,
forward, backward, gradient clipping, fused AdamW over the trainer's two parameter groups;
random clips, no loader), the lengths measured in alternating order. The FLOPs ratio comes from
the model's own count (`model_flops`, the official convention), the same way the run reports it.
A spec ending in `+compile` runs the same step through `torch.compile` with static shapes (one
graph per clip length; `train.compile` leaves torch to mark the frame dimension dynamic once the
length changes); its first call at each length is timed apart.

    .venv/bin/python bench/tpl_floor.py --out bench/tpl_floor.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from progvid.engine.trainer import param_groups
from progvid.models import videomae
from progvid.progressive.flops import model_flops

PLAN_STEPS = {2: 800, 4: 400, 8: 800, 16: 200}  # the default plan at the baseline's 800 steps
BASE_STEPS = 800


def plan_ratio(per_step: dict[int, float]) -> float:
    """The default plan's total of a per-step cost (seconds, MACs) at 2, 4, 8 and 16 frames
    against the one-stage baseline's, at the same batch."""
    return sum(n * per_step[f] for f, n in PLAN_STEPS.items()) / (BASE_STEPS * per_step[16])


def floor_ratio(step_s: dict[int, float], macs: dict[int, float]) -> tuple[float, float]:
    """(TPL's fixed-batch time floor, its FLOPs ratio) against the one-stage baseline, from the
    step time and the training MACs of one step at 2, 4, 8 and 16 frames (same batch)."""
    return plan_ratio(step_s), plan_ratio(macs)


def build(spec: str, seed: int = 0) -> tuple[torch.nn.Module, int, int]:
    """(model, input size, batch) for `recipe=NAME` (a pre-training recipe's model and batch,
    e.g. `recipe=tiny_tpl`) or `size@img:batch[/patch]` (e.g. `small@112:8`: the official
    geometry, patch 16 unless given); a `+compile` suffix changes nothing here."""
    torch.manual_seed(seed)
    spec = spec.removesuffix("+compile")
    if spec.startswith("recipe="):
        from progvid.config import load_config
        from progvid.tasks.pretrain import build_model

        cfg = load_config(spec.removeprefix("recipe="))
        model = build_model(cfg)
        return model.train(), model.img_size, cfg.train.batch_size
    head, _, rest = spec.partition(":")
    size, _, img = head.partition("@")
    batch, _, patch = rest.partition("/")
    model = videomae(size, num_frames=16, img_size=int(img), patch_size=int(patch or 16))
    return model.train(), int(img), int(batch)


def step_times(spec: str, rounds: int, steps: int,
               seed: int = 0) -> tuple[dict[int, float], dict[int, float], dict[int, float]]:
    """Median seconds per training step and training MACs per step, at each plan length (under
    key 0 the median seconds of the optimizer's part of a step: clipping, AdamW, zeroing, which
    does not depend on the clip); and the seconds of the first step at each length (with
    `+compile`, the compilation)."""
    model, img, batch = build(spec, seed)
    forward = torch.compile(model, dynamic=False) if spec.endswith("+compile") else model
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-4, fused=True)
    gen = torch.Generator().manual_seed(seed)
    clips = {f: torch.randn(batch, 3, f, img, img) for f in PLAN_STEPS}

    optimizer_s: list[float] = []

    def one(f: int) -> float:
        video = clips[f]
        t = time.perf_counter()
        mask = model.random_mask(batch, f, video.device, gen, img_size=(img, img))
        forward(video, mask).loss.backward()
        t_opt = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        end = time.perf_counter()
        optimizer_s.append(end - t_opt)
        return end - t

    first = {f: one(f) for f in PLAN_STEPS}  # warm-up: first calls at a new shape
    for f in PLAN_STEPS:
        one(f)
    times: dict[int, list[float]] = {f: [] for f in PLAN_STEPS}
    order = list(PLAN_STEPS)
    for r in range(rounds):
        for f in (order if r % 2 == 0 else order[::-1]):
            times[f] += [one(f) for _ in range(steps)]
    macs = {f: model_flops(model, f, img).train * batch for f in PLAN_STEPS}
    median = {f: statistics.median(v) for f, v in times.items()}
    median[0] = statistics.median(optimizer_s)  # key 0: the optimizer's part (clip, AdamW, zero)
    return median, macs, first


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--specs", default="recipe=tiny_tpl,small@64:8,small@112:8,base@112:4,small@224:2,base@224:1",
                   help="comma-separated recipe=NAME or size@img:batch[/patch]")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=4, help="timed steps per length per round")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    params: dict[str, int] = {}
    for spec in args.specs.split(","):
        t, macs, first = step_times(spec, args.rounds, args.steps)
        params[spec] = sum(p.numel() for p in build(spec)[0].parameters())
        floor, fr = floor_ratio(t, macs)
        rows.append((spec, t, floor, fr, params[spec], sum(first.values())))
        print(spec, {f: round(1000 * v, 2) for f, v in t.items() if f}, f"floor {floor:.3f} flops {fr:.3f}",
              flush=True)
    lines = ["# TPL's fixed-batch wall-clock floor by model size (model alone, CPU)", "",
             f"- date: {time.strftime('%Y-%m-%d')}; machine: {platform.machine()}, {os.cpu_count()} CPUs, "
             f"torch {torch.__version__}, {args.threads} thread(s), fp32; load average at the end "
             f"{os.getloadavg()[0]:.1f}",
             f"- command: `.venv/bin/python bench/tpl_floor.py --specs {args.specs} --rounds {args.rounds} "
             f"--steps {args.steps} --threads {args.threads}`",
             "- plan: 800 / 400 / 800 / 200 steps at 2 / 4 / 8 / 16 frames against 800 16-frame steps; "
             "mask 0.9 (tube), decoder 4 blocks; median of "
             f"{args.rounds * args.steps} steps per length, lengths alternating", "",
             "| model @ input: batch | parameters (M) | ms per step at 2 / 4 / 8 / 16 frames | of which the "
             "optimizer (clip, AdamW, zero), ms | 2-frame step / 16-frame step (work: about 1/8) | floor: "
             "TPL time / baseline time | FLOPs ratio | target (FLOPs + 0.05) | first step at each "
             "length, s in all |",
             "|---|---|---|---|---|---|---|---|---|"]
    for spec, t, floor, fr, n_params, first_s in rows:
        ms = " / ".join(f"{1000 * t[f]:.1f}" for f in PLAN_STEPS)
        verdict = "under" if floor <= fr + 0.05 else "over"
        lines.append(f"| {spec} | {n_params / 1e6:.1f} | {ms} | {1000 * t[0]:.1f} | {t[2] / t[16]:.3f} | "
                     f"{floor:.3f} | {fr:.3f} | {fr + 0.05:.3f} (floor {verdict}) | {first_s:.1f} |")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        from evidence import write_report  # bench/ is sys.path[0]

        write_report(Path(args.out), report)  # keeps the hand-written reading
    return 0


if __name__ == "__main__":
    sys.exit(main())
