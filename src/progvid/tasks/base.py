"""What every task run shares: its folder, device and process group, engine settings from the
config, resume-then-fit, and `ClipTask`, the base of every task that trains on clips (its
loaders, clip counting and bad-file log). Tasks (pre-training, fine-tuning, HCML) supply only
their model, their schedule and their `step`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..config import RunConfig, save_config
from ..data.datasets import Sample
from ..data.loader import SkipLog, train_loader
from ..engine.checkpoint import resolve_resume
from ..engine.distributed import DistInfo, init_distributed, resolve_device, shutdown
from ..engine.schedule import ClipShape, Schedule, Stage
from ..engine.trainer import StepContext, Task, Trainer, TrainResult, TrainSettings


def run_dir_for(cfg: Any, out: str | None, config_path: str | None) -> Path:
    """--out, else the config's `out`, else runs/<config file name>."""
    if out:
        return Path(out)
    if cfg.out:
        return Path(cfg.out)
    stem = Path(config_path).stem if config_path else cfg.task
    return Path("runs") / stem


def settings_from(cfg: RunConfig, progress: bool | None = None) -> TrainSettings:
    """Engine settings from a task config's `train` and `optim` sections."""
    t, o = cfg.train, cfg.optim  # type: ignore[attr-defined]
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
def run_context(cfg: RunConfig, out: str | None, config_path: str | None) -> Iterator[RunContext]:
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


def train(ctx: RunContext, cfg: RunConfig, model: torch.nn.Module, task: Task, schedule: Schedule,
          meta: dict[str, Any], resume: str | None, progress: bool | None = None) -> TrainResult:
    """Build the trainer, restore `resume` (auto: the newest checkpoint) and fit."""
    trainer = Trainer(model, task, schedule, ctx.run_dir, settings_from(cfg, progress),
                      device=ctx.device, dist=ctx.dist, meta=meta)
    path = resolve_resume(ctx.run_dir, resume)
    if path is not None:
        trainer.restore(path)
    return trainer.fit(stop_at=cfg.train.max_steps)


class ClipTask:
    """Base of the tasks that train on clips of a dataset's training split.

    Provides a loader per stage and clip shape, clip counting, and `video(batch, ctx)`, which
    records the bad files `data.on_error: skip` replaced and moves the clips to the device.
    Subclasses write `step` (and optionally `param_groups`, `on_stage`)."""

    # data order per stage: seeded by (seed, stage index) when True, by the seed alone when False
    seed_per_stage = True

    def __init__(self, cfg: RunConfig, samples: list[Sample], run_dir: Path) -> None:
        self.cfg = cfg
        self.samples = samples
        self.skips = SkipLog(len(samples), cfg.data.max_bad_fraction, run_dir / "skipped.jsonl")

    def loader(self, stage_index: int, stage: Stage, shape: ClipShape, *, dist: DistInfo,
               device: torch.device) -> DataLoader:
        seed = self.cfg.seed * 1000 + stage_index if self.seed_per_stage else self.cfg.seed
        return train_loader(self.cfg.data, self.samples, frames=shape.frames,
                            batch_size=stage.batch_size, seed=seed, rank=dist.rank,
                            world=dist.world, device=device, rate=shape.sampling_rate)

    def video(self, batch: dict[str, Any], ctx: StepContext) -> torch.Tensor:
        """The batch's clips on the training device (bad files replaced are logged first)."""
        self.skips.update(batch["skipped"])
        return batch["video"].to(ctx.device, non_blocking=True)

    def clips(self, batch: dict[str, Any]) -> int:
        return int(batch["video"].shape[0])

    def step(self, model: torch.nn.Module, batch: dict[str, Any],
             ctx: StepContext) -> dict[str, torch.Tensor]:
        raise NotImplementedError


def write_run_files(ctx: RunContext, cfg: RunConfig, files: dict[str, str] | None = None) -> None:
    """On the main process: create the run folder, save the resolved config and `files`."""
    if not ctx.dist.is_main:
        return
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, ctx.run_dir / "config.yaml")
    for name, text in (files or {}).items():
        (ctx.run_dir / name).write_text(text)
