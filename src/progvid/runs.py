"""What every task run shares: its folder, device and process group, engine settings from the
config, a one-stage warmup + cosine schedule, and resume-then-fit. Tasks (pre-training,
fine-tuning, HCML) supply only their model, their step and their schedule."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .engine.checkpoint import resolve_resume
from .engine.distributed import DistInfo, init_distributed, resolve_device, shutdown
from .engine.schedule import CosineLR, Schedule, Stage
from .engine.trainer import Task, Trainer, TrainResult, TrainSettings


def run_dir_for(cfg: Any, out: str | None, config_path: str | None) -> Path:
    """--out, else the config's `out`, else runs/<config file name>."""
    if out:
        return Path(out)
    if cfg.out:
        return Path(cfg.out)
    stem = Path(config_path).stem if config_path else cfg.task
    return Path("runs") / stem


def settings_from(cfg: Any, progress: bool | None = None) -> TrainSettings:
    """Engine settings from a task config's `train` and `optim` sections."""
    t, o = cfg.train, cfg.optim
    return TrainSettings(
        precision=t.precision, compile=t.compile, grad_clip=o.clip_grad, accum_steps=o.accum_steps,
        log_every=t.log_every, ckpt_every=t.ckpt_every, keep_last=t.keep_last,
        max_nonfinite=t.max_nonfinite, weight_decay=o.weight_decay, betas=o.betas, eps=o.eps,
        seed=cfg.seed, tensorboard=t.tensorboard, progress=progress)


@dataclass(frozen=True)
class RunContext:
    run_dir: Path
    device: torch.device
    dist: DistInfo


@contextmanager
def run_context(cfg: Any, out: str | None, config_path: str | None) -> Iterator[RunContext]:
    """Resolve the run folder and device, join the process group (torchrun), seed, clean up."""
    run_dir = run_dir_for(cfg, out, config_path)
    device = resolve_device(cfg.train.device)
    dist = init_distributed(device)
    device = resolve_device(cfg.train.device, dist.local_rank)
    try:
        torch.manual_seed(cfg.seed)
        yield RunContext(run_dir, device, dist)
    finally:
        shutdown()


def cosine_stage(*, epochs: float, dataset_size: int, total_batch: int, base_lr: float,
                 min_lr: float, warmup_epochs: float, **stage: Any) -> Stage:
    """A stage of `epochs` over the data: warmup then cosine, lrs scaled by total_batch / 256."""
    per_epoch = dataset_size / total_batch
    steps = max(1, math.ceil(epochs * per_epoch))
    warmup = min(int(round(warmup_epochs * per_epoch)), steps - 1) if steps > 1 else 0
    scale = total_batch / 256
    return Stage(steps=steps, lr=CosineLR(base_lr * scale, min_lr * scale, warmup, steps), **stage)


def train(ctx: RunContext, cfg: Any, model: torch.nn.Module, task: Task, schedule: Schedule,
          meta: dict[str, Any], resume: str | None, progress: bool | None = None) -> TrainResult:
    """Build the trainer, restore `resume` (auto: the newest checkpoint) and fit."""
    trainer = Trainer(model, task, schedule, ctx.run_dir, settings_from(cfg, progress),
                      device=ctx.device, dist=ctx.dist, meta=meta)
    path = resolve_resume(ctx.run_dir, resume)
    if path is not None:
        trainer.restore(path)
    return trainer.fit(stop_at=cfg.train.max_steps)
