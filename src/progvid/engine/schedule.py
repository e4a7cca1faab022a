"""Training schedules as pure functions of the global optimizer step, and their arithmetic.

A `Schedule` is a sequence of `Stage`s (clip length, per-process batch, number of steps, a
learning-rate rule). Which stage, which learning rate and which frame count apply at step `s`
depend on `s` alone, so resuming at any step, inside any stage, is exact. The engine consumes a
schedule; tasks and plans (progressive/plan.py) build them with the functions below, the one
home of the budget arithmetic: total batch, epochs -> steps, warmup steps, lr scaling.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Protocol

LR_REFERENCE_BATCH = 256  # VideoMAE's rule: lr = base_lr * total_batch / 256


def total_batch(batch_size: int, world: int = 1, accum_steps: int = 1) -> int:
    """Clips per optimizer step: per-process batch x processes x accumulation steps."""
    return batch_size * world * accum_steps


def scaled_lr(base_lr: float, batch: int) -> float:
    """The learning rate for a total batch: base_lr * batch / 256."""
    return base_lr * batch / LR_REFERENCE_BATCH


def steps_for(epochs: float, dataset_size: int, batch: int) -> int:
    """Optimizer steps for `epochs` passes over `dataset_size` clips at total batch `batch`
    (at least 1; a product that is an integer up to float round-off is not rounded up)."""
    return max(1, math.ceil(epochs * dataset_size / batch - 1e-9))


def warmup_steps(warmup_epochs: float, dataset_size: int, batch: int, steps: int) -> int:
    """Warmup steps for `warmup_epochs`, leaving at least one step after warmup."""
    if steps <= 1:
        return 0
    return max(0, min(int(round(warmup_epochs * dataset_size / batch)), steps - 1))


class LRRule(Protocol):
    def __call__(self, step: int) -> float: ...


@dataclass(frozen=True)
class CosineLR:
    """Linear warmup from `start` to `base` over `warmup` steps, then cosine to `final`."""

    base: float
    final: float
    warmup: int
    total: int
    start: float = 0.0

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.start + (self.base - self.start) * step / max(self.warmup, 1)
        span = max(self.total - self.warmup, 1)
        progress = min(max(step - self.warmup, 0) / span, 1.0)
        return self.final + 0.5 * (self.base - self.final) * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class StepLR:
    """Linear warmup, then `base` multiplied by `gamma` at each milestone (fractions of total)."""

    base: float
    warmup: int
    total: int
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.base * step / max(self.warmup, 1)
        passed = sum(step >= m * self.total for m in self.milestones)
        return self.base * self.gamma**passed


@dataclass(frozen=True)
class ConstantLR:
    value: float

    def __call__(self, step: int) -> float:
        return self.value


@dataclass(frozen=True)
class ClipShape:
    """The clips of a stage: frame count, frame stride (None: the data config's) and training
    FLOPs (multiply-accumulates) per clip, for the metrics."""

    frames: int
    sampling_rate: int | None = None
    flops_per_clip: float = 0.0
    clips_per_decode: int = 1  # training clips cut from one decoded video


@dataclass(frozen=True)
class Stage:
    """One stretch of training with a fixed clip length and batch size.

    `lr` is evaluated at `step_in_stage + lr_offset`: a stage with its own schedule uses offset
    0; stages sharing one schedule over the whole run (TPL mechanism 2) pass their start step.
    `frame_choices` (optional) draws the clip shape per step among several (multigrid); `phase`
    is the task's own label for the stage (HCML: 0 trains the flow network, l level l).
    """

    steps: int
    num_frames: int
    batch_size: int
    lr: LRRule
    name: str = ""
    lr_offset: int = 0
    flops_per_clip: float = 0.0  # training FLOPs (multiply-accumulates) per clip, for metrics
    sampling_rate: int | None = None  # frame stride of this stage's clips (None: data config)
    clips_per_decode: int = 1  # training clips cut from one decoded video
    frame_choices: tuple[ClipShape, ...] = ()
    frame_weights: tuple[float, ...] = ()  # the choices' probabilities (empty: equally likely)
    reset_optimizer: bool = False
    phase: int = 0

    @property
    def shape(self) -> ClipShape:
        """The stage's clip shape (without frame choices)."""
        return ClipShape(self.num_frames, self.sampling_rate, self.flops_per_clip,
                         self.clips_per_decode)

    @property
    def shapes(self) -> tuple[ClipShape, ...]:
        """Every clip shape the stage trains on."""
        return self.frame_choices or (self.shape,)


@dataclass(frozen=True)
class Position:
    stage: int
    step_in_stage: int


@dataclass(frozen=True)
class Schedule:
    stages: tuple[Stage, ...]

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("a schedule needs at least one stage")
        for s in self.stages:
            if s.steps <= 0 or s.batch_size <= 0 or s.num_frames <= 0:
                raise ValueError(f"stage {s.name or '?'}: steps, batch size and frames must be positive")

    @property
    def starts(self) -> list[int]:
        out, acc = [], 0
        for s in self.stages:
            out.append(acc)
            acc += s.steps
        return out

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)

    def locate(self, step: int) -> Position:
        if not 0 <= step < self.total_steps:
            raise IndexError(f"step {step} outside the schedule (0..{self.total_steps - 1})")
        i = bisect.bisect_right(self.starts, step) - 1
        return Position(i, step - self.starts[i])

    def work(self, step: int) -> float:
        """Work done by the first `step` steps (0 .. total_steps), in each stage's training
        FLOPs per step (batch x FLOPs per clip; frames per clip where FLOPs are not known):
        what a whole-plan ETA extrapolates, since a 2-frame step costs far less than a 16-frame
        one."""
        done, left = 0.0, max(0, min(step, self.total_steps))
        for s in self.stages:
            n = min(left, s.steps)
            done += n * s.batch_size * (s.flops_per_clip or float(s.num_frames))
            left -= n
            if not left:
                break
        return done

    def lr(self, step: int) -> float:
        pos = self.locate(step)
        stage = self.stages[pos.stage]
        return float(stage.lr(pos.step_in_stage + stage.lr_offset))


def cosine_stage(*, epochs: float, dataset_size: int, batch: int, base_lr: float, min_lr: float,
                 warmup_epochs: float, num_frames: int, batch_size: int, **stage: object) -> Stage:
    """A stage of `epochs` over the data: warmup then cosine, lrs scaled by the total batch."""
    steps = steps_for(epochs, dataset_size, batch)
    warmup = warmup_steps(warmup_epochs, dataset_size, batch, steps)
    lr = CosineLR(scaled_lr(base_lr, batch), scaled_lr(min_lr, batch), warmup, steps)
    return Stage(steps=steps, num_frames=num_frames, batch_size=batch_size, lr=lr, **stage)  # type: ignore[arg-type]
