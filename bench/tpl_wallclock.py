"""TPL vs the one-stage VideoMAE baseline in wall-clock time at equal N_e, side by side.

One process runs every variant in turn, `--rounds` times in alternating order, on the same data:
- `videomae`: the baseline recipe (`tiny_videomae`: one 16-frame stage);
- `tpl`: the default TPL plan as shipped (`tiny_tpl`: clips per decode `auto`, fixed batch);
- `tpl_1clip`: the same plan cutting one clip per decode (how progvid ran TPL before);
- `tpl_scaled`: the plan with `plan.batch_rule: scale` (batch x f_max / f_i, seed FIG. 10);
- `tpl_1transfer`: the shipped plan with workers handing over one batch at a time
  (`data.transfer_batches=1`, how progvid ran before batches were grouped per hand-over);
- `videomae_dual`, `tpl_dual` (not run unless named in `--variants`): the baseline and the
  shipped plan with VideoMAE V2's dual masking (`model.decoder_mask=running_cell`, ratio 0.5);
  `videomae_dual75`, `tpl_dual75`: the same at decoder ratio 0.75.
Then the model alone (forward, backward, fused AdamW on random clips, one thread) at each
length, which gives the fixed-batch floor: the wall ratio TPL would have with a free loader and
a free training loop, sum_i steps_i x t(f_i) / (steps_base x t(16)).
For each: the training loop's wall seconds (model and data already set up; the ratio of the
medians and, less sensitive to the machine's drift, the median of each round's ratio to the
same round's baseline), training FLOPs,
steps, and the data-wait fraction of each stage (time the loop waited for the loader / time).
Then the loader alone: clips/s at 2, 4, 8 and 16 frames with the recipe's worker count, one
clip per decode and the automatic number.

    .venv/bin/python bench/tpl_wallclock.py --out bench/tpl_wallclock.md

bench/tpl_wallclock.md is a dated log of runs with hand-written readings: `--out` appends the
report to an existing file as a new section (its title a level lower), never overwriting it.
"""
# ruff: noqa: E402

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: progvid/__init__.py

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from tpl_floor import plan_ratio  # bench/ is sys.path[0]

from progvid.config import load_config
from progvid.data.datasets import build_samples
from progvid.data.loader import train_loader
from progvid.data.synthetic import write_dataset
from progvid.metrics import read_metrics
from progvid.tasks.pretrain import run_pretrain

VARIANTS = {
    "videomae": ("tiny_videomae", []),
    "tpl": ("tiny_tpl", []),
    "tpl_1clip": ("tiny_tpl", ["plan.clips_per_decode=1"]),
    "tpl_scaled": ("tiny_tpl", ["plan.batch_rule=scale", "plan.max_batch=64"]),
    "tpl_1transfer": ("tiny_tpl", ["data.transfer_batches=1"]),
    # VideoMAE V2's dual masking (running cell, decoder ratio 0.5), alone and under TPL
    "videomae_dual": ("tiny_videomae", ["model.decoder_mask=running_cell"]),
    "tpl_dual": ("tiny_tpl", ["model.decoder_mask=running_cell"]),
    # the same at decoder ratio 0.75 (the running cell keeps a quarter of the positions)
    "videomae_dual75": ("tiny_videomae", ["model.decoder_mask=running_cell", "model.decoder_mask_ratio=0.75"]),
    "tpl_dual75": ("tiny_tpl", ["model.decoder_mask=running_cell", "model.decoder_mask_ratio=0.75"]),
}

DEFAULT_VARIANTS = "videomae,tpl,tpl_1clip,tpl_scaled,tpl_1transfer"


def run_variant(name: str, data: Path, work: Path, epochs: float, round_: int,
                extra: list[str]) -> dict:
    recipe, sets = VARIANTS[name]
    cfg = load_config(recipe, [f"data.root={data}", f"budget.epochs={epochs}", "train.log_every=5",
                               "train.ckpt_every=1000000", "train.tensorboard=false", *sets, *extra])
    out = work / f"{name}_{round_}"
    if out.exists():
        import shutil

        shutil.rmtree(out)
    before = _cpu()
    res = run_pretrain(cfg, out=str(out), progress=False)
    cpu = _cpu() - before
    recs = read_metrics(out)
    wait: dict[int, list[float]] = {}
    for r in recs:
        wait.setdefault(int(r["stage"]), []).append(float(r["data_wait_fraction"]))
    return {"variant": name, "round": round_, "seconds": res.seconds, "cpu_seconds": cpu,
            "steps": res.steps,
            "pflops": res.flops / 1e15, "final_loss": res.final_loss,
            "data_wait": {s: statistics.mean(v) for s, v in sorted(wait.items())},
            "stages": stage_times(recs)}


def stage_times(recs: list[dict]) -> dict[int, dict[str, float]]:
    """Per stage, from a run's metric records (one every `train.log_every` steps, each with the
    loop's elapsed `time`): its steps and seconds, the steady step time (median of the logged
    intervals' time per step, in ms) and the excess over steps x steady (s): what the stage's
    first steps at a new shape and any loader start-ups during it cost."""
    out: dict[int, dict] = {}
    prev_t, prev_step = 0.0, -1
    for r in recs:
        s = out.setdefault(int(r["stage"]), {"steps": 0, "seconds": 0.0, "per_step": []})
        dt, ds = float(r["time"]) - prev_t, int(r["step"]) - prev_step
        s["steps"] += ds
        s["seconds"] += dt
        s["per_step"].append(dt / ds)
        prev_t, prev_step = float(r["time"]), int(r["step"])
    res = {}
    for k, s in out.items():
        steady = statistics.median(s["per_step"])
        res[k] = {"steps": s["steps"], "seconds": s["seconds"], "steady_ms": 1000 * steady,
                  "excess_s": s["seconds"] - s["steps"] * steady}
    return res


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the loader workers)."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def loader_rate(data: Path, frames: int, clips_per_decode: int, batches: int,
                sets: list[str] = ()) -> float:
    cfg = load_config("tiny_tpl", [f"data.root={data}", *sets])
    samples = build_samples(cfg.data, "train").samples
    loader = train_loader(cfg.data, samples, frames=frames, batch_size=cfg.train.batch_size,
                          seed=0, rank=0, world=1, clips_per_decode=clips_per_decode)
    loader.sampler.set_epoch(0)
    it = iter(loader)
    next(it)  # workers started, first batch in
    t, clips = time.perf_counter(), 0
    for _ in range(batches):
        try:
            clips += next(it)["video"].shape[0]
        except StopIteration:
            loader.sampler.set_epoch(1)
            it = iter(loader)
    return clips / (time.perf_counter() - t)


def model_step_seconds(frames: int, steps: int = 40, sets: list[str] = ()) -> float:
    """Median seconds of one training step of the recipe's model alone at its batch (progvid's
    own probe, as `progvid plan --probe` times it: fresh masks, forward, backward, the trainer's
    fused AdamW); one torch thread (what `train.threads: auto` gives the recipe's one-worker runs
    on 2 cores)."""
    from progvid.progressive.plan import probe_seconds_per_step
    from progvid.tasks.pretrain import build_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = load_config("tiny_tpl", list(sets))
        model = build_model(cfg)
        return probe_seconds_per_step(model, frames, cfg.train.batch_size, model.img_size,
                                      steps=steps, min_seconds=0.0, warmup=5)
    finally:
        torch.set_num_threads(threads)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="runs/bench_wallclock")
    p.add_argument("--train", type=int, default=400, help="training videos")
    p.add_argument("--epochs", type=float, default=16, help="N_e, epochs at 16 frames")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--variants", default=DEFAULT_VARIANTS)
    p.add_argument("--loader-batches", type=int, default=200)
    p.add_argument("--set", action="append", default=[], help="extra overrides for every run")
    p.add_argument("--size", type=int, default=32, help="side of the synthetic videos (pixels)")
    p.add_argument("--model-steps", type=int, default=40, help="timed steps per length, model alone")
    p.add_argument("--out", default=None, help="markdown results file")
    args = p.parse_args()
    work = Path(args.work)
    data = work / "data"
    write_dataset(data, train=args.train, val=50, size=args.size, frames=16, seed=0, workers=2)
    names = args.variants.split(",")
    rows = []
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            row = run_variant(name, data, work, args.epochs, r, args.set)
            rows.append(row)
            print(json.dumps(row), flush=True)
    loads = os.getloadavg()
    rates = {}
    batch = load_config("tiny_tpl", args.set).train.batch_size
    for frames in (2, 4, 8, 16):
        # what `plan.clips_per_decode: auto` cuts: about 16 / f, a divisor of the batch
        auto = max(k for k in range(1, 16 // frames + 1) if batch % k == 0)
        rates[frames] = {k: loader_rate(data, frames, k, args.loader_batches, args.set)
                         for k in sorted({1, auto})}
        print(json.dumps({"loader_frames": frames, **{f"clips_per_s_{k}": v for k, v in rates[frames].items()}}),
              flush=True)
    model_s = {f: model_step_seconds(f, args.model_steps, args.set) for f in (2, 4, 8, 16)}
    print(json.dumps({"model_step_ms": {f: 1000 * v for f, v in model_s.items()}}), flush=True)
    report = summarize(rows, rates, args, loads, model_s)
    print(report)
    if args.out:
        out = Path(args.out)
        if out.exists():  # a log: the new run becomes its next section
            title, _, body = report.partition("\n")
            report = out.read_text().rstrip("\n") + "\n\n#" + title + f" ({time.strftime('%Y-%m-%d')})\n" + body
        out.write_text(report)
    return 0


def summarize(rows: list[dict], rates: dict, args: argparse.Namespace, loads: tuple,
              model_s: dict[int, float]) -> str:
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["variant"], []).append(r)
    base = statistics.median(r["seconds"] for r in by["videomae"])
    base_cpu = statistics.median(r["cpu_seconds"] for r in by["videomae"])
    base_flops = by["videomae"][0]["pflops"]
    lines = [
        "# TPL wall-clock at equal N_e (CPU, " + ("recipes with overrides)" if args.set else "tiny setting)"), "",
        f"- date: {time.strftime('%Y-%m-%d')}; machine: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, torch threads per run: train.threads auto; load average at the end "
        f"{loads[0]:.1f} / {loads[1]:.1f} / {loads[2]:.1f}",
        f"- command: `.venv/bin/python bench/tpl_wallclock.py --train {args.train} --epochs {args.epochs:g} "
        f"--rounds {args.rounds}" + (f" --size {args.size}" if args.size != 32 else "")
        + (f" --variants {args.variants}" if args.variants != DEFAULT_VARIANTS else "")
        + (f" --model-steps {args.model_steps}" if args.model_steps != 40 else "")
        + (f" --loader-batches {args.loader_batches}" if args.loader_batches != 200 else "") + "`"
        + (f" with {args.set}" if args.set else ""),
        f"- data: {args.train} synthetic training videos, {args.size}x{args.size}, 16 frames; recipes "
        "`tiny_videomae` / `tiny_tpl` "
        + ("with the overrides above (1 loader worker)" if args.set
           else "(width 96, depth 4, patch 8, batch 8, 1 loader worker)"), "",
        "| variant | steps | training PFLOPs (MACs) | FLOPs / baseline | loop wall s (median) | "
        "wall / baseline | paired: each round / its baseline (median; range) | "
        "target (FLOPs ratio + 0.05) | CPU s (median) | CPU / baseline | data-wait per stage |",
        "|---|---|---|---|---|---|---|---|---|---|---|"]
    base_of = {r["round"]: r["seconds"] for r in by["videomae"]}
    for name, rs in by.items():
        wall = statistics.median(r["seconds"] for r in rs)
        fr = rs[0]["pflops"] / base_flops
        waits = ", ".join(f"{statistics.mean(r['data_wait'][s] for r in rs):.2f}"
                          for s in sorted(rs[0]["data_wait"]))
        each = ", ".join(f"{r['seconds']:.1f}" for r in rs)
        cpu = statistics.median(r["cpu_seconds"] for r in rs)
        paired = [r["seconds"] / base_of[r["round"]] for r in rs]
        pair = "" if name == "videomae" else (f"{statistics.median(paired):.3f} "
                                              f"({min(paired):.3f}-{max(paired):.3f})")
        # met only when both readings are at or under it
        met = max(wall / base, statistics.median(paired)) <= fr + 0.05
        target = "" if name == "videomae" else f"{fr + 0.05:.3f} ({'met' if met else 'missed'})"
        lines.append(f"| {name} | {rs[0]['steps']} | {rs[0]['pflops']:.4g} | {fr:.3f} | {wall:.1f} "
                     f"({each}) | {wall / base:.3f} | {pair} | {target} | {cpu:.1f} | "
                     f"{cpu / base_cpu:.3f} | {waits} |")
    if all("stages" in r for r in rows):
        lines += ["", "Where each run's loop time goes, per stage (median over rounds): steps, seconds, the "
                  "steady step time (median of the logged 5-step intervals) and the excess over steps x "
                  "steady (the first steps at a new shape, the next stage's loader starting):", "",
                  "| variant | per stage: steps, s, steady ms per step, excess s | excess in all, s |",
                  "|---|---|---|"]
        for name, rs in by.items():
            stages = sorted(rs[0]["stages"], key=int)
            med = {k: {f: statistics.median(r["stages"][k][f] for r in rs)
                       for f in ("steps", "seconds", "steady_ms", "excess_s")} for k in stages}
            each = "; ".join(f"{m['steps']:.0f}, {m['seconds']:.2f}, {m['steady_ms']:.1f}, {m['excess_s']:.2f}"
                             for m in med.values())
            total = statistics.median(sum(st["excess_s"] for st in r["stages"].values()) for r in rs)
            lines.append(f"| {name} | {each} | {total:.2f} |")
    lines += ["", "Loader alone (the recipe's worker count and batch), clips/s:", "",
              "| frames | 1 clip per decode | automatic (16 / f) | ratio |", "|---|---|---|---|"]
    for frames, r in rates.items():
        one = r[1]
        auto_k = max(r)
        lines.append(f"| {frames} | {one:.1f} | {r[auto_k]:.1f} ({auto_k} per decode) | {r[auto_k] / one:.2f} |")
    lines += ["", "Model alone (forward, backward, fused AdamW; the recipe's batch, one thread), median ms "
              "per step:", "",
              "| frames | ms per step | per frame, relative to 16 frames |", "|---|---|---|"]
    for f, t in model_s.items():
        lines.append(f"| {f} | {1000 * t:.2f} | {t / f / (model_s[16] / 16):.2f} |")
    if "tpl" in by:
        steps = _stage_steps(by["tpl"][0], by["videomae"][0]["steps"])
        floor = plan_ratio(model_s)  # the same as steps_f x t(f) / (steps_base x t(16))
        lines += ["", f"Fixed-batch floor: the shipped plan's steps per stage {steps} at those step times "
                  f"give **{floor:.3f}x** the baseline's model time, against a FLOPs ratio of "
                  f"{by['tpl'][0]['pflops'] / base_flops:.3f}."]
    return "\n".join(lines) + "\n"


def _stage_steps(row: dict, base_steps: int) -> dict[int, int]:
    """Steps per stage length of the shipped TPL plan (shares 1/8, 1/8, 1/2, 1/4 of the
    baseline's frames, as `tiny_tpl` says), checked against the run's step count."""
    cfg = load_config("tiny_tpl")
    steps = {s.frames: round(s.share * base_steps * 16 / s.frames) for s in cfg.plan.stages}
    if sum(steps.values()) != row["steps"]:
        raise SystemExit(f"stage steps {steps} do not add up to the run's {row['steps']}")
    return steps


if __name__ == "__main__":
    sys.exit(main())
