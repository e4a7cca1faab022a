"""What every task run shares: its folder, device and process group, engine settings from the
config, resume-then-fit, and `ClipTask`, the base of every task that trains on clips (its
loaders, clip counting and bad-file log). Tasks (pre-training, fine-tuning, HCML) supply only
their model, their schedule and their `step`."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..config import RunConfig, load_config, save_config, to_plain
from ..data.datasets import Sample
from ..data.loader import SkipLog, train_loader
from ..data.transforms import normalize_clips
from ..engine.checkpoint import (
    clean_leftovers,
    list_checkpoints,
    load_meta,
    resolve_resume,
    set_aside_after,
)
from ..engine.distributed import (
    DistInfo,
    all_gather_objects,
    from_main,
    init_distributed,
    resolve_device,
    shutdown,
)
from ..engine.runlock import RunLock, describe_owner
from ..engine.schedule import ClipShape, Schedule, Stage
from ..engine.trainer import StepContext, Task, Trainer, TrainResult, TrainSettings
from ..errors import ConfigError, ProgvidError


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
        precision=t.precision, compile=t.compile, prefetch=t.prefetch, grad_clip=o.clip_grad, accum_steps=o.accum_steps,
        log_every=t.log_every, ckpt_every=t.ckpt_every, keep_last=t.keep_last,
        max_nonfinite=t.max_nonfinite, weight_decay=o.weight_decay, betas=o.betas, eps=o.eps,
        seed=cfg.seed, tensorboard=t.tensorboard, progress=progress)


@dataclass(frozen=True)
class RunContext:
    run_dir: Path
    device: torch.device
    dist: DistInfo
    resume: str | None = None  # --resume: a checkpoint, a run folder or "auto"
    allow_changes: bool = False  # --allow-changed-budget


# a run folder's path must leave room for the longest file a run writes in it
_LONGEST_INSIDE = "checkpoints/.tmp_old_step_00000000_4294967295/model.safetensors"
PATH_MAX, NAME_MAX = 4096, 255
# config sections that define what a run is: a resumed run must have the same
STRUCTURE = ("task", "model")
# sections that define how long it trains: changing them on resume needs allow_changes
BUDGET = ("plan", "budget", "epochs", "phases")
# model keys that may change on resume (how it runs, not what it is)
MAY_CHANGE = ("model.grad_checkpointing", "model.init")


def cpu_threads(threads: int | str, workers: int, world: int = 1) -> int:
    """Torch threads for a CPU run: `threads`, or with `auto` the cores this process's share
    leaves after its loader workers (threads that outnumber free cores wait on each other,
    and small steps get slower, not faster)."""
    if threads != "auto":
        return int(threads)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(world, 1) - workers)


def check_run_dir(run_dir: Path) -> None:
    """The run folder's path is usable: every file a run writes there fits the system's limits."""
    full = (run_dir / _LONGEST_INSIDE).resolve()
    if len(str(full)) >= PATH_MAX or any(len(part) > NAME_MAX for part in run_dir.resolve().parts):
        raise ConfigError(f"--out: the run folder's path is too long for this system "
                          f"({len(str(run_dir.resolve()))} characters; files inside need "
                          f"{len(str(full))} of at most {PATH_MAX - 1}, each name at most {NAME_MAX})")


def first_difference(old: Any, new: Any, prefix: str = "") -> tuple[str, Any, Any] | None:
    """The first dotted key where two plain configs differ: (key, old value, new value)."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            found = first_difference(old.get(key), new.get(key), f"{prefix}{key}.")
            if found is not None:
                return found
        return None
    return None if old == new else (prefix.rstrip("."), old, new)


def resume_problem(run_dir: Path, cfg: RunConfig, resume: str | None,
                   allow_changes: bool) -> str | None:
    """Why starting this run in `run_dir` would damage it (None: fine). Checked before anything
    is written, so a rejected command changes nothing in the folder."""
    existing = list_checkpoints(run_dir)
    if resume is None:
        if existing:
            return (f"{run_dir}: holds checkpoints of an earlier run (newest {existing[-1].name}); "
                    "continue it with --resume auto, or choose another --out")
        return None
    source = resolve_resume(run_dir, resume)
    if source is None:
        return None  # --resume auto with nothing to resume: a fresh start
    saved_path = source.parent.parent / "config.yaml"
    if not saved_path.is_file():
        return None
    try:
        saved = to_plain(load_config(saved_path))
    except ProgvidError as exc:
        return f"cannot check the run's saved config ({exc})"
    new = to_plain(cfg)
    for key in MAY_CHANGE:
        section, _, name = key.partition(".")
        for plain in (saved, new):
            if isinstance(plain.get(section), dict):
                plain[section].pop(name, None)
    for group, allowed in ((STRUCTURE, False), (BUDGET, allow_changes)):
        if allowed:
            continue
        found = first_difference({k: saved.get(k) for k in group}, {k: new.get(k) for k in group})
        if found is not None:
            key, was, now = found
            hint = ("pass --allow-changed-budget to continue with the new budget"
                    if group is BUDGET else "choose another --out for a different run")
            return (f"{saved_path}: resuming with `{key}` = {now!r}, but the run was made with "
                    f"{was!r}; {hint}")
    return None


@contextmanager
def run_context(cfg: RunConfig, out: str | None, config_path: str | None, *,
                resume: str | None = None, allow_changes: bool = False) -> Iterator[RunContext]:
    """Resolve the run folder and device, join the process group (torchrun), take the run
    folder's lock (rank 0, the outcome shared by every rank), refuse a start that would damage
    an earlier run, remove leftovers of killed checkpoint writes, seed, and clean up."""
    run_dir = run_dir_for(cfg, out, config_path)
    check_run_dir(run_dir)
    device = resolve_device(cfg.train.device)
    dist = init_distributed(device)
    device = resolve_device(cfg.train.device, dist.local_rank)
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(cfg.train.threads, cfg.data.workers, dist.world))
    lock = RunLock(run_dir)
    try:
        problem = None
        if dist.is_main:
            try:
                lock.acquire()
                if lock.took_over:
                    print(f"[progvid] {run_dir}: took over the lock of {describe_owner(lock.took_over)}, "
                          "which is no longer running", file=sys.stderr)
                problem = resume_problem(run_dir, cfg, resume, allow_changes)
                if problem is None:
                    for gone in clean_leftovers(run_dir):
                        print(f"[progvid] removed {gone}: a checkpoint write that was killed",
                              file=sys.stderr)
            except ProgvidError as exc:
                problem = str(exc)
        problem = from_main(problem)
        if problem is not None:
            err = ConfigError(problem)
            err.collective = dist.enabled  # every rank got rank 0's verdict
            raise err
        torch.manual_seed(cfg.seed)
        yield RunContext(run_dir, device, dist, resume, allow_changes)
    finally:
        lock.release()
        shutdown()


def train(ctx: RunContext, cfg: RunConfig, model: torch.nn.Module, task: Task, schedule: Schedule,
          meta: dict[str, Any], resume: str | None, progress: bool | None = None) -> TrainResult:
    """Build the trainer, restore `resume` (auto: the newest finite checkpoint) and fit."""
    trainer = Trainer(model, task, schedule, ctx.run_dir, settings_from(cfg, progress),
                      device=ctx.device, dist=ctx.dist, meta=meta)
    path = resolve_resume(ctx.run_dir, resume)
    if path is not None:
        trainer.restore(path)
        if trainer.step > schedule.total_steps:
            raise ConfigError(f"{path}: the checkpoint is at step {trainer.step}, past the end of "
                              f"the new schedule ({schedule.total_steps} steps)")
        if ctx.dist.is_main:
            moved = set_aside_after(ctx.run_dir, trainer.step)
            if moved is not None:
                print(f"[progvid] the run goes on from step {trainer.step}: its later checkpoints "
                      f"are moved to {moved}", file=sys.stderr)
    return trainer.fit(stop_at=cfg.train.max_steps)


class ClipTask:
    """Base of the tasks that train on clips of a dataset's training split.

    Provides a loader per stage and clip shape, clip counting, and `video(batch, ctx)`, which
    records the bad files `data.on_error: skip` replaced and moves the clips to the device.
    Subclasses write `step` (and optionally `param_groups`, `on_stage`)."""

    # data order per stage: seeded by (seed, stage index) when True, by the seed alone when False
    seed_per_stage = True

    def __init__(self, cfg: RunConfig, samples: list[Sample], ctx: RunContext) -> None:
        self.cfg = cfg
        self.samples = samples
        self._norm: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self.skips = SkipLog(len(samples), cfg.data.max_bad_fraction,
                             ctx.run_dir / "skipped.jsonl", write=ctx.dist.is_main,
                             gather=all_gather_objects if ctx.dist.enabled else None)

    def loader(self, stage_index: int, stage: Stage, shape: ClipShape, *, dist: DistInfo,
               device: torch.device) -> DataLoader:
        seed = self.cfg.seed * 1000 + stage_index if self.seed_per_stage else self.cfg.seed
        return train_loader(self.cfg.data, self.samples, frames=shape.frames,
                            batch_size=stage.batch_size, seed=seed, rank=dist.rank,
                            world=dist.world, device=device, rate=shape.sampling_rate,
                            clips_per_decode=shape.clips_per_decode,
                            # random lengths draw one batch per iterator: hand over one at a time
                            group=1 if stage.frame_choices else None)

    def video(self, batch: dict[str, Any], ctx: StepContext) -> torch.Tensor:
        """The batch's clips on the training device, normalised (bad files replaced are logged
        first). Clips that left the workers as uint8 (`data.transfer`) are normalised here."""
        self.skips.update(batch["skipped"])
        video = batch["video"].to(ctx.device, non_blocking=True)
        if video.dtype == torch.uint8:
            video = normalize_clips(video, *self._mean_std(video.device))
        return video

    def _mean_std(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The data's mean/std on `device`, made once (a fresh host-to-device copy every step
        would make the host wait for the device)."""
        cached = self._norm.get(device)
        if cached is None:
            d = self.cfg.data
            cached = self._norm[device] = (torch.tensor(d.mean, device=device), torch.tensor(d.std, device=device))
        return cached

    def clips(self, batch: dict[str, Any]) -> int:
        return int(batch["video"].shape[0])

    def on_log(self, step: int) -> None:
        """Share this rank's bad files with the others (a no-op for one process)."""
        if self.skips.gather is not None:
            self.skips.flush()

    def step(self, model: torch.nn.Module, batch: dict[str, Any],
             ctx: StepContext) -> dict[str, torch.Tensor]:
        raise NotImplementedError


def schedule_problem(ctx: RunContext, schedule: Schedule) -> str | None:
    """Why resuming with `schedule` would go on from the wrong place (None: fine). A checkpoint
    holds a step number, a position in the schedule that wrote it; a schedule with other stage
    lengths (another total batch: train.batch_size x processes x optim.accum_steps) would put
    that step elsewhere, e.g. in a later stage, silently skipping the rest of the current one.
    --allow-changed-budget accepts the new schedule (the run goes on at the same step number)."""
    if ctx.resume is None or ctx.allow_changes:
        return None
    source = resolve_resume(ctx.run_dir, ctx.resume)
    if source is None:
        return None
    try:
        meta = load_meta(source)
    except ProgvidError:
        return None  # no metadata, or damaged: restoring reports it, naming the file
    now = [st.steps for st in schedule.stages]
    was = meta.get("stage_steps")
    if was is None:  # written before the stages were recorded: compare the total
        total = meta.get("schedule_steps")
        if total is None or total == schedule.total_steps:
            return None
        was_text, now_text = f"{total} steps", f"{schedule.total_steps}"
    elif list(was) == now:
        return None
    else:
        was_text, now_text = f"stages of {_steps(was)} steps", _steps(now)
    return (f"{source}: step {meta.get('step')} of a schedule of {was_text}, but this run's is "
            f"{now_text}: the total batch (train.batch_size x processes x optim.accum_steps) or "
            "the budget changed, so the step would land elsewhere in the plan; resume with the "
            "same total batch (e.g. half the processes and twice optim.accum_steps), or pass "
            "--allow-changed-budget to go on at the same step of the new schedule")


def _steps(counts: list[int]) -> str:
    return " / ".join(str(c) for c in counts)


def write_run_files(ctx: RunContext, cfg: RunConfig, schedule: Schedule,
                    files: dict[str, str] | None = None) -> None:
    """Refuse a resume that `schedule` would misplace (`schedule_problem`, every rank raises);
    then on the main process create the run folder, save the resolved config and `files`."""
    problem = None
    if ctx.dist.is_main:
        try:
            problem = schedule_problem(ctx, schedule)
        except ProgvidError as exc:
            problem = str(exc)
    problem = from_main(problem)
    if problem is not None:
        err = ConfigError(problem)
        err.collective = ctx.dist.enabled  # every rank got rank 0's verdict
        raise err
    if not ctx.dist.is_main:
        return
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    # with its folder as `out`, the saved copy names this run: `progvid eval RUN/config.yaml`,
    # or a rerun of it, finds the run wherever it was made from
    save_config(cfg.model_copy(update={"out": str(ctx.run_dir)}), ctx.run_dir / "config.yaml")
    for name, text in (files or {}).items():
        (ctx.run_dir / name).write_text(text)
