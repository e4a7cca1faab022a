"""Runs that cannot destroy themselves (issue 11): the non-finite guard, the run-folder lock,
refusing to damage an earlier run, signals, leftovers, and one-line errors from workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from engine_util import losses, tiny_finetune, tiny_pretrain
from progvid.cli import main
from progvid.config import save_config
from progvid.data.loader import EpochSampler
from progvid.engine import checkpoint as ckpt
from progvid.engine.runlock import RunLock, RunLocked
from progvid.engine.schedule import ConstantLR, Schedule, Stage
from progvid.engine.trainer import StepContext, Trainer, TrainingError, TrainSettings
from progvid.errors import CheckpointError, ConfigError
from progvid.tasks.pretrain import run_pretrain

ROOT = Path(__file__).resolve().parent.parent


def progvid(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen([sys.executable, "-m", "progvid", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


# -------------------------------------------------------------------- the non-finite guard
class Ones(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, key):
        return torch.ones(1)


class BadGradTask:
    """A finite loss whose gradient is NaN at the steps in `bad`."""

    def __init__(self, bad: set[int]) -> None:
        self.bad = bad

    def loader(self, stage_index, stage, shape, *, dist, device):
        return DataLoader(Ones(), batch_size=2, drop_last=True,
                          sampler=EpochSampler(8, shuffle=False, rank=0, world=1))

    def step(self, model, batch, ctx: StepContext):
        loss = ((model(batch) - 3.0) ** 2).mean()
        if ctx.step in self.bad:  # value 0, gradient 0.5 / sqrt(0) = inf
            w = model.weight
            loss = loss + torch.sqrt(w - w.detach()).sum()
        return {"loss": loss}

    def clips(self, batch) -> int:
        return batch.shape[0]


def _toy(tmp: Path, bad: set[int], steps: int = 6, max_nonfinite: int = 5) -> Trainer:
    torch.manual_seed(0)
    return Trainer(torch.nn.Linear(1, 1), BadGradTask(bad), Schedule((Stage(steps, 1, 2, ConstantLR(0.1)),)),
                   tmp, TrainSettings(log_every=1, tensorboard=False, max_nonfinite=max_nonfinite,
                                      handle_signals=False), device=torch.device("cpu"))


def test_finite_loss_with_nonfinite_gradient_never_lands(tmp_path: Path) -> None:
    tr = _toy(tmp_path / "a", bad={2})
    seen = {}
    real = tr._optimizer_step

    def spy(loss):
        before = (tr.model.weight.detach().clone(), {k: v.clone() for k, v in
                  (tr.optimizer.state.get(tr.model.weight) or {}).items()})
        flags = real(loss)
        if tr.step == 2:
            seen["before"], seen["after"] = before, tr.model.weight.detach().clone()
            seen["state"] = {k: v.clone() for k, v in tr.optimizer.state[tr.model.weight].items()}
        return flags

    tr._optimizer_step = spy
    result = tr.fit()
    assert result.nonfinite_skipped == 1 and result.steps == 6
    assert torch.equal(seen["before"][0], seen["after"])  # the bad update did not land
    for k, v in seen["before"][1].items():
        assert torch.equal(v, seen["state"][k]), k  # nor did it touch AdamW's moments or step
    assert torch.isfinite(tr.model.weight).all()
    rows = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert rows[2]["nonfinite_skipped"] == 1 and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows
                                                     if r["step"] != 2)


def test_stop_after_max_nonfinite_keeps_finite_state(tmp_path: Path) -> None:
    tr = _toy(tmp_path / "b", bad={2, 3, 4, 5}, steps=8, max_nonfinite=3)
    with pytest.raises(TrainingError, match="not finite for 3 steps in a row"):
        tr.fit()
    newest = ckpt.list_checkpoints(tmp_path / "b")[-1]
    assert ckpt.finite_weights(newest)
    assert ckpt.load_state(newest)["nonfinite_total"] == 3


def test_huge_lr_never_saves_nonfinite_weights(synth_dir: Path, tmp_path: Path) -> None:
    """The issue's repro: base_lr 1e6, a checkpoint every 2 steps, then --resume auto three
    times. Every checkpoint ever kept is finite and resuming never trains on NaN weights."""
    cfg = tiny_pretrain(synth_dir, optim__base_lr=1e6, train__ckpt_every=2, train__max_nonfinite=2,
                        budget={"epochs": 3, "ref_frames": 4})
    run = tmp_path / "lr"
    for attempt in range(4):
        try:
            run_pretrain(cfg, out=str(run), resume="auto" if attempt else None)
        except TrainingError:
            pass
        kept = ckpt.list_checkpoints(run)
        assert kept and all(ckpt.finite_weights(k) for k in kept), attempt


def test_resume_skips_a_nonfinite_checkpoint(synth_dir: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "r"
    run_pretrain(tiny_pretrain(synth_dir, train__max_steps=2, train__ckpt_every=1, train__keep_last=5),
                 out=str(run))
    newest = ckpt.list_checkpoints(run)[-1]
    weights = ckpt.load_weights(newest)
    name = next(iter(weights))
    weights[name] = torch.full_like(weights[name], float("nan"))  # as older versions could save
    from safetensors.torch import save_file

    save_file(weights, str(newest / ckpt.WEIGHTS))
    assert ckpt.resolve_resume(run, "auto") == ckpt.list_checkpoints(run)[-2]
    assert "not finite" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="not finite"):
        ckpt.resolve_resume(run, str(newest))


# -------------------------------------------------------------------- one run per folder
def test_lock_refuses_a_second_owner_and_takes_over_a_dead_one(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; sys.path.insert(0, sys.argv[1]);"
                               "from progvid.engine.runlock import RunLock;"
                               "l = RunLock(sys.argv[2]).acquire(); print('held', flush=True);"
                               "time.sleep(60)", str(ROOT / "src"), str(tmp_path / "run")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLocked, match=rf"in use by pid {holder.pid}"):
            RunLock(tmp_path / "run").acquire()
    finally:
        holder.kill()  # SIGKILL: the record stays, the kernel drops the lock
        holder.wait()
    lock = RunLock(tmp_path / "run").acquire()
    assert lock.took_over and lock.took_over["pid"] == holder.pid
    lock.release()
    again = RunLock(tmp_path / "run").acquire()
    assert again.took_over is None  # a clean end leaves nothing to take over
    again.release()


def test_second_run_into_a_busy_folder_exits_2(synth_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_pretrain(synth_dir, budget={"epochs": 40, "ref_frames": 4})
    save_config(cfg, tmp_path / "c.yaml")
    first = progvid("pretrain", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run"))
    try:
        deadline = time.time() + 120
        while not (tmp_path / "run" / "metrics.jsonl").is_file() and time.time() < deadline:
            time.sleep(0.2)
        second = progvid("pretrain", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run"),
                         "--resume", "auto")
        _, err = second.communicate(timeout=120)
        assert second.returncode == 2 and "in use by pid" in err and err.count("\n") == 1
    finally:
        first.kill()
        first.wait()


def test_rejected_resume_changes_nothing(synth_dir: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "pre"
    cfg = tiny_pretrain(synth_dir, train__max_steps=2)
    run_pretrain(cfg, out=str(run))
    save_config(cfg, tmp_path / "p.yaml")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    wider = cfg.model_copy(update={"model": cfg.model.model_copy(update={"embed_dim": 64})})
    save_config(wider, tmp_path / "w.yaml")
    assert main(["pretrain", str(tmp_path / "w.yaml"), "--out", str(run), "--resume", "auto"]) == 2
    assert "`model.embed_dim` = 64" in capsys.readouterr().err
    longer = cfg.model_copy(update={"budget": cfg.budget.model_copy(update={"epochs": 2.0})})
    save_config(longer, tmp_path / "l.yaml")
    assert main(["pretrain", str(tmp_path / "l.yaml"), "--out", str(run), "--resume", "auto"]) == 2
    assert "--allow-changed-budget" in capsys.readouterr().err
    assert main(["pretrain", str(tmp_path / "p.yaml"), "--out", str(run)]) == 2  # no --resume
    assert "holds checkpoints of an earlier run" in capsys.readouterr().err
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert before == after  # config.yaml, plan.json, metrics untouched
    ft = tiny_finetune(synth_dir, model__init=str(run))
    save_config(ft, tmp_path / "ft.yaml")
    assert main(["pretrain", str(tmp_path / "ft.yaml"), "--out", str(run), "--resume", "auto"]) == 2
    # a longer budget is fine when asked for, and continues from the checkpoint
    assert main(["pretrain", str(tmp_path / "l.yaml"), "--out", str(run), "--resume", "auto",
                 "--allow-changed-budget"]) == 0
    assert [s for s, _ in losses(run)][:2] == [0, 1]


# -------------------------------------------------------------------- signals and launchers
def test_sigterm_saves_at_a_step_boundary_and_resume_is_exact(synth_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_pretrain(synth_dir, budget={"epochs": 6, "ref_frames": 4})
    save_config(cfg, tmp_path / "c.yaml")
    run_pretrain(cfg, out=str(tmp_path / "full"))
    p = progvid("pretrain", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "cut"))
    deadline = time.time() + 120
    while time.time() < deadline:
        m = tmp_path / "cut" / "metrics.jsonl"
        if m.is_file() and len(m.read_text().splitlines()) >= 3:
            break
        time.sleep(0.1)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143, err
    assert "SIGTERM: stopped at a step boundary" in err
    saved = ckpt.list_checkpoints(tmp_path / "cut")
    assert saved and int(saved[-1].name.split("_")[1]) >= 3
    assert main(["pretrain", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "cut"),
                 "--resume", "auto"]) == 0
    a, b = losses(tmp_path / "full"), losses(tmp_path / "cut")
    assert [s for s, _ in a] == [s for s, _ in b]
    for (_, x), (_, y) in zip(a, b, strict=True):
        assert x == pytest.approx(y, rel=1e-6, abs=1e-7)


def test_leftovers_removed_and_long_paths_refused(synth_dir: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    cfg = tiny_pretrain(synth_dir, train__max_steps=1)
    run_pretrain(cfg, out=str(run))
    junk = run / "checkpoints" / ".tmp_step_00000009_1234"
    junk.mkdir()
    (junk / "model.safetensors").write_bytes(b"half")
    run_pretrain(cfg.model_copy(update={"train": cfg.train.model_copy(update={"max_steps": 2})}),
                 out=str(run), resume="auto")
    assert not junk.exists() and "checkpoint write that was killed" in capsys.readouterr().err
    wide = tmp_path / ("x" * 300)  # one name past NAME_MAX
    long = Path(*([str(tmp_path)] + ["d" * 250] * 17))  # past PATH_MAX in all
    for out in (wide, long):
        with pytest.raises(ConfigError, match="too long"):
            run_pretrain(cfg, out=str(out))
    assert not any(p.name.startswith(("x", "d")) for p in tmp_path.iterdir())


def test_nproc_must_be_positive(capsys) -> None:
    for bad in ("0", "-3", "two"):
        with pytest.raises(SystemExit) as exc:
            main(["pretrain", "x.yaml", "--nproc", bad])
        assert exc.value.code == 2
    assert "--nproc" in capsys.readouterr().err


# -------------------------------------------------------------------- bad files from workers
def test_missing_video_with_workers_is_one_line(synth_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    lines = (synth_dir / "train.csv").read_text().splitlines()
    (data / "train.csv").write_text("\n".join(
        [f"{synth_dir}/{lines[0].split()[0]} 0", str(tmp_path / "gone.mp4") + " 1"] * 4) + "\n")
    cfg = tiny_pretrain(data, data__workers=1)
    save_config(cfg, tmp_path / "c.yaml")
    p = progvid("pretrain", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run"))
    _, err = p.communicate(timeout=180)
    assert p.returncode == 2, err
    assert err.strip() == f"progvid: error: {tmp_path / 'gone.mp4'}: file not found"


# -------------------------------------------------------------------- configs: validate = run
@pytest.mark.parametrize("overrides, field", [
    (["plan.stages=[{frames: 8, share: 0.75}, {frames: 16, share: 0.5}]"], "plan.stages"),
    (["plan.stages=[{frames: 3, share: 1.0}]"], "plan.stages.0.frames"),
    (["plan.stages=[{frames: 8, share: 0.5}, {frames: 4, share: 0.5}]"], "plan.stages.1.frames"),
    (["model.num_heads=5"], "model.num_heads"),
    (["data.input_size=36"], "data.input_size"),
    (["model.patch_size=64"], "data.input_size"),
    (["model.depth=1200", "model.embed_dim=4096"], "model"),
    (["data.train=null"], "data.train"),
    (["data.root=/nowhere/at/all"], "/nowhere/at/all"),
    (["model.decoder_mask=running_cell", "data.input_size=56", "model.patch_size=8"], "model.decoder_mask"),
])
def test_config_validate_rejects_what_a_run_rejects(synth_dir: Path, tmp_path: Path, capsys,
                                                     overrides, field) -> None:
    """The eight configs `config validate` used to pass and `pretrain` rejected, and more: both
    now agree, with one line naming the field."""
    cfg = tiny_pretrain(synth_dir)
    save_config(cfg, tmp_path / "c.yaml")
    sets = [x for o in overrides for x in ("--set", o)]
    assert main(["config", "validate", str(tmp_path / "c.yaml"), *sets]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and field in err, err
    assert main(["pretrain", str(tmp_path / "c.yaml"), *sets, "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("text, message", [
    ("budget:\n  epochs: .inf\n", "budget.epochs"),
    ("seed: -1\n", "seed"),
    ("seed: 12345678901234567890123\n", "seed"),
    ("optim:\n  base_lr: 1e999\n", "optim.base_lr"),
    ("train:\n  batch_size: true\n", "train.batch_size"),
    ("train:\n  batch_size: 4\n  batch_size: 8\n", "duplicate key 'batch_size'"),
    ("data:\n  crop_scales: []\n", "data.crop_scales"),
    ("plan:\n  stages: []\n", "plan.stages"),
])
def test_absurd_values_are_config_errors(tmp_path: Path, text: str, message: str) -> None:
    from progvid.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("task: pretrain\n" + text)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")) as err:
        load_config(path)
    assert "\n" not in str(err.value)
    path.write_bytes(b"task: pretrain\nseed: \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)


def test_a_failed_checkpoint_write_leaves_no_debris(tmp_path: Path, monkeypatch) -> None:
    """A write that fails half-way (a full disk: torch.save raises RuntimeError, not OSError)
    is one CheckpointError naming the checkpoint; its temporary folder is gone and the earlier
    checkpoint is untouched."""
    from progvid.engine import checkpoint as ck
    from progvid.errors import CheckpointError

    weights = {"w": torch.ones(3)}
    first = ck.save_checkpoint(tmp_path, 1, weights, {"step": 1}, {"task": "t"})
    before = (first / ck.WEIGHTS).read_bytes()

    def full(*_a, **_k):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 3 vs 2")

    monkeypatch.setattr(ck.torch, "save", full)
    with pytest.raises(CheckpointError, match=r"step_00000002: could not write the checkpoint"):
        ck.save_checkpoint(tmp_path, 2, weights, {"step": 2}, {"task": "t"})
    assert ck.list_checkpoints(tmp_path) == [first] and (first / ck.WEIGHTS).read_bytes() == before
    assert not list((tmp_path / "checkpoints").glob(".tmp_*"))


@pytest.mark.parametrize("damage, message", [
    ("huge_meta", "weights do not fit the videomae model in meta.json (missing"),
    ("int64", "dtype mismatch [encoder.patch_embed.proj.weight torch.int64 for torch.float32]"),
])
def test_damaged_checkpoint_is_refused_before_use(tiny_run: Path, tmp_path: Path, capsys,
                                                  damage: str, message: str) -> None:
    """A meta.json asking for an enormous model is refused from the weights' header, before any
    allocation; integer weights where the model has floats are refused, not cast."""
    import shutil

    from safetensors.torch import load_file, save_file

    src = ckpt.list_checkpoints(tiny_run)[-1]
    dst = tmp_path / "ck"
    shutil.copytree(src, dst)
    if damage == "huge_meta":
        meta = json.loads((dst / "meta.json").read_text())
        meta["model"].update(embed_dim=8192, depth=200, num_heads=64)
        (dst / "meta.json").write_text(json.dumps(meta))
    else:
        w = load_file(str(dst / "model.safetensors"))
        w["encoder.patch_embed.proj.weight"] = w["encoder.patch_embed.proj.weight"].long()
        save_file(w, str(dst / "model.safetensors"))
    t0 = time.time()
    assert main(["export", str(dst), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"progvid: error: {dst}: ") and message in err and err.count("\n") == 1
    assert time.time() - t0 < 60


class _Boom:
    def __reduce__(self):  # what a malicious pickle does
        return (os.system, ("touch PWNED",))


@pytest.mark.parametrize("command", ["export", "viz"])
def test_malicious_transformers_folder_is_refused(tmp_path: Path, capsys, monkeypatch,
                                                  command: str) -> None:
    import pickle

    monkeypatch.chdir(tmp_path)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps(
        {"model_type": "videomae", "architectures": ["VideoMAEForPreTraining"]}))
    (tmp_path / "m" / "pytorch_model.bin").write_bytes(pickle.dumps(_Boom()))
    argv = (["export", "m", "out"] if command == "export"
            else ["viz", "recon", "m", "v.mp4", "--out", "r.png"])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "objects that would run code" in err, err
    assert not (tmp_path / "PWNED").exists()
