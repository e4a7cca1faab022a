"""DataLoader factory: one call per (split, frames, batch), so progressive stages rebuild it.

The sampler is a pure function of (seed, epoch, rank, world size, start position): a resumed run
asks for the same epoch from the batch where it stopped and gets exactly the same items, without
decoding the ones it skips.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from ..errors import DataError
from .clips import train_dataset
from .datasets import VideoDataset


def dist_info() -> tuple[int, int]:
    """(rank, world size), (0, 1) when torch.distributed is not initialised."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class EpochSampler(Sampler):
    """Yields `(epoch, index)` pairs: a seeded permutation per epoch, sharded over ranks.

    Every rank gets `per_rank` items (the permutation is padded by wrapping, like
    DistributedSampler, or trimmed with `drop_last`). `start` skips that many of this rank's
    items, which is how a run resumes in the middle of an epoch.
    """

    def __init__(
        self,
        size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        rank: int | None = None,
        world: int | None = None,
        drop_last: bool = False,
    ) -> None:
        if size <= 0:
            raise ValueError("EpochSampler needs a non-empty dataset")
        r, w = dist_info()
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank = r if rank is None else rank
        self.world = w if world is None else world
        self.drop_last = drop_last
        self.epoch = 0
        self.start = 0

    @property
    def per_rank(self) -> int:
        if self.drop_last:
            return self.size // self.world
        return math.ceil(self.size / self.world)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def order(self) -> np.ndarray:
        """This rank's item indices for the current epoch (before `start`)."""
        if self.shuffle:
            perm = np.random.default_rng([self.seed, self.epoch, 7919]).permutation(self.size)
        else:
            perm = np.arange(self.size)
        total = self.per_rank * self.world
        if total > self.size:
            perm = np.concatenate([perm, perm[: total - self.size]])  # pad by wrapping
        return perm[:total][self.rank :: self.world]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for i in self.order()[self.start :]:
            yield (self.epoch, int(i))

    def __len__(self) -> int:
        return max(self.per_rank - self.start, 0)


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack views into one batch: (B * V, C, T, H, W); labels repeated per view. An item whose
    `video` is None (a bad video under the test-time `on_error="drop"`) adds only its `skipped`
    entry; a batch of nothing else has `video` None and no indices."""
    skipped = [s for it in items for s in it["skipped"]]
    items = [it for it in items if it["video"] is not None]
    if not items:
        none = torch.empty(0, dtype=torch.long)
        return {"video": None, "label": none, "index": none, "views": 0, "skipped": skipped}
    views = [it["video"] for it in items]
    v = views[0].shape[0]
    out = None
    if torch.utils.data.get_worker_info() is not None:
        # in a worker, build the batch in shared memory: pickling would copy it there again
        first = views[0]
        numel = sum(x.numel() for x in views)
        storage = first.untyped_storage()._new_shared(numel * first.element_size())
        out = first.new(storage).resize_(sum(x.shape[0] for x in views), *first.shape[1:])
    return {
        "video": torch.cat(views, dim=0, out=out),
        "label": torch.tensor([it["label"] for it in items]).repeat_interleave(v),
        "index": torch.tensor([it["index"] for it in items]),
        "views": v,
        "skipped": skipped,
    }


def _worker_init(worker_id: int) -> None:
    # Per-item generators carry the augmentation randomness; this only pins whatever else a
    # library might draw from the global generators, so runs stay reproducible.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_loader(
    dataset: VideoDataset,
    *,
    batch_size: int,
    train: bool,
    workers: int = 2,
    seed: int = 0,
    device: str | torch.device = "cpu",
    drop_last: bool | None = None,
    rank: int | None = None,
    world: int | None = None,
    timeout: float = 0.0,
) -> DataLoader:
    """A DataLoader over `dataset` with an `EpochSampler` (call `loader.sampler.set_epoch`)."""
    if batch_size <= 0:
        raise ValueError("batch_size must be positive")
    drop = train if drop_last is None else drop_last
    sampler = EpochSampler(len(dataset), shuffle=train, seed=seed, rank=rank, world=world, drop_last=drop)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=torch.device(device).type == "cuda",
        drop_last=drop,
        persistent_workers=workers > 0,
        worker_init_fn=_worker_init if workers > 0 else None,
        generator=generator,
        prefetch_factor=4 if workers > 0 else None,
        timeout=timeout if workers > 0 else 0.0,
    )


class SkipLog:
    """The bad videos that `on_error: skip` replaced: one line per distinct file in
    `skipped.jsonl` (kept across resumes), and a failure once they exceed `max_fraction` of the
    dataset.

    Under DDP pass `gather` (a function that all-gathers a picklable value, returning every
    rank's): ranks then note their bad files locally and share them at each `flush` (the
    engine calls it at every metrics record), so the fraction counts every rank's files, the
    file gets each one once, and every rank fails at the same step. `write`: this process
    writes the file (the main one)."""

    def __init__(self, dataset_size: int, max_fraction: float, path: str | Path | None = None,
                 *, gather: Callable[[Any], list[Any]] | None = None, write: bool = True) -> None:
        self.dataset_size = dataset_size
        self.max_fraction = max_fraction
        self.path = Path(path) if path is not None else None
        self.gather = gather
        self.write = write
        self.bad: dict[str, str] = {}
        self.count = 0
        self._new: dict[str, str] = {}
        if self.path is not None and self.path.is_file():  # a resumed run: known already
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                    self.bad[str(rec["path"])] = str(rec["reason"])
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut by a crash

    def update(self, skipped: list[tuple[str, str]]) -> None:
        for path, reason in skipped:
            self.count += 1
            if path not in self.bad:
                self._new.setdefault(path, reason)
        if self.gather is None:
            self.flush()

    def flush(self) -> None:
        """Record the new bad files (a collective under DDP: every rank calls it)."""
        shares = self.gather(list(self._new.items())) if self.gather is not None else [list(self._new.items())]
        self._new = {}
        for share in shares:
            for path, reason in share:
                if path in self.bad:
                    continue
                self.bad[path] = reason
                if self.path is not None and self.write:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    with self.path.open("a") as fh:
                        fh.write(json.dumps({"path": path, "reason": reason}) + "\n")
        if len(self.bad) > self.max_fraction * self.dataset_size:
            where = f"; see {self.path}" if self.path is not None else ""
            err = DataError(
                next(iter(self.bad)),
                f"{len(self.bad)} of {self.dataset_size} videos unreadable, more than "
                f"data.max_bad_fraction={self.max_fraction}{where}",
            )
            err.collective = self.gather is not None  # every rank raises it at this flush
            raise err


class ShardSampler(Sampler):
    """Evaluation order: rank r gets items r, r + world, ... with no padding, so gathering the
    shards covers every video exactly once. Yields `(0, index)` like `EpochSampler`."""

    def __init__(self, size: int, rank: int | None = None, world: int | None = None) -> None:
        r, w = dist_info()
        self.size = size
        self.rank = r if rank is None else rank
        self.world = w if world is None else world

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for i in range(self.rank, self.size, self.world):
            yield (0, i)

    def __len__(self) -> int:
        return len(range(self.rank, self.size, self.world))


def seconds_per_batch(loader: DataLoader, batches: int = 6) -> float:
    """Median seconds the loader takes to hand over a batch in steady state: its workers warm
    and the batches they prefetched used up first; for planning, not for training."""
    import time

    skip = 2 + loader.num_workers * (loader.prefetch_factor or 0)
    loader.sampler.set_epoch(0)
    it = iter(loader)
    times = []
    for i in range(batches + skip):
        t = time.perf_counter()
        try:
            next(it)
        except StopIteration:
            loader.sampler.set_epoch(i + 1)
            it = iter(loader)
            next(it)
        if i >= skip:
            times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def train_loader(d: Any, samples: list, *, frames: int, batch_size: int, seed: int,
                 rank: int, world: int, device: str | torch.device = "cpu",
                 rate: int | None = None, clips_per_decode: int = 1) -> DataLoader:
    """The training loader a `DataConfig` describes, for batches of `batch_size` clips of
    `frames` frames, `clips_per_decode` of them cut from each decoded video (which must
    divide the batch)."""
    if batch_size % clips_per_decode:
        raise ValueError(f"clips_per_decode {clips_per_decode} does not divide the batch {batch_size}")
    dataset = train_dataset(d, samples, frames=frames, seed=seed, rate=rate,
                            clips_per_decode=clips_per_decode)
    return build_loader(dataset, batch_size=batch_size // clips_per_decode, train=True,
                        workers=d.workers, seed=seed, device=device, rank=rank, world=world)
