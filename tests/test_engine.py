from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from engine_util import losses, tiny_pretrain
from progvid.engine import checkpoint as ckpt
from progvid.engine.schedule import CosineLR, Schedule, Stage
from progvid.engine.trainer import TrainingError
from progvid.errors import CheckpointError, ConfigError
from progvid.tasks.pretrain import run_pretrain


def test_cosine_schedule_is_pure() -> None:
    lr = CosineLR(1.0, 0.1, warmup=4, total=20)
    assert lr(0) == 0.0 and lr(2) == pytest.approx(0.5) and lr(4) == pytest.approx(1.0)
    assert lr(20) == pytest.approx(0.1) and lr(12) == pytest.approx(0.55)
    sched = Schedule((Stage(5, 2, 4, lr), Stage(7, 4, 2, lr)))
    assert sched.total_steps == 12 and sched.locate(6).stage == 1 and sched.locate(6).step_in_stage == 1
    assert sched.lr(5) == lr(0)  # each stage restarts its own schedule
    with pytest.raises(IndexError):
        sched.locate(12)


def test_work_and_the_whole_plan_eta(tmp_path: Path, monkeypatch, capsys) -> None:
    """Work counts each stage's FLOPs per step (frames where unknown); the ETA extrapolates work,
    so after the cheap 2-frame stage it sees the expensive 16-frame stage still ahead; the bar
    has a fixed width beside its postfix."""
    import time as _time

    from progvid.engine import logging as runlog

    lr = CosineLR(1.0, 0.1, warmup=0, total=10)
    sched = Schedule((Stage(10, 2, 8, lr, flops_per_clip=1.0), Stage(10, 16, 8, lr, flops_per_clip=8.0)))
    assert [sched.work(s) for s in (0, 5, 10, 15, 20, 99)] == [0, 40, 80, 400, 720, 720]
    assert Schedule((Stage(3, 4, 2, lr),)).work(2) == 2 * 2 * 4  # frames stand in for FLOPs
    clock = iter([100.0, 110.0])  # start, then 10 s later
    monkeypatch.setattr(_time, "time", lambda: next(clock))
    log = runlog.RunLogger(tmp_path, total_steps=20, tensorboard=False, progress=False,
                           work=sched.work)
    # 10 steps (80 units of work) took 10 s; 640 units are left: 80 s, not the 10 s of steps
    assert log._eta(9) == "00:01:20"
    assert "{bar:12}" in runlog.BAR_FORMAT and "{postfix}" in runlog.BAR_FORMAT


def test_tiny_run_writes_everything(synth_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_pretrain(synth_dir, train__tensorboard=True)
    res = run_pretrain(cfg, out=str(tmp_path / "run"))
    run = tmp_path / "run"
    assert res.steps == 6 and res.checkpoint is not None  # 24 clips / batch 4 = 6 steps
    assert (run / "config.yaml").is_file() and (run / "plan.json").is_file()
    assert any((run / "tb").iterdir())
    rec = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    for key in ("step", "epoch", "loss", "lr", "clips_per_s", "data_wait_fraction", "flops", "stage"):
        assert key in rec
    assert rec["flops"] > 0 and rec["clips_seen"] == 24
    assert (res.checkpoint / "model.safetensors").is_file()


def test_resume_matches_uninterrupted(synth_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_pretrain(synth_dir, budget={"epochs": 2, "ref_frames": 4})
    run_pretrain(cfg, out=str(tmp_path / "full"))
    stopped = tiny_pretrain(synth_dir, budget={"epochs": 2, "ref_frames": 4}, train__max_steps=5,
                            train__ckpt_every=5)
    run_pretrain(stopped, out=str(tmp_path / "split"))
    # the interrupted run logged past its checkpoint? resume truncates and redoes from step 5
    run_pretrain(cfg, out=str(tmp_path / "split"), resume="auto")
    full, split = losses(tmp_path / "full"), losses(tmp_path / "split")
    assert [s for s, _ in full] == [s for s, _ in split] == list(range(12))
    for (_, a), (_, b) in zip(full, split, strict=True):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-7)


def test_nonfinite_losses_skip_then_stop(synth_dir: Path, tmp_path: Path, monkeypatch) -> None:
    import progvid.tasks.pretrain as pt

    real = pt.PretrainTask.step
    calls = {"n": 0}

    def poisoned(self, model, batch, ctx):
        out = real(self, model, batch, ctx)
        calls["n"] += 1
        if calls["n"] >= 3:  # steps 0, 1 fine, then NaN forever
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(pt.PretrainTask, "step", poisoned)
    cfg = tiny_pretrain(synth_dir, train__max_nonfinite=2)
    with pytest.raises(TrainingError, match="not finite for 2 steps in a row"):
        run_pretrain(cfg, out=str(tmp_path / "nan"))
    saved = ckpt.list_checkpoints(tmp_path / "nan")
    assert saved, "the last good state must be saved"
    state = ckpt.load_state(saved[-1])
    assert state["nonfinite_total"] == 2
    weights = ckpt.load_weights(saved[-1])
    assert all(torch.isfinite(v).all() for v in weights.values())


def test_atomic_save_keep_last_and_auto(tmp_path: Path) -> None:
    w = {"a": torch.ones(3)}
    for step in (1, 2, 3, 4):
        ckpt.save_checkpoint(tmp_path, step, w, {"step": step}, {}, keep_last=2)
    names = [p.name for p in ckpt.list_checkpoints(tmp_path)]
    assert names == ["step_00000003", "step_00000004"]
    # a half-written checkpoint (crash mid-save) is never picked
    (tmp_path / "checkpoints" / ".tmp_step_00000005_1").mkdir()
    (tmp_path / "checkpoints" / "step_00000009").mkdir()  # no files: incomplete
    assert ckpt.resolve_resume(tmp_path, "auto").name == "step_00000004"
    assert ckpt.resolve_resume(tmp_path / "empty", "auto") is None
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        ckpt.resolve_resume(tmp_path, str(tmp_path / "nope"))


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_crafted_pickle_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "checkpoints" / "step_00000001"
    d.mkdir(parents=True)
    ckpt.save_checkpoint(tmp_path, 1, {"a": torch.ones(1)}, {"step": 1}, {})
    with open(d / "state.pt", "wb") as fh:
        pickle.dump({"step": 1, "payload": _Evil()}, fh)
    with pytest.raises(CheckpointError, match=r"state.pt: refused to load training state: the file holds objects that would run code"):
        ckpt.load_state(d)
    evil_weights = tmp_path / "weights.pt"
    torch.save({"w": _Evil()}, evil_weights)
    with pytest.raises(CheckpointError, match="refused to load weights"):
        ckpt.load_weights(evil_weights)


def test_malformed_checkpoint_errors(tmp_path: Path) -> None:
    d = tmp_path / "bad"
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        ckpt.load_weights(d)
    (d / "state.pt").write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match="state.pt: cannot read training state"):
        ckpt.load_state(d)
    torch.save({"no_step": 1}, d / "state.pt")
    with pytest.raises(CheckpointError, match="malformed training state"):
        ckpt.load_state(d)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_on_cpu(synth_dir: Path, tmp_path: Path, precision: str) -> None:
    cfg = tiny_pretrain(synth_dir, train__precision=precision, train__max_steps=3)
    res = run_pretrain(cfg, out=str(tmp_path / precision))
    assert res.steps == 3 and res.nonfinite_skipped == 0
    assert all(torch.isfinite(torch.tensor(loss)) for _, loss in losses(tmp_path / precision))
    weights = ckpt.load_weights(res.checkpoint)
    assert all(v.dtype == torch.float32 for v in weights.values())  # master weights stay fp32


def test_a_finished_run_leaves_no_loader_workers(synth_dir: Path, tmp_path: Path) -> None:
    """When training returns, its loader iterators (and their worker processes) are gone at
    once, not when the garbage collector next runs: a forked process that collected a stale
    iterator failed in its shutdown ("can only test a child process")."""
    import gc

    import torch.utils.data.dataloader as dl

    cfg = tiny_pretrain(synth_dir, data__workers=1,
                        plan={"stages": [{"frames": 2, "share": 0.5}, {"frames": 4, "share": 0.5}]},
                        budget={"epochs": 2, "ref_frames": 4})
    gc.collect()
    gc.disable()
    try:
        run_pretrain(cfg, out=str(tmp_path / "run"))
        alive = [o for o in gc.get_objects() if type(o) is dl._MultiProcessingDataLoaderIter]
    finally:
        gc.enable()
    assert alive == []


def test_resume_with_another_total_batch_is_refused(synth_dir: Path, tmp_path: Path) -> None:
    # the checkpoint's step is a position in the schedule that wrote it: with twice the total
    # batch the same step number would land past the middle of the plan
    run_pretrain(tiny_pretrain(synth_dir, train__max_steps=3, train__ckpt_every=3), out=str(tmp_path / "r"))
    config = (tmp_path / "r" / "config.yaml").read_text()
    bigger = tiny_pretrain(synth_dir, optim={"base_lr": 1e-2, "warmup_epochs": 0.5, "accum_steps": 2})
    with pytest.raises(ConfigError, match=r"step 3 of a schedule of stages of 6 steps, but this "
                                          r"run's is 3: the total batch"):
        run_pretrain(bigger, out=str(tmp_path / "r"), resume="auto")
    assert (tmp_path / "r" / "config.yaml").read_text() == config  # nothing was rewritten
    # the same total batch (half the per-process batch, twice the accumulation) resumes
    same = tiny_pretrain(synth_dir, optim={"base_lr": 1e-2, "warmup_epochs": 0.5, "accum_steps": 2},
                         train__batch_size=2)
    assert run_pretrain(same, out=str(tmp_path / "r"), resume="auto").steps == 6
    # --allow-changed-budget goes on at the same step of the new schedule
    run_pretrain(tiny_pretrain(synth_dir, train__max_steps=2, train__ckpt_every=2), out=str(tmp_path / "a"))
    assert run_pretrain(bigger, out=str(tmp_path / "a"), resume="auto", allow_changes=True).steps == 3


def test_going_on_from_an_earlier_checkpoint_sets_the_later_ones_aside(
        synth_dir: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    run_pretrain(tiny_pretrain(synth_dir, train__ckpt_every=1, train__keep_last=3), out=str(run))
    assert [p.name for p in ckpt.list_checkpoints(run)] == [f"step_0000000{i}" for i in (4, 5, 6)]
    early = run / "checkpoints" / "early"
    shutil.copytree(ckpt.list_checkpoints(run)[0], early)  # step 4
    cfg = tiny_pretrain(synth_dir, train__ckpt_every=1, train__keep_last=3, train__max_steps=5)
    run_pretrain(cfg, out=str(run), resume=str(early))
    assert "its later checkpoints are moved to" in capsys.readouterr().err
    # the new branch's checkpoint is the newest; the abandoned ones are kept aside, not pruned
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step_00000004", "step_00000005"]
    assert ckpt.resolve_resume(run, "auto").name == "step_00000005"
    aside = [p for p in (run / "checkpoints").iterdir() if p.name.startswith("superseded-")]
    assert len(aside) == 1 and sorted(p.name for p in aside[0].iterdir()) == [
        "step_00000005", "step_00000006"]


def test_a_non_fp16_run_resumes_in_fp16(synth_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_pretrain(tiny_pretrain(synth_dir, train__precision="bf16", train__max_steps=2,
                               train__ckpt_every=2), out=str(run))
    res = run_pretrain(tiny_pretrain(synth_dir, train__precision="fp16"), out=str(run), resume="auto")
    assert res.steps == 6  # the gradient scaler starts afresh instead of failing on an empty state


def test_a_resave_killed_between_its_renames_keeps_the_checkpoint(tmp_path: Path) -> None:
    w = {"a": torch.ones(3)}
    ckpt.save_checkpoint(tmp_path, 4, w, {"step": 4}, {}, name="best")
    root = tmp_path / "checkpoints"
    # what a kill between the two renames of a re-save (step 6) leaves behind
    os.replace(root / "best", root / ".tmp_old_best_77")
    ckpt.save_checkpoint(tmp_path, 6, {"a": torch.zeros(3)}, {"step": 6}, {}, name="tmpbest")
    os.replace(root / "tmpbest", root / ".tmp_best_77")
    ckpt.clean_leftovers(tmp_path)
    assert sorted(p.name for p in root.iterdir()) == ["best"]
    assert ckpt.load_state(root / "best")["step"] == 6  # the new copy was complete: it wins
    # killed before the new copy was complete: the old one comes back
    os.replace(root / "best", root / ".tmp_old_best_78")
    (root / ".tmp_best_78").mkdir()
    ckpt.clean_leftovers(tmp_path)
    assert sorted(p.name for p in root.iterdir()) == ["best"]
    assert ckpt.load_state(root / "best")["step"] == 6


def test_a_file_that_is_no_checkpoint_is_named_as_such(tmp_path: Path) -> None:
    (tmp_path / "g.pth").write_text("garbage\n")
    (tmp_path / "s.pth").write_text("abc")
    with pytest.raises(CheckpointError, match=r"g.pth: cannot read weights: not a PyTorch checkpoint"):
        ckpt.load_weights(tmp_path / "g.pth")
    with pytest.raises(CheckpointError, match=r"s.pth: cannot read weights: damaged or not a PyTorch"):
        ckpt.load_weights(tmp_path / "s.pth")
