from __future__ import annotations

import math
from pathlib import Path

import pytest

from engine_util import losses, tiny_pretrain
from progvid.config import PretrainConfig, validate
from progvid.errors import ConfigError
from progvid.progressive.plan import build_plan, build_schedule, plan_table, stage_epochs
from progvid.tasks.pretrain import run_pretrain

TPL = [{"frames": 2, "share": 0.125}, {"frames": 4, "share": 0.125},
       {"frames": 8, "share": 0.5}, {"frames": 16, "share": 0.25}]


def cfg_with(stages, **kw) -> PretrainConfig:
    raw = {"task": "pretrain", "plan": {"stages": stages}, "budget": {"epochs": 800},
           "train": {"batch_size": 16}, **kw}
    return validate(PretrainConfig, raw, "t")


def test_seed_epoch_example() -> None:
    # seed 000: shares 1/8, 1/8, 1/2, 1/4 at 2/4/8/16 frames with N_e = 800 -> 800/400/800/200
    assert [stage_epochs(s["share"], 800, s["frames"]) for s in TPL] == [800, 400, 800, 200]
    # seed 000: p = 1/4 at 2 frames with N_e = 800 -> 1600 epochs
    assert stage_epochs(0.25, 800, 2) == 1600


def test_plan_steps_and_lr_rules() -> None:
    planned = build_plan(cfg_with(TPL), dataset_size=1000, world=2)
    assert [p.epochs for p in planned] == [800, 400, 800, 200]
    assert [p.steps for p in planned] == [25000, 12500, 25000, 6250]  # ceil(epochs*1000/32)
    assert all(p.lr == pytest.approx(1.5e-4 * 32 / 256) for p in planned)
    per_batch = cfg_with([{**TPL[0], "batch_size": 64}, *TPL[1:]])
    lrs = [p.lr for p in build_plan(per_batch, 1000)]
    assert lrs[0] == pytest.approx(lrs[1] * 4)  # lr_i = lr_0 * bz_i / bz_0
    sched = build_schedule(cfg_with(TPL), planned)
    starts = sched.starts
    # mechanism 1: every stage restarts warmup (lr at its first step is 0) and decays to min
    assert all(sched.lr(s) == 0.0 for s in starts)
    glob = build_schedule(cfg_with(TPL, optim={"lr_rule": "global"}), planned)
    assert glob.lr(starts[1]) > 0  # one schedule: no restart at stage 2
    assert glob.lr(starts[1]) == pytest.approx(glob.stages[0].lr(starts[1]))


def test_global_lr_follows_each_stages_batch() -> None:
    # mechanism 2 with per-stage batches (plan.batch_rule: scale): one cosine over the run whose
    # peak is lr_0 scaled by each stage's total batch, so the 16-frame stage at the base batch
    # trains at lr_0, not at the 8x-batch first stage's rate
    cfg = cfg_with(TPL, optim={"lr_rule": "global", "warmup_epochs": 0}, plan={"stages": TPL, "batch_rule": "scale"})
    planned = build_plan(cfg, dataset_size=1000)
    assert [p.batch_size for p in planned] == [128, 64, 32, 16]
    sched = build_schedule(cfg, planned)
    lr0 = 1.5e-4 * 16 / 256
    last = sched.starts[3]
    fixed = cfg_with(TPL, optim={"lr_rule": "global", "warmup_epochs": 0})
    same = build_schedule(fixed, build_plan(fixed, dataset_size=1000))
    # the shape of the schedule over the whole run, at the stage's own peak
    frac = sched.lr(last) / lr0
    assert 0 < frac < 1
    assert sched.lr(0) == pytest.approx(8 * lr0)
    assert sched.lr(sched.starts[1]) / (4 * lr0) == pytest.approx(
        sched.stages[0].lr(sched.starts[1]) / (8 * lr0))
    assert same.lr(0) == pytest.approx(lr0)  # equal batches: lr_0 throughout, as before
    total, min0 = sched.total_steps, cfg.optim.min_lr * 16 / 256
    shape = 0.5 * (1 + math.cos(math.pi * last / total))
    assert sched.lr(last) == pytest.approx(min0 + (lr0 - min0) * shape)


def test_budget_scale_and_fractional_epochs() -> None:
    one = build_plan(cfg_with(TPL), 1000)
    two = build_plan(cfg_with(TPL, budget={"epochs": 800, "scale": 2}), 1000)
    assert [b.epochs for b in two] == [2 * a.epochs for a in one]
    tiny = build_plan(cfg_with([{"frames": 16, "share": 1.0}], budget={"epochs": 0.01}), 1000)
    assert tiny[0].steps == 1  # fractional epochs become (at least one) step


@pytest.mark.parametrize("stages,msg", [
    ([{"frames": 4, "share": 0.5}, {"frames": 4, "share": 0.5}], r"plan.stages.1.frames: frames must increase"),
    ([{"frames": 3, "share": 1.0}], r"plan.stages.0.frames: 3 is not a multiple of the tubelet size 2"),
    ([{"frames": 4, "share": 0.5}, {"frames": 8, "share": 0.4}], r"shares sum to 0.9, not 1"),
    ([{"frames": 4, "share": 0.0}, {"frames": 8, "share": 0.0}], r"shares sum to 0"),
])
def test_plan_validation(stages, msg) -> None:
    with pytest.raises(ConfigError, match=msg):
        build_plan(cfg_with(stages), 100)


def test_zero_share_dropped_and_range_checks() -> None:
    planned = build_plan(cfg_with([{"frames": 2, "share": 0.0}, {"frames": 16, "share": 1.0}]), 100)
    assert [p.frames for p in planned] == [16]
    with pytest.raises(ConfigError, match=r"plan.stages.0.share"):
        cfg_with([{"frames": 2, "share": 1.5}])
    with pytest.raises(ConfigError, match=r"plan.stages.0.batch_size"):
        cfg_with([{"frames": 2, "share": 1.0, "batch_size": 0}])


def test_plan_table_totals() -> None:
    t = plan_table(cfg_with(TPL), 1000, 1, flops_per_clip=lambda f: 1e9 * f * f)
    assert t["totals"]["nominal_ratio_to_baseline"] == pytest.approx(1.0, rel=1e-3)
    expected = sum(s["clips"] * 1e9 * s["frames"] ** 2 for s in t["stages"]) / 1e15
    assert t["totals"]["pflops"] == pytest.approx(expected)
    assert 0 < t["totals"]["flops_ratio_to_baseline"] < 1  # quadratic cost favours short clips
    for key in ("frames", "share", "epochs", "steps", "batch_size", "lr", "gflops_per_clip", "pflops"):
        assert key in t["stages"][0]


def test_mid_stage_resume_three_stages(synth_dir: Path, tmp_path: Path) -> None:
    stages = [{"frames": 2, "share": 0.25}, {"frames": 4, "share": 0.25}, {"frames": 8, "share": 0.5}]
    kw = {"plan": {"stages": stages}, "budget": {"epochs": 1, "ref_frames": 8},
          "data__num_frames": 8}
    full = tiny_pretrain(synth_dir, **kw)
    run_pretrain(full, out=str(tmp_path / "full"))
    sched = build_schedule(full, build_plan(full, 24))
    stop = sched.starts[1] + 2  # inside stage 2
    part = tiny_pretrain(synth_dir, **kw, train__max_steps=stop, train__ckpt_every=stop)
    run_pretrain(part, out=str(tmp_path / "split"))
    run_pretrain(full, out=str(tmp_path / "split"), resume="auto")
    a, b = losses(tmp_path / "full"), losses(tmp_path / "split")
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(sched.total_steps))
    for (_, x), (_, y) in zip(a, b, strict=True):
        assert x == pytest.approx(y, rel=1e-6, abs=1e-7)


def test_multigrid_runs(synth_dir: Path, tmp_path: Path) -> None:
    import json

    cfg = tiny_pretrain(synth_dir, plan={"stages": [{"frames": 2, "share": 0.5},
                                                   {"frames": 4, "share": 0.5}], "multigrid": True})
    run_pretrain(cfg, out=str(tmp_path / "mg"))
    rows = [json.loads(x) for x in (tmp_path / "mg" / "metrics.jsonl").read_text().splitlines()]
    # the plan's two stages (steps, lr restarts), each drawing lengths 2 and 4 at random
    assert {r["frames"] for r in rows} == {2, 4} and {r["stage"] for r in rows} == {0, 1}
    assert len({r["frames"] for r in rows if r["stage"] == 0}) == 2


def test_multigrid_keeps_the_plans_stages_and_schedule() -> None:
    """Seed FIG. 12: "the rest setting is kept the same" as TPL's: the same stages, steps and
    per-stage cosine, only the length is drawn at random; `multigrid_stages: one` is the earlier
    single stage with one cosine. Per-length batches would change the mix: refused."""
    tpl = build_schedule(cfg_with(TPL), build_plan(cfg_with(TPL), 100))
    cfg = cfg_with(TPL, plan={"stages": TPL, "multigrid": True})
    mg = build_schedule(cfg, build_plan(cfg, 100))
    assert [s.steps for s in mg.stages] == [s.steps for s in tpl.stages]
    assert all(mg.lr(k) == tpl.lr(k) for k in range(0, mg.total_steps, 97))
    assert all(len(s.frame_choices) == 4 for s in mg.stages)
    one = cfg_with(TPL, plan={"stages": TPL, "multigrid": True, "multigrid_stages": "one"})
    (single,) = build_schedule(one, build_plan(one, 100)).stages
    assert single.steps == tpl.total_steps
    with pytest.raises(ConfigError, match="plan.multigrid: every clip length is drawn at one batch"):
        build_plan(cfg_with(TPL, plan={"stages": TPL, "multigrid": True, "batch_rule": "scale"}), 100)


@pytest.mark.parametrize("mix", ["plan", "uniform"])
def test_multigrid_draws_the_plans_mix_of_lengths(mix: str) -> None:
    """plan mix: each length as often as TPL's plan trains it (same FLOPs in expectation, only the
    order differs, seed FIG. 12); uniform: equally often. Drawn per step, seeded."""
    from types import SimpleNamespace

    from progvid.engine.trainer import Trainer

    cfg = cfg_with(TPL, plan={"stages": TPL, "multigrid": True, "multigrid_mix": mix,
                              "multigrid_stages": "one"})
    tpl = build_plan(cfg_with(TPL), 100)
    flops = {2: 1.0, 4: 2.5, 8: 6.0, 16: 14.0}
    sched = build_schedule(cfg, build_plan(cfg, 100), flops_per_clip=flops.get)
    (stage,) = sched.stages
    total = sum(p.steps for p in tpl)
    assert stage.steps == total
    want = [p.steps / total for p in tpl] if mix == "plan" else [0.25] * 4
    counts = {2: 0, 4: 0, 8: 0, 16: 0}
    for step in range(4000):
        counts[Trainer._shape_at(SimpleNamespace(settings=SimpleNamespace(seed=0), step=step), stage).frames] += 1
    assert [counts[f] / 4000 for f in (2, 4, 8, 16)] == pytest.approx(want, abs=0.03)
    expected = sum(w * flops[f] for w, f in zip(want, (2, 4, 8, 16), strict=True))
    assert stage.flops_per_clip == pytest.approx(expected)
    if mix == "plan":  # the FLOPs of the TPL run it stands beside
        assert stage.flops_per_clip * total == pytest.approx(sum(p.steps * flops[p.frames] for p in tpl))


def test_keep_span_sampling() -> None:
    cfg = cfg_with(TPL, data={"sampling_rate": 2}, plan={"stages": TPL, "temporal": "span"})
    assert [p.sampling_rate for p in build_plan(cfg, 100)] == [16, 8, 4, 2]  # 32 frames of time
    # the span is the longest stage that runs: a dropped 16-frame stage sets nothing
    dropped = [{"frames": 2, "share": 0.25}, {"frames": 4, "share": 0.25},
               {"frames": 8, "share": 0.5}, {"frames": 16, "share": 0.0}]
    cfg = cfg_with(dropped, data={"sampling_rate": 2}, plan={"stages": dropped, "temporal": "span"})
    assert [p.sampling_rate for p in build_plan(cfg, 100)] == [8, 4, 2]
    stride = cfg_with(TPL, data={"sampling_rate": 2})
    assert [p.sampling_rate for p in build_plan(stride, 100)] == [2, 2, 2, 2]


def test_plan_cli_json_with_probe(synth_dir: Path, tmp_path: Path, capsys) -> None:
    import json

    from progvid.cli import main
    from progvid.config import save_config

    cfg = tiny_pretrain(synth_dir, plan={"stages": [{"frames": 2, "share": 0.5},
                                                   {"frames": 4, "share": 0.5}]})
    save_config(cfg, tmp_path / "p.yaml")
    assert main(["plan", str(tmp_path / "p.yaml"), "--json", "--probe"]) == 0
    t = json.loads(capsys.readouterr().out)
    assert [s["frames"] for s in t["stages"]] == [2, 4]
    assert all(s["est_seconds"] > 0 for s in t["stages"]) and t["totals"]["est_seconds"] > 0
    # the one-stage baseline (16 frames, not a stage of this plan) probed the same way
    tot = t["totals"]
    assert tot["baseline_est_seconds"] > 0
    assert tot["time_ratio_to_baseline"] == pytest.approx(tot["est_seconds"] / tot["baseline_est_seconds"])
    for key in ("epochs_at_16", "pflops", "baseline_pflops", "flops_ratio_to_baseline"):
        assert key in t["totals"]
    assert main(["plan", str(tmp_path / "p.yaml")]) == 0
    assert "measured (training FLOPs" in capsys.readouterr().out


def test_probe_estimates_the_baseline_time_and_measures_each_shape_once() -> None:
    """With a probe, the plan's estimated time is set against the one-stage baseline's, measured
    the same way; a step shape is measured once (the baseline's 16-frame step is the last
    stage's); the ratio is the hand computation; the text says when fixed costs eat the saving."""
    from progvid.progressive.plan import StageProbe, format_plan

    calls = []

    def probe(p):  # 3 ms per step whatever the clip, plus 1 ms per frame
        calls.append((p.frames, p.batch_size))
        return StageProbe(0.003 + 0.001 * p.frames)

    cfg = cfg_with(TPL)
    t = plan_table(cfg, 1000, 1, flops_per_clip=lambda f: 1e9 * f, probe=probe)
    assert sorted(calls) == sorted({(f, cfg.train.batch_size) for f in (2, 4, 8, 16)})
    steps = {s["frames"]: s["steps"] for s in t["stages"]}
    est = sum(n * (0.003 + 0.001 * f) for f, n in steps.items())
    base_steps = t["totals"]["baseline_frames_processed"] / 16 / cfg.train.batch_size
    assert t["totals"]["est_seconds"] == pytest.approx(est)
    assert t["totals"]["baseline_est_seconds"] == pytest.approx(base_steps * 0.019)
    assert t["totals"]["time_ratio_to_baseline"] == pytest.approx(est / (base_steps * 0.019))
    text = format_plan(t)
    assert "x the one-stage baseline's" in text
    assert ("fixed cost" in text) == (t["totals"]["time_ratio_to_baseline"]
                                      > t["totals"]["flops_ratio_to_baseline"] + 0.05)
    assert t["totals"]["time_ratio_to_baseline"] > 1.05  # 2.75x the steps at 3 ms each
    free = plan_table(cfg, 1000, 1, flops_per_clip=lambda f: 1e9 * f,
                      probe=lambda p: StageProbe(0.001 * p.frames))  # no fixed cost
    assert free["totals"]["time_ratio_to_baseline"] == pytest.approx(
        free["totals"]["flops_ratio_to_baseline"], rel=0.02)
    assert "fixed cost" not in format_plan(free)


def test_plan_without_data_counts_per_video(capsys) -> None:
    """`plan` never needs the data: without it, work is per training video and every ratio to
    the baseline is still there (issue 15 item 2)."""
    import json

    from progvid.cli import main

    t = plan_table(cfg_with(TPL), None, 1, flops_per_clip=lambda f: 1e9 * f * f)
    assert t["unit"] == "per video" and t["totals"]["steps"] is None
    assert [s["clips"] for s in t["stages"]] == [800, 400, 800, 200]  # epochs = clips per video
    sized = plan_table(cfg_with(TPL), 1000, 1, flops_per_clip=lambda f: 1e9 * f * f)
    assert t["totals"]["flops_ratio_to_baseline"] == pytest.approx(
        sized["totals"]["flops_ratio_to_baseline"], rel=1e-2)
    assert main(["plan", "pretrain/tpl_base_k400"]) == 0  # a shipped recipe, by name
    out = capsys.readouterr().out
    assert "steps need it" in out and "this plan + dual masking" in out
    assert main(["plan", "pretrain/tpl_base_k400", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["comparison"]}
    assert rows["VideoMAE (one stage)"]["ratio"] == pytest.approx(1.0)
    tpl, dual, both = (rows[k]["ratio"] for k in ("this plan (TPL)", "VideoMAE + dual masking",
                                                  "this plan + dual masking"))
    assert both < min(tpl, dual) < 1  # the two savings compound


def test_dual_masking_pretrain_resumes_mid_stage(synth_dir: Path, tmp_path: Path) -> None:
    """Dual masking under a two-stage plan: the decoder masks come from the step's generator, so
    a run stopped inside stage 2 and resumed matches one that never stopped."""
    stages = [{"frames": 2, "share": 0.5}, {"frames": 4, "share": 0.5}]
    kw = {"plan": {"stages": stages}, "budget": {"epochs": 1, "ref_frames": 4},
          "data__num_frames": 4, "model__decoder_mask": "running_cell"}
    full = tiny_pretrain(synth_dir, **kw)
    run_pretrain(full, out=str(tmp_path / "full"))
    sched = build_schedule(full, build_plan(full, 24))
    stop = sched.starts[1] + 1
    part = tiny_pretrain(synth_dir, **kw, train__max_steps=stop, train__ckpt_every=stop)
    run_pretrain(part, out=str(tmp_path / "split"))
    run_pretrain(full, out=str(tmp_path / "split"), resume="auto")
    a, b = losses(tmp_path / "full"), losses(tmp_path / "split")
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(sched.total_steps))
    for (_, x), (_, y) in zip(a, b, strict=True):
        assert x == pytest.approx(y, rel=1e-6, abs=1e-7)
    v1 = tiny_pretrain(synth_dir, **{k: v for k, v in kw.items() if k != "model__decoder_mask"})
    run_pretrain(v1, out=str(tmp_path / "v1"))
    assert [x for _, x in losses(tmp_path / "v1")] != [x for _, x in a]  # the option changes training


def test_clips_per_decode_and_batch_rule() -> None:
    t = build_plan(cfg_with(TPL), 1000)
    assert [p.clips_per_decode for p in t] == [8, 4, 2, 1]  # auto: about f_max / f_i
    fixed = build_plan(cfg_with(TPL, plan={"stages": TPL, "clips_per_decode": 3}), 1000)
    assert [p.clips_per_decode for p in fixed] == [2, 2, 2, 2]  # the largest divisor of 16 <= 3
    own = [{**TPL[0], "clips_per_decode": 1}, *TPL[1:]]
    assert build_plan(cfg_with(own), 1000)[0].clips_per_decode == 1
    scaled = build_plan(cfg_with(TPL, plan={"stages": TPL, "batch_rule": "scale", "max_batch": 64}), 1000)
    assert [p.batch_size for p in scaled] == [64, 64, 32, 16]  # 16 x 16 / f_i, capped at 64
    base = build_plan(cfg_with(TPL), 1000)
    for p, q in zip(scaled, base, strict=True):  # the lr follows the total batch
        assert p.lr == pytest.approx(q.lr * p.batch_size / q.batch_size)
        assert p.epochs == q.epochs and p.steps <= q.steps


def test_probe_counts_every_micro_batch_of_a_step() -> None:
    """With gradient accumulation a step runs `accum_steps` probed micro-batches: its time and
    clips/s follow (the estimate once ignored accumulation, 4x too fast at accum 4)."""
    from progvid.progressive.plan import StageProbe, stage_timing

    cfg = cfg_with(TPL, optim={"accum_steps": 4})
    p = build_plan(cfg, 1000)[0]
    one = stage_timing(p, StageProbe(0.1, 0.05, 1))
    four = stage_timing(p, StageProbe(0.1, 0.05, 1), accum_steps=4)
    assert four["step_s"] == pytest.approx(4 * one["step_s"]) == pytest.approx(0.4)
    assert four["clips_per_s"] == pytest.approx(p.total_batch / 0.4)
    assert four["data_wait"] == one["data_wait"] == 0.0
