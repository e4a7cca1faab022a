"""The one training loop: pre-training, fine-tuning, HCML levels and every progressive stage.

A task plugs in three things (see `Task`): a loader per stage, a `step` that returns losses, and
optionally its optimizer parameter groups. Everything that varies over time (stage, frames,
batch, learning rate, data position, random masks) is a pure function of the global step, so a
run resumed from any checkpoint produces the same losses as one that never stopped.

Bad steps never land: before the optimizer steps, the loss and the gradient norm are checked on
the device (every rank agrees through one all-reduce), and a non-finite step is skipped inside
the fused AdamW kernel (its `found_inf` input), with no host round trip. The host reads those
flags one step late, while the next step's work is already queued, to count skipped steps, to
stop after `max_nonfinite` in a row, and to stop every rank at the same step boundary when one
of them got SIGINT or SIGTERM (a checkpoint is saved first; the run exits 130 / 143). Losses
for the metrics are summed on the device and read every `log_every` steps. A checkpoint is
only ever written with finite weights.
"""

from __future__ import annotations

import contextlib
import random
import signal
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..config import AdamWConfig, TrainConfig
from ..errors import CheckpointError, Interrupted, ProgvidError
from ..models.common import unwrap
from . import checkpoint as ckpt
from .distributed import DistInfo, all_max, all_mean, barrier
from .feed import BatchFeed, batches_per_epoch
from .logging import RunLogger
from .schedule import ClipShape, Schedule, Stage


class TrainingError(RuntimeError):
    """A run that cannot go on (exit code 1); its newest finite state has been kept."""


@dataclass(frozen=True)
class StepContext:
    """What a task's `step` may depend on. `generator` (on the device; seeded from (seed,
    step) only, so every rank draws the same masks for the global batch) and `host_generator`
    (on the CPU, for draws the host must read, such as mixup's box: reading a device draw would
    wait for the device; seeded from (seed, step, rank)). One process on CPU: they are one."""

    step: int
    stage_index: int
    stage: Stage
    num_frames: int
    rank: int
    world: int
    device: torch.device
    generator: torch.Generator
    host_generator: torch.Generator


class Task(Protocol):
    def loader(self, stage_index: int, stage: Stage, shape: ClipShape, *, dist: DistInfo,
               device: torch.device) -> DataLoader: ...

    # the same loss terms on every step of a stage (a stage may change them: HCML's phases)
    def step(self, model: torch.nn.Module, batch: Any, ctx: StepContext) -> dict[str, torch.Tensor]: ...

    def clips(self, batch: Any) -> int: ...

    # Optional: `param_groups(model) -> list[dict]` (default: `param_groups` below),
    # `on_stage(model, stage_index, stage)` called whenever a stage begins (also on resume),
    # `find_unused_parameters = True` when stages freeze parts of the model,
    # `validate(model) -> dict[str, float]` with `validate_every` steps (0: never) and
    # `best_metric` (a key of validate's result, higher is better: the best checkpoint is kept),
    # `on_log(step)` called with every metrics record (e.g. to share bad-file logs across ranks).


_TRAIN, _OPTIM = TrainConfig.model_fields, AdamWConfig.model_fields


@dataclass(frozen=True)
class TrainSettings:
    """The loop's settings; defaults are the config's (`train` and optimizer sections)."""

    precision: str = _TRAIN["precision"].default  # fp32 | bf16 | fp16
    compile: bool = _TRAIN["compile"].default
    prefetch: bool = _TRAIN["prefetch"].default  # next batch fetched (and copied) during a step
    grad_clip: float | None = _OPTIM["clip_grad"].default
    accum_steps: int = _OPTIM["accum_steps"].default
    log_every: int = _TRAIN["log_every"].default
    ckpt_every: int = _TRAIN["ckpt_every"].default  # steps; a checkpoint is also written at the end
    keep_last: int = _TRAIN["keep_last"].default
    max_nonfinite: int = _TRAIN["max_nonfinite"].default  # non-finite steps in a row before a stop
    weight_decay: float = _OPTIM["weight_decay"].default
    betas: tuple[float, float] = _OPTIM["betas"].default
    eps: float = _OPTIM["eps"].default
    seed: int = 0
    tensorboard: bool = _TRAIN["tensorboard"].default
    progress: bool | None = None  # None: a bar only on a terminal
    handle_signals: bool = True  # SIGINT / SIGTERM: save at the next step boundary and stop


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    checkpoint: Path | None
    nonfinite_skipped: int
    flops: float
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no decay on norms, biases, position tables and tokens (VideoMAE's rule)."""
    skip = set(getattr(model, "no_weight_decay", lambda: set())())
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(".bias") or name in skip or name.split(".")[-1] in skip:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def _step_seed(seed: int, step: int, rank: int = 0) -> int:
    return (seed * 1_000_003 + step * 9_176 + rank * 7_919 + 12_345) % (2**63 - 1)


def _seed_global(seed: int, device: torch.device) -> None:
    """Seed the global generators this run draws from (dropout, drop path): the CPU one and, on
    CUDA, the training device's. `torch.manual_seed` would also queue a seed for every lazy
    device backend with a captured stack trace, about 1 ms per step on CPU."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)
    elif device.type != "cpu":
        torch.manual_seed(seed)


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def weights_finite(model: torch.nn.Module) -> bool:
    """True when every parameter and buffer of `model` is finite (one host sync)."""
    tensors = [t for t in unwrap(model).state_dict().values() if t.is_floating_point() and t.numel()]
    if not tensors:
        return True
    norms = torch._foreach_norm([t.float() for t in tensors])
    return bool(torch.isfinite(torch.stack(norms)).all())


@dataclass
class _Flags:
    """One step's verdict, still on the device: [bad step, stop requested] (all-reduced)."""

    step: int
    values: torch.Tensor
    stage: int
    frames: int
    clips: int
    flops_per_clip: float


class Trainer:
    def __init__(self, model: torch.nn.Module, task: Task, schedule: Schedule, run_dir: str | Path,
                 settings: TrainSettings, *, device: torch.device, dist: DistInfo | None = None,
                 meta: dict[str, Any] | None = None) -> None:
        if settings.precision not in ("fp32", "bf16", "fp16"):
            raise ProgvidError(f"train.precision: unknown precision {settings.precision!r}")
        self.task, self.schedule, self.settings = task, schedule, settings
        self.run_dir = Path(run_dir)
        self.device = device
        self.dist = dist or DistInfo()
        self.meta = meta or {}
        self.model = model.to(device)
        self._params = list(self.model.parameters())  # walked every step: list them once
        groups = getattr(task, "param_groups", None)
        groups = groups(self.model) if groups is not None else param_groups(self.model, settings.weight_decay)
        # fused AdamW: one kernel over all tensors (CPU and CUDA); ~3x faster optimizer step; it
        # also takes the on-device `found_inf` flag that skips a bad step without a host sync
        self.optimizer = torch.optim.AdamW(groups, lr=0.0, betas=settings.betas, eps=settings.eps,
                                           fused=True)
        self.scaler = torch.amp.GradScaler(device.type, enabled=settings.precision == "fp16")
        self.wrapped: torch.nn.Module = self.model
        if self.dist.enabled:
            ids = [device.index] if device.type == "cuda" else None
            # tasks that freeze parts of the model per stage (HCML levels) leave parameters
            # without gradients; DDP must then look for them every step
            unused = bool(getattr(task, "find_unused_parameters", False))
            self.wrapped = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=ids, find_unused_parameters=unused)
        if settings.compile:
            self.wrapped = torch.compile(self.wrapped)
        self.step = 0
        self.flops = 0.0
        self.clips_seen = 0
        self.nonfinite_total = 0
        self.nonfinite_run = 0
        self.best: float | None = None
        self._signal: int | None = None  # a signal this process received
        self._stop: tuple[str, int] | None = None  # why the run stops at the next boundary
        # the feed calls back for a stage's loaders through a weak reference: a bound method
        # would tie the trainer and the feed into a cycle, which keeps a finished run's loader
        # workers alive until the garbage collector runs (in whichever process forks next)
        build = weakref.WeakMethod(self._stage_loaders)
        self.feed = BatchFeed(lambda index, stage: build()(index, stage), device, settings.prefetch,
                              settings.accum_steps)

    # ---------------------------------------------------------------- state
    def state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "flops": self.flops,
            "clips_seen": self.clips_seen,
            "nonfinite_total": self.nonfinite_total,
            "nonfinite_run": self.nonfinite_run,  # a resumed run continues the streak
            "best": self.best,
            "data_position": self._data_position(self.step),
            "rng": {
                "torch": torch.get_rng_state(),
                "numpy": _numpy_state(),
                "python": repr(random.getstate()),
                # the training device's only: restorable on a machine with fewer GPUs
                "cuda_device": (torch.cuda.get_rng_state(self.device)
                                if self.device.type == "cuda" else None),
            },
        }

    def _data_position(self, step: int) -> dict[str, int]:
        if step >= self.schedule.total_steps:
            return {"stage": len(self.schedule.stages) - 1, "step_in_stage": -1}
        pos = self.schedule.locate(step)
        return {"stage": pos.stage, "step_in_stage": pos.step_in_stage}

    def save(self, name: str | None = None) -> Path | None:
        """Write a checkpoint of the current state (rank 0), only if every weight is finite;
        `name` (e.g. "best") writes a named checkpoint that pruning never removes."""
        path = None
        finite = weights_finite(self.model)
        if self.dist.is_main and finite:
            meta = {**self.meta, "schedule_steps": self.schedule.total_steps,
                    "stage_steps": [st.steps for st in self.schedule.stages]}
            path = ckpt.save_checkpoint(self.run_dir, self.step, ckpt.plain_state_dict(self.model),
                                        self.state(), meta, keep_last=self.settings.keep_last,
                                        name=name)
        barrier()
        return path

    def restore(self, path: str | Path) -> None:
        ckpt.load_exact(self.model, ckpt.load_weights(path), f"{path}: weights do not match the model")
        state = ckpt.load_state(path)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            if state["scaler"]:  # empty when the run was not fp16: the scaler starts afresh
                self.scaler.load_state_dict(state["scaler"])
        except (KeyError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{path}: optimizer state does not match ({exc})") from None
        self.step = int(state["step"])
        self.flops = float(state.get("flops", 0.0))
        self.clips_seen = int(state.get("clips_seen", 0))
        self.nonfinite_total = int(state.get("nonfinite_total", 0))
        self.nonfinite_run = int(state.get("nonfinite_run", 0))
        self.best = state.get("best")
        rng = state.get("rng", {})
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if self.device.type == "cuda":
            index = self.device.index if self.device.index is not None else torch.cuda.current_device()
            cuda = rng.get("cuda_device")
            if cuda is None and index < len(rng.get("cuda") or []):  # older: every visible GPU's
                cuda = rng["cuda"][index]
            if cuda is not None:
                torch.cuda.set_rng_state(cuda, self.device)
        if rng.get("numpy") is not None:
            name, keys, npos, has_gauss, cached = rng["numpy"]
            np.random.set_state((name, np.asarray(keys, dtype=np.uint32), npos, has_gauss, cached))
        if "python" in rng:
            import ast

            random.setstate(ast.literal_eval(rng["python"]))

    # ---------------------------------------------------------------- loop
    def fit(self, stop_at: int | None = None) -> TrainResult:
        """Train from the current step to the end of the schedule (or to `stop_at`)."""
        total = self.schedule.total_steps
        end = total if stop_at is None else min(stop_at, total)
        log = RunLogger(self.run_dir, total_steps=total, start_step=self.step,
                        enabled=self.dist.is_main, tensorboard=self.settings.tensorboard,
                        progress=self.settings.progress, work=self.schedule.work)
        self.model.train()
        try:
            with log, self._signals():
                return self._loop(end, log)
        finally:
            self.feed.close()  # the loader workers stop now, not when the trainer is collected

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGINT / SIGTERM request a stop at the next step boundary (main thread only)."""
        if not self.settings.handle_signals or threading.current_thread() is not threading.main_thread():
            yield
            return

        def request(signum: int, _frame: Any) -> None:
            if self._signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C: stop now, without saving
            self._signal = signum

        old = {s: signal.signal(s, request) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)

    def _loop(self, end: int, log: RunLogger) -> TrainResult:
        s = self.settings
        t_start = time.time()
        history: list[dict[str, Any]] = []
        stage_idx = -1
        sums: dict[str, torch.Tensor] = {}  # loss sums of the good steps since the last record
        good = torch.zeros((), device=self.device)
        win_t0, win_wait, win_clips = time.time(), 0.0, 0
        last_loss = float("nan")
        pending: _Flags | None = None  # the previous step's flags, read one step late
        validate = getattr(self.task, "validate", None)
        every = int(getattr(self.task, "validate_every", 0) or 0)
        while self.step < end:
            pos = self.schedule.locate(self.step)
            stage = self.schedule.stages[pos.stage]
            if pos.stage != stage_idx:
                stage_idx = pos.stage
                if stage.reset_optimizer and pos.step_in_stage == 0 and self.step > 0:
                    self.optimizer.state.clear()
                on_stage = getattr(self.task, "on_stage", None)
                if on_stage is not None:  # e.g. which levels are frozen: a function of the stage
                    on_stage(self.model, pos.stage, stage)
                self.feed.start_stage(pos.stage, stage, pos.step_in_stage)
                log.set_description(f"stage {pos.stage + 1}/{len(self.schedule.stages)} "
                                    f"{stage.num_frames}f")
            t_step = time.time()
            lr = self.schedule.lr(self.step)
            for group in self.optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
            _seed_global(_step_seed(s.seed, self.step, self.dist.rank), self.device)
            gen = torch.Generator(device=self.device).manual_seed(_step_seed(s.seed, self.step))
            # host draws (mixup's mode, lambda and box) differ per rank, as each of VideoMAE's
            # processes draws its own; one process on CPU keeps the device generator
            host_gen = gen if self.device.type == "cpu" and not self.dist.enabled else (
                torch.Generator().manual_seed(_step_seed(s.seed, self.step, self.dist.rank) ^ 0x5DEECE66D))
            shape = self._shape_at(stage)
            losses: dict[str, torch.Tensor] = {}
            step_clips = 0
            self.optimizer.zero_grad(set_to_none=True)
            for k in range(s.accum_steps):
                micro = pos.step_in_stage * s.accum_steps + k
                t_wait = time.time()
                batch = self.feed.batch(shape.frames, micro, stage)
                win_wait += time.time() - t_wait
                ctx = StepContext(self.step, pos.stage, stage, shape.frames, self.dist.rank,
                                  self.dist.world, self.device, gen, host_gen)
                sync = k == s.accum_steps - 1 or not self.dist.enabled
                with (contextlib.nullcontext() if sync else self.wrapped.no_sync()):
                    with _autocast(self.device, s.precision):
                        out = self.task.step(self.wrapped, batch, ctx)
                    # always backward, even on a non-finite loss: every DDP rank must reach
                    # the same gradient all-reduce; a bad step is skipped by the optimizer
                    self.scaler.scale(out["loss"] / s.accum_steps).backward()
                last_micro = k == s.accum_steps - 1
                if s.prefetch and not (last_micro and (self.step + 1 >= end
                                                       or pos.step_in_stage + 1 >= stage.steps)):
                    # the device is busy with this micro-step: fetch the next one meanwhile
                    t_wait = time.time()
                    self.feed.fetch_ahead(shape.frames, micro + 1, stage)
                    win_wait += time.time() - t_wait
                for name, v in out.items():
                    v = v.detach().float() / s.accum_steps
                    losses[name] = losses[name] + v if name in losses else v
                step_clips += self.task.clips(batch) * self.dist.world
            flags = self._optimizer_step(losses["loss"])
            ok = 1.0 - flags[0]
            for name, v in losses.items():  # a skipped step adds nothing (not even its NaN)
                sums[name] = sums.get(name, 0.0) + torch.where(ok > 0, v, torch.zeros_like(v))
            good = good + ok
            self.step += 1
            # the previous step's verdict, read while this step's work is queued (no stall)
            prev, pending = pending, _Flags(self.step - 1, flags, pos.stage, shape.frames,
                                            step_clips, shape.flops_per_clip)
            if prev is not None:
                self._account(prev, log)
            win_clips += step_clips
            log.advance(1, {"ep": f"{self._epoch(pos.step_in_stage, shape.frames):.2f}",
                            "clips/s": f"{win_clips / max(time.time() - win_t0, 1e-9):.1f}"})
            # a record per log_every steps, and one at each stage's end: a window never spans
            # two stages, whose loss terms may differ (HCML's phases), so every term of a window
            # comes from each of its good steps
            if (self.step % s.log_every == 0 or self.step == end or self._stop is not None
                    or pos.step_in_stage + 1 >= stage.steps):
                self._account(pending, log)
                pending = None
                names = list(sums)
                packed = torch.stack([*(sums[n] for n in names), good]).double()
                reduced = all_mean(packed).tolist()
                n_good = reduced[-1]
                elapsed = max(time.time() - win_t0, 1e-9)
                means = {n: (v / n_good if n_good else float("nan"))
                         for n, v in zip(names, reduced, strict=False)}
                if n_good:
                    last_loss = means["loss"]
                record = {"step": self.step - 1, "stage": pos.stage, "frames": shape.frames,
                          "epoch": self._epoch(pos.step_in_stage, shape.frames), **means,
                          "lr": lr, "clips_per_s": win_clips / elapsed,
                          "data_wait_fraction": min(win_wait / elapsed, 1.0),
                          "flops": self.flops, "clips_seen": self.clips_seen,
                          "nonfinite_skipped": self.nonfinite_total,
                          "time": time.time() - t_start}
                on_log = getattr(self.task, "on_log", None)
                if on_log is not None:
                    on_log(self.step)
                log.log(record)
                log.set_postfix(loss=last_loss, lr=lr)
                history.append(record)
                sums, good = {}, torch.zeros((), device=self.device)
                win_t0, win_wait, win_clips = time.time(), 0.0, 0
            self.feed.warm_next(self.schedule, pos.stage, pos.step_in_stage, self.step, end,
                                time.time() - t_step)
            if self._stop is not None:
                self._stop_now(pending, log)
            if validate is not None and every and (self.step % every == 0 or self.step == end):
                self._validate(validate, log, history)
            if self.step % s.ckpt_every == 0 and self.step < end:
                if pending is not None:
                    self._account(pending, log)
                    pending = None
                self.save()
        if pending is not None:
            self._account(pending, log)
        if self._stop is not None:
            self._stop_now(None, log)
        path = self.save()
        return TrainResult(self.step, last_loss, path, self.nonfinite_total, self.flops,
                           time.time() - t_start, history)

    # ---------------------------------------------------------------- the guard
    def _optimizer_step(self, loss: torch.Tensor) -> torch.Tensor:
        """Check, clip and step; returns the all-reduced flags [bad, stop] on the device.

        A step is bad when its loss (on any rank) or its gradient norm is not finite; the
        optimizer then leaves weights, moments and its step count untouched (`found_inf`).
        With fp16 the gradient scaler owns the overflow check (skipped steps lower the scale
        and are not counted as bad unless the loss itself is not finite)."""
        s = self.settings
        params = [p for p in self._params if p.grad is not None]
        bad = (~torch.isfinite(loss.detach())).float()
        if s.precision == "fp16":
            if s.grad_clip is not None:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(params, s.grad_clip)
        else:
            grads = [p.grad for p in params]
            if s.grad_clip is not None:
                norm = torch.nn.utils.clip_grad_norm_(params, s.grad_clip)
            else:
                norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=self.device)
            bad = torch.maximum(bad, (~torch.isfinite(norm)).float().to(bad.device))
        # a fill on the device, not a copy from the host (which waits for the device's queue)
        stop = torch.full((), 0.0 if self._signal is None else 1.0, device=self.device)
        flags = all_max(torch.stack([bad.to(self.device), stop]))
        if s.precision != "fp16":
            self.optimizer.found_inf = flags[0]  # read inside the fused kernel
            try:
                self.optimizer.step()
            finally:
                del self.optimizer.found_inf
        else:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        return flags

    def _account(self, f: _Flags, log: RunLogger) -> None:
        """Host bookkeeping of a finished step (one small device read): counts, cost, and
        whether the run must stop (acted on by `_stop_now` at the step boundary)."""
        bad, stop = (bool(v > 0) for v in f.values.tolist())
        if bad:
            self.nonfinite_total += 1
            self.nonfinite_run += 1
            log.write(f"step {f.step}: non-finite loss or gradient, step skipped "
                      f"({self.nonfinite_run} in a row, {self.nonfinite_total} in all)")
            if self.nonfinite_run >= self.settings.max_nonfinite and self._stop is None:
                self._stop = ("nonfinite", f.step)
        else:
            self.nonfinite_run = 0
            self.clips_seen += f.clips
            self.flops += f.clips * f.flops_per_clip
        if stop and self._stop is None:
            self._stop = ("signal", self._signal or signal.SIGTERM)  # maybe another rank's

    def _stop_now(self, pending: _Flags | None, log: RunLogger) -> None:
        """Save the state at this step boundary (every step so far accounted) and stop."""
        if pending is not None:
            self._account(pending, log)
        why, value = self._stop  # type: ignore[misc]
        path = self.save()  # skipped steps changed nothing: the weights are the last good ones
        if why == "signal":
            raise Interrupted(int(value), path)
        where = path or (ckpt.list_checkpoints(self.run_dir) or [self.run_dir])[-1]
        raise TrainingError(
            f"loss or gradients were not finite for {self.nonfinite_run} steps in a row "
            f"(step {value}); stopped; newest finite state: {where}")

    def _validate(self, validate: Any, log: RunLogger, history: list[dict[str, Any]]) -> None:
        """Evaluate, log `val_*` records, and keep the best checkpoint by `best_metric`."""
        self.model.eval()
        try:
            with torch.no_grad():
                result = validate(self.model)
        finally:
            self.model.train()
        record = {"step": self.step - 1, **{f"val_{k}": float(v) for k, v in result.items()}}
        log.log(record)
        history.append(record)
        key = getattr(self.task, "best_metric", None)
        if key is not None and key in result and (self.best is None or result[key] > self.best):
            self.best = float(result[key])
            self.save(name="best")

    # ---------------------------------------------------------------- helpers
    def _stage_loaders(self, index: int, stage: Stage) -> dict[int, DataLoader]:
        return {shape.frames: self.task.loader(index, stage, shape, dist=self.dist, device=self.device)
                for shape in sorted(stage.shapes, key=lambda c: c.frames)}

    def _shape_at(self, stage: Stage) -> ClipShape:
        if not stage.frame_choices:
            return stage.shape
        rng = np.random.default_rng([self.settings.seed, self.step, 31])
        if stage.frame_weights:
            return stage.frame_choices[int(rng.choice(len(stage.frame_choices), p=stage.frame_weights))]
        return stage.frame_choices[int(rng.choice(len(stage.frame_choices)))]

    def _epoch(self, step_in_stage: int, frames: int) -> float:
        per_epoch = max(batches_per_epoch(self.feed.loaders[frames]), 1)
        return step_in_stage * self.settings.accum_steps / per_epoch


def _numpy_state() -> list[Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, torch.from_numpy(np.asarray(keys).copy()), pos, has_gauss, cached]
