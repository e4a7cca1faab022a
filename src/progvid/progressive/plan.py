"""TPL plans: stages of growing clip length sharing one budget, turned into a `Schedule`.

Budget: N_e epochs at the reference clip length f_ref (16). Stage i gets share p_i of the frames
processed, i.e. N_ei = p_i * N_e * f_ref / f_i epochs at its own length f_i ("nominal" budget;
seed 000, "transfer the allocated budget to number of epochs by (p_i N_f)/(N_d f_i)"). Its
measured cost in FLOPs is lower for short clips because attention is quadratic; `plan_table`
reports both.

Learning rate (seed 000, FIG. 9): mechanism 1 (`per_stage`, default) gives every stage its own
full warmup + cosine schedule at lr_i = base_lr * total_batch_i / 256 (= lr_0 * bz_i / bz_0);
mechanism 2 (`global`) runs one warmup + cosine over the sum of all stage steps; `step` is the
step-decay ablation. Per-stage warmup keeps the baseline's warmup fraction: a stage of N_ei
epochs warms up for warmup_epochs * N_ei / N_e epochs (40 of 800 for the baseline itself).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from ..config import PretrainConfig
from ..engine.schedule import (
    CosineLR,
    Schedule,
    Stage,
    StepLR,
    scaled_lr,
    steps_for,
    total_batch,
    warmup_steps,
)
from ..errors import ConfigError

SHARE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class PlannedStage:
    """A stage with its arithmetic done: epochs, steps, batch and learning rates."""

    index: int
    frames: int
    share: float
    epochs: float  # at this stage's own clip length
    batch_size: int  # per process
    total_batch: int  # over processes and accumulation
    steps: int
    lr: float  # peak
    min_lr: float
    warmup_steps: int
    sampling_rate: int
    clips_per_decode: int = 1  # training clips cut from one decoded video

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def validate_plan(cfg: PretrainConfig, tubelet: int | None = None) -> list[tuple[int, Any]]:
    """Check the plan; return (original index, stage) pairs with zero-share stages dropped."""
    stages = list(enumerate(cfg.plan.stages))
    tub = tubelet or cfg.model.tubelet_size
    if not stages:
        raise ConfigError("plan.stages: the plan has no stages")
    for i, st in stages:
        if st.frames % tub:
            raise ConfigError(f"plan.stages.{i}.frames: {st.frames} is not a multiple of the "
                              f"tubelet size {tub}")
    for (i, a), (_, b) in zip(stages, stages[1:], strict=False):
        if b.frames <= a.frames:
            raise ConfigError(f"plan.stages.{i + 1}.frames: frames must increase strictly "
                              f"({a.frames} then {b.frames})")
    total = sum(st.share for _, st in stages)
    if abs(total - 1.0) > SHARE_TOLERANCE:
        raise ConfigError(f"plan.stages: shares sum to {total:.6g}, not 1")
    kept = [(i, st) for i, st in stages if st.share > 0]
    if not kept:
        raise ConfigError("plan.stages: every stage has share 0")
    if cfg.plan.multigrid and (cfg.plan.batch_rule != "fixed" or any(st.batch_size for _, st in stages)):
        raise ConfigError("plan.multigrid: every clip length is drawn at one batch size, so "
                          "per-length batches (plan.batch_rule: scale, a stage's batch_size) "
                          "would change the mix of work; use plan.batch_rule: fixed")
    return kept


def stage_epochs(share: float, budget_epochs: float, frames: int, ref_frames: int = 16) -> float:
    """N_ei = p_i * N_e * f_ref / f_i."""
    return share * budget_epochs * ref_frames / frames


def build_plan(cfg: PretrainConfig, dataset_size: int, world: int = 1) -> list[PlannedStage]:
    """The arithmetic of a plan for a dataset of `dataset_size` clips on `world` processes."""
    if dataset_size <= 0:
        raise ConfigError("data: the training set is empty")
    kept = validate_plan(cfg)
    budget = cfg.budget.epochs * cfg.budget.scale
    longest = max(st.frames for _, st in kept)
    out = []
    for i, st in kept:
        bs = stage_batch(cfg, st, longest)
        batch = total_batch(bs, world, cfg.optim.accum_steps)
        epochs = stage_epochs(st.share, budget, st.frames, cfg.budget.ref_frames)
        steps = steps_for(epochs, dataset_size, batch)
        warm_epochs = st.warmup_epochs if st.warmup_epochs is not None else (
            cfg.optim.warmup_epochs * epochs / budget)
        rate = cfg.data.sampling_rate
        if cfg.plan.temporal == "span":  # keep the time span of the longest stage that runs
            span = longest * cfg.data.sampling_rate
            rate = max(1, int(span / st.frames + 0.5))
        out.append(PlannedStage(
            index=i, frames=st.frames, share=st.share, epochs=epochs, batch_size=bs,
            total_batch=batch, steps=steps, lr=scaled_lr(cfg.optim.base_lr, batch),
            min_lr=scaled_lr(cfg.optim.min_lr, batch),
            warmup_steps=warmup_steps(warm_epochs, dataset_size, batch, steps),
            sampling_rate=rate, clips_per_decode=clips_per_decode(cfg, st, bs, longest)))
    return out


def stage_batch(cfg: PretrainConfig, st: Any, longest: int) -> int:
    """A stage's batch per process: its own, else `train.batch_size`, times f_max / f_i under
    `plan.batch_rule: scale` (seed FIG. 10: short clips afford bigger batches) up to
    `plan.max_batch`."""
    if st.batch_size:
        return st.batch_size
    bs = cfg.train.batch_size
    if cfg.plan.batch_rule == "scale":
        bs = bs * max(1, round(longest / st.frames))
        if cfg.plan.max_batch is not None:
            bs = min(bs, max(cfg.plan.max_batch, cfg.train.batch_size))
    return bs


def clips_per_decode(cfg: PretrainConfig, st: Any, batch: int, longest: int) -> int:
    """Training clips cut from each decoded video in a stage: the stage's or the plan's value,
    or with `auto` about f_max / f_i (a 2-frame clip costs about an eighth of a 16-frame one
    to train but the same to decode, so eight of them share one decode). Always a divisor of
    the stage's batch; 1 for the longest clips."""
    want = st.clips_per_decode or cfg.plan.clips_per_decode
    if want == "auto":
        want = max(1, round(longest / st.frames))
    return _divisor_at_most(batch, int(want))


def _divisor_at_most(n: int, k: int) -> int:
    """The largest divisor of n that is at most k (at least 1)."""
    k = max(1, min(k, n))
    while n % k:
        k -= 1
    return k


def build_schedule(cfg: PretrainConfig, planned: list[PlannedStage],
                   flops_per_clip: Callable[[int], float] | None = None) -> Schedule:
    """Stages for the engine, with the plan's LR rule and per-clip training FLOPs."""
    rule = cfg.optim.lr_rule
    total = sum(p.steps for p in planned)
    first = planned[0]
    global_warmup = min(sum(p.warmup_steps for p in planned), total - 1) if total > 1 else 0
    stages, offset = [], 0
    for p in planned:
        if rule == "per_stage":
            lr, lr_offset = CosineLR(p.lr, p.min_lr, p.warmup_steps, p.steps), 0
        elif rule == "global":  # one schedule over every stage; its peak follows each stage's
            # total batch (lr_0 = base_lr x batch / 256: the same peak in every stage unless the
            # stages' batches differ, as under plan.batch_rule: scale)
            lr, lr_offset = CosineLR(p.lr, p.min_lr, global_warmup, total), offset
        else:
            lr, lr_offset = StepLR(p.lr, p.warmup_steps, p.steps), 0
        stages.append(Stage(
            steps=p.steps, num_frames=p.frames, batch_size=p.batch_size, lr=lr,
            name=f"stage{p.index + 1}", lr_offset=lr_offset,
            flops_per_clip=flops_per_clip(p.frames) if flops_per_clip else 0.0,
            sampling_rate=p.sampling_rate, clips_per_decode=p.clips_per_decode,
            reset_optimizer=cfg.optim.reset_between_stages))
        offset += p.steps
    if cfg.plan.multigrid:
        # multigrid baseline (seed FIG. 12): the clip length drawn per iteration from the plan's
        # lengths. "plan" draws each length in proportion to the steps the plan gives it, so the
        # run sees TPL's mix of lengths (and its FLOPs, in expectation) in random order: only
        # the order differs; "uniform" draws them equally often. multigrid_stages "plan" keeps
        # the plan's stages, steps and lr schedule (the seed: "the rest setting is kept the
        # same"), each stage drawing from every length; "one" runs one stage with one cosine.
        choices = tuple(dataclasses.replace(s.shape, clips_per_decode=_divisor_at_most(
            first.batch_size, s.clips_per_decode)) for s in stages)
        weights = multigrid_weights(cfg, planned)
        mean_flops = sum(w * c.flops_per_clip for w, c in zip(weights, choices, strict=True))
        drawn = {"num_frames": max(c.frames for c in choices), "flops_per_clip": mean_flops,
                 "frame_choices": choices,
                 "frame_weights": weights if cfg.plan.multigrid_mix == "plan" else ()}
        if cfg.plan.multigrid_stages == "one":
            lr = CosineLR(first.lr, first.min_lr, global_warmup, total)
            stages = [Stage(steps=total, batch_size=first.batch_size, lr=lr, name="multigrid",
                            sampling_rate=first.sampling_rate, **drawn)]
        else:
            stages = [dataclasses.replace(st, name=f"multigrid{i + 1}", **drawn)
                      for i, st in enumerate(stages)]
    return Schedule(tuple(stages))


def multigrid_weights(cfg: PretrainConfig, planned: list[PlannedStage]) -> tuple[float, ...]:
    """How often the multigrid baseline draws each of the plan's lengths."""
    if cfg.plan.multigrid_mix == "plan":
        total = sum(p.steps for p in planned)
        return tuple(p.steps / total for p in planned)
    return tuple(1 / len(planned) for _ in planned)


def probe_seconds_per_step(model: Any, frames: int, batch_size: int, img_size: int,
                           device: Any = "cpu", precision: str = "fp32", steps: int = 5,
                           min_seconds: float = 0.2, warmup: int = 2) -> float:
    """Measured seconds per training step (forward, backward, the trainer's fused AdamW) on
    random clips: the median of at least `steps` steps and of about `min_seconds` (at most 50),
    after `warmup` steps (the first calls at a new shape set up kernels and the allocator; with
    one warm-up step a tiny model's short steps read 3x slow)."""
    import time

    import torch

    from ..engine.trainer import param_groups

    device = torch.device(device)
    model = model.to(device).train()
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-6, fused=True)
    video = torch.randn(batch_size, model.in_chans, frames, img_size, img_size, device=device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    times: list[float] = []
    i = 0
    while len(times) < steps or (sum(times) < min_seconds and len(times) < 50):
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = model(video).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
        i += 1
    return sorted(times)[len(times) // 2]


@dataclass(frozen=True)
class StageProbe:
    """Measured cost of one stage's step: the model (forward, backward, AdamW) and the loader
    (one batch, with the configured workers; None when there was no data to read)."""

    compute_s: float
    loader_s: float | None = None
    workers: int = 0


def stage_timing(p: PlannedStage, probe: StageProbe, max_wait: float = 0.05,
                 accum_steps: int = 1) -> dict[str, Any]:
    """Expected seconds per optimizer step (`accum_steps` micro-batches of the probed one),
    clips/s, data-wait fraction and the loader workers that keep data-wait under `max_wait`,
    assuming the workers overlap the step (they prefetch)."""
    micro = max(probe.compute_s, probe.loader_s or 0.0)
    step = accum_steps * micro
    wait = max(0.0, (probe.loader_s or 0.0) - probe.compute_s) / micro if micro else 0.0
    out = {"compute_s": probe.compute_s, "loader_s": probe.loader_s, "step_s": step,
           "clips_per_s": p.total_batch / step if step else float("nan"), "data_wait": wait}
    if probe.loader_s is not None:
        w = max(probe.workers, 1)  # one main-process loader does the work of about one worker
        out["workers_needed"] = max(1, math.ceil(w * probe.loader_s / (probe.compute_s * (1 - max_wait))))
    return out


def plan_table(cfg: PretrainConfig, dataset_size: int | None, world: int = 1,
               flops_per_clip: Callable[[int], float] | None = None,
               probe: Callable[[PlannedStage], StageProbe] | None = None,
               variant_flops: Callable[[int, bool], float | None] | None = None) -> dict[str, Any]:
    """Per-stage and total budgets: nominal (frames processed) and measured (FLOPs, MACs).

    `flops_per_clip(frames)` gives the configured model's training MACs per clip; `probe`
    (optional, a measured throughput probe) adds each stage's seconds per step, clips/s,
    data-wait, the loader workers it needs and the estimated wall-clock;
    `variant_flops(frames, dual)` (optional) the MACs per clip without / with VideoMAE V2 dual
    masking (None where the geometry does not allow it), for the comparison of TPL, dual
    masking and both against the one-stage VideoMAE baseline.

    Without `dataset_size` nothing that needs it is computed (steps, clips, warmup steps): work
    is counted per training video instead (`unit`: "per video"), which leaves every ratio to
    the baseline unchanged up to the rounding of steps.
    """
    sized = dataset_size is not None
    planned = build_plan(cfg, dataset_size if sized else 1, world)
    fpc = flops_per_clip or (lambda f: 0.0)
    if probe is not None:  # one measurement per distinct step (the baseline's often is a stage's)
        probe = _once_per_shape(probe)
    budget = cfg.budget.epochs * cfg.budget.scale
    stages = []
    for p in planned:
        clips = p.steps * p.total_batch if sized else p.epochs  # per video when unsized
        row = {**p.to_json(), "batch_size": p.batch_size, "clips": clips,
               "frames_processed": clips * p.frames, "gflops_per_clip": fpc(p.frames) / 1e9,
               "pflops": clips * fpc(p.frames) / 1e15}
        if not sized:
            row.update(steps=None, warmup_steps=None)
        if probe is not None:
            row.update(stage_timing(p, probe(p), accum_steps=cfg.optim.accum_steps))
            if sized:
                row["est_seconds"] = p.steps * row["step_s"]
        stages.append(row)
    total_pflops = sum(s["pflops"] for s in stages)
    for s in stages:
        s["flops_share"] = s["pflops"] / total_pflops if total_pflops else 0.0
    # the one-stage VideoMAE baseline at the same N_e, reference length and base batch
    ref = cfg.budget.ref_frames
    base_batch = total_batch(cfg.train.batch_size, world, cfg.optim.accum_steps)
    base_clips = steps_for(budget, dataset_size, base_batch) * base_batch if sized else budget
    totals: dict[str, Any] = {
        "epochs_at_16": budget,
        "ref_frames": ref,
        "steps": sum(s["steps"] for s in stages) if sized else None,
        "frames_processed": sum(s["frames_processed"] for s in stages),
        "baseline_frames_processed": base_clips * ref,
        "pflops": total_pflops,
        "baseline_pflops": base_clips * fpc(ref) / 1e15,
    }
    totals["flops_ratio_to_baseline"] = (total_pflops / totals["baseline_pflops"]
                                         if totals["baseline_pflops"] else float("nan"))
    totals["nominal_ratio_to_baseline"] = totals["frames_processed"] / totals["baseline_frames_processed"]
    if probe is not None and sized:
        totals["est_seconds"] = sum(s["est_seconds"] for s in stages)
        # the one-stage baseline's step, measured the same way: does the plan save time here?
        base_steps = steps_for(budget, dataset_size, base_batch)
        base = PlannedStage(index=-1, frames=ref, share=1.0, epochs=budget,
                            batch_size=cfg.train.batch_size, total_batch=base_batch, steps=base_steps,
                            lr=0.0, min_lr=0.0, warmup_steps=0, sampling_rate=cfg.data.sampling_rate)
        totals["baseline_est_seconds"] = base_steps * stage_timing(
            base, probe(base), accum_steps=cfg.optim.accum_steps)["step_s"]
        totals["time_ratio_to_baseline"] = (totals["est_seconds"] / totals["baseline_est_seconds"]
                                            if totals["baseline_est_seconds"] else float("nan"))
    if cfg.plan.multigrid:  # every stage draws its lengths: expected work of the mix
        weights = multigrid_weights(cfg, planned)
        mean = sum(w * fpc(p.frames) for w, p in zip(weights, planned, strict=True))
        mean_frames = sum(w * p.frames for w, p in zip(weights, planned, strict=True))
        clips = sum(s["clips"] for s in stages)
        totals["multigrid"] = {
            "mix": cfg.plan.multigrid_mix, "stages": cfg.plan.multigrid_stages,
            "expected_pflops": clips * mean / 1e15,
            "expected_nominal_ratio": clips * mean_frames / totals["baseline_frames_processed"],
            "expected_flops_ratio": (clips * mean / 1e15 / totals["baseline_pflops"]
                                     if totals["baseline_pflops"] else float("nan"))}
    table = {"stages": stages, "totals": totals, "dataset_size": dataset_size, "world": world,
             "unit": "run" if sized else "per video"}
    if variant_flops is not None:
        table["comparison"] = _comparison(stages, base_clips, ref, variant_flops)
    return table


def _once_per_shape(probe: Callable[[PlannedStage], StageProbe]) -> Callable[[PlannedStage], StageProbe]:
    """`probe`, measured once per step shape (clip length, batch, stride, clips per decode)."""
    seen: dict[tuple[int, int, int, int], StageProbe] = {}

    def measure(p: PlannedStage) -> StageProbe:
        key = (p.frames, p.batch_size, p.sampling_rate, p.clips_per_decode)
        if key not in seen:
            seen[key] = probe(p)
        return seen[key]
    return measure


def _comparison(stages: list[dict[str, Any]], base_clips: float, ref: int,
                variant_flops: Callable[[int, bool], float | None]) -> list[dict[str, Any]]:
    """Training PFLOPs of the one-stage baseline and of this plan, each without and with dual
    masking, and their ratio to the baseline."""
    def total(dual: bool, shapes: list[tuple[float, int]]) -> float | None:
        per = [variant_flops(f, dual) for _, f in shapes]
        return None if any(v is None for v in per) else sum(c * v for (c, _), v in zip(shapes, per, strict=True)) / 1e15
    base = [(base_clips, ref)]
    plan = [(s["clips"], s["frames"]) for s in stages]
    rows = [("VideoMAE (one stage)", base, False), ("VideoMAE + dual masking", base, True)]
    if plan != base:
        rows += [("this plan (TPL)", plan, False), ("this plan + dual masking", plan, True)]
    ref_pflops = total(False, base) or float("nan")
    out = []
    for name, shapes, dual in rows:
        pflops = total(dual, shapes)
        out.append({"name": name, "dual_masking": dual, "pflops": pflops,
                    "ratio": None if pflops is None else pflops / ref_pflops})
    return out


def format_plan(table: dict[str, Any]) -> str:
    """The plan as a text table for the terminal."""
    sized = table["dataset_size"] is not None
    has_time = "est_seconds" in table["totals"]
    flops_head = "PFLOPs" if sized else "PFLOPs/video"
    head = ["stage", "frames", "share", "epochs", "batch", "clips/decode", "lr", "steps",
            "GFLOPs/clip", flops_head, "FLOPs %"] + (["est. time"] if has_time else [])
    rows = []
    for s in table["stages"]:
        row = [str(s["index"] + 1), str(s["frames"]), f"{s['share']:.4g}", f"{s['epochs']:.4g}",
               str(s["batch_size"]), str(s["clips_per_decode"]), f"{s['lr']:.3g}",
               str(s["steps"]) if sized else "-",
               f"{s['gflops_per_clip']:.4g}", f"{s['pflops']:.4g}", f"{100 * s['flops_share']:.1f}"]
        if has_time:
            row.append(_hms(s["est_seconds"]))
        rows.append(row)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
    t = table["totals"]
    where = (f"{table['dataset_size']} clips x {table['world']} process(es); {t['steps']} steps"
             if sized else "dataset size unknown: steps need it (give --dataset-size N or make "
             "data.train readable); work is counted per training video")
    out = [line(head), *(line(r) for r in rows), "",
           f"budget N_e = {t['epochs_at_16']:.4g} epochs at {t['ref_frames']} frames; {where}",
           f"nominal (frames processed): {t['frames_processed']:.4g}{'' if sized else ' per video'} "
           f"= {t['nominal_ratio_to_baseline']:.3f} x the one-stage baseline",
           f"measured (training FLOPs as multiply-accumulates): {t['pflops']:.4g} {flops_head} "
           f"= {t['flops_ratio_to_baseline']:.3f} x the baseline's {t['baseline_pflops']:.4g}"]
    if sized and abs(t["nominal_ratio_to_baseline"] - 1.0) > 0.01:
        out.append(f"  each stage's steps are rounded up: on {table['dataset_size']} clips the plan "
                   f"reads {t['nominal_ratio_to_baseline']:.3f} x the baseline's frames, not 1 (the "
                   "rounding vanishes on larger datasets)")
    mg = t.get("multigrid")
    if mg:
        where = ("in each of the stages above (their steps and lr schedule)" if mg["stages"] == "plan"
                 else "in one stage of the same total steps, one warm-up + cosine")
        out.append(f"multigrid baseline: clip lengths drawn at random per step ({mg['mix']} mix) "
                   f"{where}; the rows above are the plan it draws from. Expected: "
                   f"{mg['expected_pflops']:.4g} {flops_head} = {mg['expected_flops_ratio']:.3f} x "
                   f"the baseline's FLOPs, {mg['expected_nominal_ratio']:.3f} x its frames")
    if has_time:
        out.append(f"estimated time (measured throughput probe): {_hms(t['est_seconds'])}"
                   + (f" = {t['time_ratio_to_baseline']:.3f} x the one-stage baseline's "
                      f"{_hms(t['baseline_est_seconds'])} (FLOPs: {t['flops_ratio_to_baseline']:.3f} x)"
                      if "baseline_est_seconds" in t else ""))
        if t.get("time_ratio_to_baseline", 0.0) > t["flops_ratio_to_baseline"] + 0.05:
            out.append("  short-clip steps cost more than their FLOPs here: each step has a fixed cost "
                       "(optimizer, dispatch) that more tokens per step spread (bench/tpl_floor.md)")
    probed = [s for s in table["stages"] if "step_s" in s]
    if probed:
        out += ["", "measured per step (model on random clips; loader on the data with "
                f"data.workers = {table.get('workers', '?')}):"]
        for s in probed:
            loader = "no data" if s["loader_s"] is None else f"loader {1000 * s['loader_s']:.0f} ms/batch"
            need = f", needs {s['workers_needed']} worker(s) for data-wait < 5%" if "workers_needed" in s else ""
            out.append(f"  stage {s['index'] + 1} ({s['frames']} frames): model {1000 * s['compute_s']:.0f} ms, "
                       f"{loader} -> {1000 * s['step_s']:.0f} ms/step, {s['clips_per_s']:.1f} clips/s, "
                       f"data-wait {100 * s['data_wait']:.0f}%{need}")
    if table.get("comparison"):
        out += ["", f"training FLOPs against the one-stage VideoMAE baseline at the same N_e "
                f"({flops_head}):"]
        for c in table["comparison"]:
            figure = ("not possible with this geometry (running-cell masking needs an even token grid)"
                      if c["pflops"] is None else f"{c['pflops']:.4g}  = {c['ratio']:.3f} x")
            out.append(f"  {c['name']:<26} {figure}")
    return "\n".join(out)


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
