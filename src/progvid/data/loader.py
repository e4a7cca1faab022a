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

from ..errors import DataError, ProgvidError
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

    def order(self, epoch: int | None = None) -> np.ndarray:
        """This rank's item indices for `epoch` (default: the current one), before `start`."""
        if self.shuffle:
            e = self.epoch if epoch is None else epoch
            perm = np.random.default_rng([self.seed, e, 7919]).permutation(self.size)
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
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop,
                      **_loader_options(workers, seed, device, timeout))


def _loader_options(workers: int, seed: int, device: str | torch.device, timeout: float) -> dict:
    return {
        "num_workers": workers,
        "collate_fn": collate,
        "pin_memory": torch.device(device).type == "cuda",
        "persistent_workers": workers > 0,
        "worker_init_fn": _worker_init if workers > 0 else None,
        "generator": torch.Generator().manual_seed(seed),
        "prefetch_factor": 4 if workers > 0 else None,
        "timeout": timeout if workers > 0 else 0.0,
    }


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
    """Seconds the loader takes per batch in steady state: its workers warm and the batches
    they prefetched used up first, then the mean over a window of at least `batches` batches
    and three hand-overs (a `GroupedLoader` hands over `group` batches at once: all but the
    first of a group come at no wait, so a median per batch would read 0); for planning, not
    for training."""
    import time

    sampler = loader.sampler
    per_rank = sampler.per_rank if hasattr(sampler, "per_rank") else len(sampler)
    if per_rank < loader.batch_size:  # training loaders drop an epoch's short end
        raise ProgvidError(f"the dataset is smaller than one batch ({per_rank} clips per process, "
                           f"batch {loader.batch_size})")
    group = getattr(loader, "group", 1)
    skip = 2 + loader.num_workers * (loader.prefetch_factor or 0)
    window = max(batches, 3 * group)
    loader.sampler.set_epoch(0)
    it = iter(loader)
    start = 0.0
    for i in range(window + skip):
        if i == skip:
            start = time.perf_counter()
        try:
            next(it)
        except StopIteration:
            loader.sampler.set_epoch(i + 1)
            it = iter(loader)
            next(it)
    return (time.perf_counter() - start) / window


class GroupedLoader:
    """A training loader whose workers hand over several batches at a time, served one by one.

    Each hand-over from a worker costs about a millisecond whatever the batch holds (queues,
    pickling, one shared-memory segment per tensor), which is a large share of a small step
    (TPL's 2-frame clips at CPU size). Each pass's first hand-over is one batch (no wait for a
    group at a stage start or a resume), then `group` batches at a time; they are split back in
    order, so the batches, their items and their order are exactly those of a plain loader
    with `batch_size` (tested), and resuming at any batch works the same way
    (`sampler.set_epoch(epoch, start=position * batch_size)`). The epoch's short end is dropped
    as a training loader does. An iterator runs on into the following epochs (`continuous`):
    the workers start on the next epoch while the last batches of this one are used, so an
    epoch boundary costs no wait; a plain pass is `itertools.islice(loader, len(loader))`.
    `iterate(batches)` ends the iterator after that many batches, so that its workers decode
    nothing past what a training stage reads."""

    drop_last = True
    continuous = True

    def __init__(self, dataset: VideoDataset, *, batch_size: int, group: int, workers: int,
                 seed: int, device: str | torch.device, rank: int, world: int) -> None:
        self.batch_size, self.group = batch_size, group
        self.sampler = EpochSampler(len(dataset), shuffle=True, seed=seed, rank=rank, world=world,
                                    drop_last=True)
        options = _loader_options(workers, seed, device, 0.0)
        options["collate_fn"] = _collate_group
        self._hand_overs = _GroupSampler(self.sampler, batch_size, group)
        self.loader = DataLoader(dataset, batch_sampler=self._hand_overs, **options)
        self.num_workers = workers
        self.prefetch_factor = (self.loader.prefetch_factor or 0) * group

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.iterate()

    def iterate(self, batches: int | None = None) -> Iterator[dict[str, Any]]:
        """The batches from the sampler's (epoch, start) on: `batches` of them, or without end.
        A bound keeps the workers from decoding past a stage's last step: unbounded, they run
        up to prefetch x group batches ahead, which at a stage's end nobody reads and which
        share the cores with the next stage's workers as they start."""
        self._hand_overs.limit = batches
        # the workers start here, not at the first `next`: the training feed makes the next
        # stage's iterator about a second before the stage begins so that its first batches
        # are decoded by then (a generator method would start nothing until it is read)
        return _split_all(iter(self.loader), self.batch_size)


def _split_all(hand_overs: Iterator[dict[str, Any]], items: int) -> Iterator[dict[str, Any]]:
    for big in hand_overs:
        yield from split_batch(big, items)


def _collate_group(items: list[dict[str, Any]]) -> dict[str, Any]:
    """`collate`, with labels and indices as numpy arrays inside a worker: they travel inline
    with the batch, where each tensor would cost its own shared-memory hand-shake (~0.4 ms)."""
    batch = collate(items)
    if torch.utils.data.get_worker_info() is not None:
        batch["label"], batch["index"] = batch["label"].numpy(), batch["index"].numpy()
    return batch


class _GroupSampler(Sampler):
    """The item lists of a `GroupedLoader`'s hand-overs: one batch, then `group` batches at a
    time, whole batches only; from the sampler's (epoch, start) on through the following
    epochs, with no end, or `limit` batches in all (each item carries its epoch, so its clip is
    the one a fresh pass over that epoch would give)."""

    def __init__(self, sampler: EpochSampler, batch_size: int, group: int) -> None:
        self.sampler, self.batch_size, self.group = sampler, batch_size, group
        self.limit: int | None = None  # batches in all; read when an iterator starts

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, start = self.sampler.epoch, self.sampler.start
        whole = self.sampler.per_rank // self.batch_size * self.batch_size
        if whole == 0:  # not one whole batch in an epoch: nothing to hand over, ever
            return
        left = None if self.limit is None else self.limit * self.batch_size  # items to hand over
        items: list[tuple[int, int]] = []
        size = self.batch_size if left is None else min(self.batch_size, left)
        while size > 0:
            order = self.sampler.order(epoch)
            for i in order[start:whole]:
                items.append((epoch, int(i)))
                if len(items) == size:
                    yield items
                    if left is not None:
                        left -= size
                    items = []
                    size = self.batch_size * self.group if left is None else min(self.batch_size * self.group, left)
                    if size == 0:
                        return
            epoch, start = epoch + 1, 0

    def __len__(self) -> int:
        raise TypeError("a GroupedLoader's hand-overs run on across epochs")


def split_batch(batch: dict[str, Any], items: int) -> Iterator[dict[str, Any]]:
    """The `collate` batches of `items` items each that make up `batch` (whole batches), in
    order; its skipped files go with the first. Labels and indices come back as tensors."""
    batch = {**batch, "label": torch.as_tensor(batch["label"]), "index": torch.as_tensor(batch["index"])}
    index = batch["index"]
    if batch["video"] is None or len(index) <= items:
        yield batch
        return
    rows = batch["video"].shape[0] // len(index)  # clips per item: views x clips per decode
    for k, start in enumerate(range(0, len(index), items)):
        a, b = start * rows, (start + items) * rows
        yield {"video": batch["video"][a:b], "label": batch["label"][a:b],
               "index": index[start:start + items], "views": batch["views"],
               "skipped": batch["skipped"] if k == 0 else []}


def transfer_batches(setting: int | str, *, workers: int, batch_bytes: int) -> int:
    """Batches per worker hand-over: `setting`, or with `auto` as many as fit in about 4 MiB,
    at most 8 (one without worker processes, where nothing is handed over)."""
    if setting != "auto":
        return int(setting)
    if workers == 0:
        return 1
    return max(1, min(8, (4 << 20) // max(batch_bytes, 1)))


def train_loader(d: Any, samples: list, *, frames: int, batch_size: int, seed: int,
                 rank: int, world: int, device: str | torch.device = "cpu",
                 rate: int | None = None, clips_per_decode: int = 1,
                 group: int | None = None) -> DataLoader | GroupedLoader:
    """The training loader a `DataConfig` describes, for batches of `batch_size` clips of
    `frames` frames, `clips_per_decode` of them cut from each decoded video (which must
    divide the batch); its workers hand over `group` batches at once (default: the config's
    `transfer_batches`)."""
    if batch_size % clips_per_decode:
        raise ValueError(f"clips_per_decode {clips_per_decode} does not divide the batch {batch_size}")
    dataset = train_dataset(d, samples, frames=frames, seed=seed, rate=rate,
                            clips_per_decode=clips_per_decode)
    if group is None:
        clip_bytes = 3 * frames * d.input_size ** 2 * d.num_sample * (4 if d.worker_normalizes() else 1)
        group = transfer_batches(d.transfer_batches, workers=d.workers,
                                 batch_bytes=batch_size * clip_bytes)
    items = batch_size // clips_per_decode
    if group == 1:
        return build_loader(dataset, batch_size=items, train=True, workers=d.workers, seed=seed,
                            device=device, rank=rank, world=world)
    return GroupedLoader(dataset, batch_size=items, group=group, workers=d.workers, seed=seed,
                         device=device, rank=rank, world=world)
