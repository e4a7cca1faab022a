"""Which batch each micro-step of the training loop reads, and getting it there early.

A micro-step's batch is a pure function of its position in its stage (epoch and index, from the
stage's loader and sampler), never of what was read before, so a resumed run reads exactly the
batches of one that never stopped. `BatchFeed` keeps that while hiding the loader's latency:
- one running iterator per stage, continued across steps (and across epochs for a continuous
  `GroupedLoader`), restarted from the derived position whenever it is not already there;
- with `prefetch`, the next micro-step's batch is taken while the device works on the current
  one, and on CUDA copied to the device on a side stream (`fetch_ahead`);
- the next stage's loaders and first iterator start about `WARM_SECONDS` before it begins, so
  its worker processes start while the current stage finishes (`warm_next`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..errors import ProgvidError
from .schedule import Schedule, Stage

WARM_SECONDS = 1.0  # start the next stage's loader workers this long before it begins


class BatchFeed:
    """The batches of the training loop's micro-steps (see the module's text). `build(index,
    stage)` makes a stage's loaders, one per clip length."""

    def __init__(self, build: Callable[[int, Stage], dict[int, DataLoader]], device: torch.device,
                 prefetch: bool, accum_steps: int = 1) -> None:
        self.build = build
        self.device = device
        self.prefetch = prefetch
        self.accum_steps = accum_steps  # micro-steps per step: a stage reads steps x this batches
        self.loaders: dict[int, DataLoader] = {}
        self._it: Iterator | None = None  # the running iterator of this stage
        self._it_key: tuple[int, int] | None = None  # which loader/epoch it is on
        self._it_pos = -1  # the batch index it yields next
        self._warm: _Warm | None = None  # the next stage's loaders, started before it begins
        self._ahead: _Ahead | None = None  # the next micro-batch, fetched while a step ran
        self._step_seconds = 0.0  # a running mean of the step time (when to warm)
        self._copy_stream = torch.cuda.Stream(device) if device.type == "cuda" and prefetch else None

    def close(self) -> None:
        """Drop the loaders and iterators (their worker processes end); the next `start_stage`
        makes new ones (the same batches)."""
        self.loaders, self._it, self._warm, self._ahead = {}, None, None, None
        self._it_key, self._it_pos = None, -1

    def start_stage(self, index: int, stage: Stage, step_in_stage: int) -> None:
        """Take stage `index`'s loaders: those warmed for it when it starts from its beginning,
        else new ones."""
        warm, self._warm = self._warm, None
        if warm is not None and warm.stage == index and step_in_stage == 0:
            self.loaders, self._it = warm.loaders, warm.it  # positioned at micro-step 0
            self._it_key, self._it_pos = _iterator_place(self.loaders[stage.shape.frames], 0, 0, 0)
        else:
            self.loaders, self._it = self.build(index, stage), None
        self._ahead = None

    def batch(self, frames: int, micro: int, stage: Stage) -> Any:
        """The batch of micro-step `micro` of the stage at `frames` per clip: position derived,
        never remembered."""
        loader = self.loaders[frames]
        per_epoch = batches_per_epoch(loader)
        if per_epoch <= 0:
            raise ProgvidError(f"stage {stage.name or '?'}: the dataset is smaller than one batch "
                               f"({stage.batch_size} clips per process)")
        epoch, pos = divmod(micro, per_epoch)
        key, index = _iterator_place(loader, micro, epoch, pos)
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead.key == key and ahead.pos == index:
            return ahead.ready(self.device)
        if stage.frame_choices:
            # several loaders share the stage: each micro-step draws one batch from its own
            # position, so none of them can keep a running iterator
            loader.sampler.set_epoch(epoch, start=pos * loader.batch_size)
            self._it = None
            return next(iter(loader))
        if self._it is None or self._it_key != key or self._it_pos != index:
            loader.sampler.set_epoch(epoch, start=pos * loader.batch_size)
            self._it = _iterate(loader, stage.steps * self.accum_steps - micro)
            self._it_key = key
        batch = next(self._it)
        self._it_pos = index + 1
        return batch

    def fetch_ahead(self, frames: int, micro: int, stage: Stage) -> None:
        """Take micro-step `micro`'s batch from the running iterator now, and on CUDA start its
        copy to the device on a side stream, while the device still works on the current step.
        Only from the iterator in use (a plain loader's ends with its epoch); the batch is the
        one `batch` would return."""
        if self._it is None or stage.frame_choices:
            return
        loader = self.loaders[frames]
        key, index = _iterator_place(loader, micro, *divmod(micro, batches_per_epoch(loader)))
        if self._it_key != key or self._it_pos != index:
            return  # a new epoch of a plain loader: its iterator is made when it is needed
        batch = next(self._it)
        self._it_pos = index + 1
        if self._copy_stream is None:
            self._ahead = _Ahead(key, index, batch, None)
            return
        # no wait on the compute stream first: the source is host memory (pinned by the
        # loader) that no kernel writes, and the copy lands in memory allocated on the side
        # stream, which `_Ahead.ready` hands to the compute stream with `record_stream`; so the
        # copy overlaps the step the compute stream is still running, instead of following it
        with torch.cuda.stream(self._copy_stream):
            moved = _tree_map(batch, lambda t: t.to(self.device, non_blocking=True))
        self._ahead = _Ahead(key, index, moved, self._copy_stream)

    def warm_next(self, schedule: Schedule, stage_index: int, step_in_stage: int, step: int,
                  end: int, seconds: float) -> None:
        """After a step of stage `stage_index` (its `step_in_stage`; `step` steps done in all,
        this one included; it took `seconds`), when the stage has about
        `WARM_SECONDS` left, build the next stage's loaders and start its first iterator, so
        that its workers start and decode its first batches while this stage finishes (a stage
        change otherwise waits for new worker processes). The batches are those the stage would
        read anyway: same loader, same start (epoch 0, batch 0)."""
        self._step_seconds = seconds if not self._step_seconds else 0.9 * self._step_seconds + 0.1 * seconds
        nxt = stage_index + 1
        left = schedule.stages[stage_index].steps - step_in_stage - 1  # steps after this one
        if (not self.prefetch or self._warm is not None or nxt >= len(schedule.stages)
                or step + left >= end or left * self._step_seconds > WARM_SECONDS):
            return
        nstage = schedule.stages[nxt]
        if nstage.frame_choices:
            return  # random lengths read one batch per fresh iterator: nothing to start
        loaders = self.build(nxt, nstage)
        loader = loaders[nstage.shape.frames]
        if batches_per_epoch(loader) <= 0:
            return  # the stage's first batch reports it (the dataset is smaller than one batch)
        loader.sampler.set_epoch(0, start=0)
        self._warm = _Warm(nxt, loaders, _iterate(loader, nstage.steps * self.accum_steps))


def _iterate(loader: Any, batches: int) -> Iterator:
    """An iterator over `loader` from its sampler's place: a continuous loader's ends after the
    `batches` its stage still reads (its workers then stop there); a plain loader's with its
    epoch, as always."""
    return loader.iterate(batches) if getattr(loader, "continuous", False) else iter(loader)


def batches_per_epoch(loader: DataLoader) -> int:
    sampler = loader.sampler
    n = sampler.per_rank if hasattr(sampler, "per_rank") else len(sampler)
    return n // loader.batch_size if loader.drop_last else math.ceil(n / loader.batch_size)


def _iterator_place(loader: DataLoader, micro: int, epoch: int, pos: int) -> tuple[tuple[int, int], int]:
    """(which iterator, its batch index) for micro-step `micro`: a plain loader's iterator
    covers one epoch; a continuous one's (`GroupedLoader`) runs on across epochs."""
    if getattr(loader, "continuous", False):
        return (id(loader), -1), micro
    return (id(loader), epoch), pos


@dataclass
class _Warm:
    """The next stage's loaders with the iterator of its first batches already running."""

    stage: int
    loaders: dict[int, Any]
    it: Iterator


@dataclass
class _Ahead:
    """A batch fetched one micro-step early (on CUDA: being copied on `stream`)."""

    key: tuple[int, int]
    pos: int
    batch: Any
    stream: Any

    def ready(self, device: torch.device) -> Any:
        if self.stream is not None:  # the compute stream waits for the copy, and owns its memory
            current = torch.cuda.current_stream(device)
            current.wait_stream(self.stream)
            _tree_map(self.batch, lambda t: t.record_stream(current) if t.device.type == "cuda" else None)
        return self.batch


def _tree_map(batch: Any, fn: Any) -> Any:
    """`batch` with `fn` applied to every tensor in its dicts, lists and tuples."""
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, dict):
        return {k: _tree_map(v, fn) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_tree_map(v, fn) for v in batch)
    return batch


__all__ = ["WARM_SECONDS", "BatchFeed", "batches_per_epoch"]
