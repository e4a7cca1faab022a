"""Training schedules as pure functions of the global optimizer step.

A `Schedule` is a sequence of `Stage`s (clip length, per-process batch, number of steps, a
learning-rate rule). Which stage, which learning rate and which frame count apply at step `s`
depend on `s` alone, so resuming at any step, inside any stage, is exact. The engine consumes a
schedule; plans (progressive/plan.py) build them.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any, Protocol


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
class Stage:
    """One stretch of training with a fixed clip length and batch size.

    `lr` is evaluated at `step_in_stage + lr_offset`: a stage with its own schedule uses offset
    0; stages sharing one schedule over the whole run (TPL mechanism 2) pass their start step.
    `frame_choices` (optional) draws the clip length per step among several values (multigrid).
    """

    steps: int
    num_frames: int
    batch_size: int
    lr: LRRule
    name: str = ""
    lr_offset: int = 0
    flops_per_clip: float = 0.0  # training FLOPs (multiply-accumulates) per clip, for metrics
    frame_choices: tuple[int, ...] = ()
    reset_optimizer: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


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

    def lr(self, step: int) -> float:
        pos = self.locate(step)
        stage = self.stages[pos.stage]
        return float(stage.lr(pos.step_in_stage + stage.lr_offset))
