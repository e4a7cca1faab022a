"""torchrun / DDP set-up and rank helpers. Works the same with one process and with many.

`torchrun --nproc_per_node N -m progvid pretrain ...` sets RANK / WORLD_SIZE / LOCAL_RANK;
`progvid pretrain --nproc N` re-launches itself through torch.distributed's own launcher.
Backend: nccl on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ..errors import ProgvidError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def resolve_device(name: str = "auto", local_rank: int = 0,
                   field: str = "train.device") -> torch.device:
    """`auto` -> cuda when available, else cpu. Never hard-codes a device elsewhere. `field`
    names the setting in errors (`--device` from the command line)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ProgvidError(f"{field}: cuda requested but no CUDA device is available")
        count = torch.cuda.device_count()
        if local_rank >= count:  # nccl refuses two ranks on one GPU, with a far less clear error
            raise ProgvidError(
                f"cuda: local rank {local_rank} has no GPU of its own (this node has {count} "
                f"CUDA device{'s' if count != 1 else ''}): start at most {count} process"
                f"{'es' if count != 1 else ''} per node (torchrun --nproc_per_node {count}), "
                "or run on cpu")
        return torch.device("cuda", local_rank)
    if name != "cpu":
        raise ProgvidError(f"{field}: unknown device {name!r} (auto, cpu or cuda)")
    return torch.device("cpu")


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by torchrun; a no-op for a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    _die_with_parent()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":  # this rank's own GPU, before nccl binds to the current one
            torch.cuda.set_device(resolve_device("cuda", local))
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    return DistInfo(rank, world, local)


def _die_with_parent() -> None:
    """A rank gets SIGTERM when its launcher (torchrun, or `--nproc`) dies, even by SIGKILL,
    so it saves and stops instead of training on as an orphan (Linux; elsewhere a no-op)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    # the launcher died while we asked (we were re-parented). Not "parent is 1": in a container
    # the launcher itself is often process 1.
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


def all_gather_objects(value: object) -> list[object]:
    """Every rank's `value`, in rank order ([value] for one process)."""
    if dist.is_available() and dist.is_initialized():
        out: list[object] = [None] * dist.get_world_size()
        dist.all_gather_object(out, value)
        return out
    return [value]


def from_main(value: object) -> object:
    """Rank 0's `value` on every rank (identity for one process)."""
    if dist.is_available() and dist.is_initialized():
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return value


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean over ranks (identity for one process)."""
    if dist.is_available() and dist.is_initialized():
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= dist.get_world_size()
    return values


def all_max(values: torch.Tensor) -> torch.Tensor:
    """Elementwise maximum over ranks, on the tensor's device (identity for one process; no
    host synchronisation)."""
    if dist.is_available() and dist.is_initialized():
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return values


def any_rank(flag: bool, device: torch.device) -> bool:
    """True when `flag` is true on any rank (so every rank takes the same branch)."""
    if dist.is_available() and dist.is_initialized():
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)
    return flag


def launch(nproc: int, argv: list[str]) -> int:
    """Re-run `python -m progvid ARGV` in `nproc` processes with torch.distributed's launcher.

    The ranks say what went wrong (one line from rank 0 for a collective error); the launcher's
    own log lines are kept quiet, except for a rank that died without a word (a signal)."""
    import logging
    import signal as _signal

    from torch.distributed.run import main as torchrun_main

    if nproc < 1:
        raise ProgvidError(f"--nproc: must be at least 1, got {nproc}")
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # torchrun's default, without its warning
    args = ["--standalone", f"--nproc_per_node={nproc}", "-m", "progvid", *argv]
    quiet = [logging.getLogger(n) for n in ("torch.distributed.elastic", "torch.distributed.run",
                                            "torch.distributed.launcher")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.CRITICAL)
    try:
        torchrun_main(args)
    except SystemExit as exc:  # torchrun exits on failure of any worker
        return int(exc.code or 0)
    except Exception as exc:  # noqa: BLE001 - ChildFailedError carries the workers' exit codes
        failures = getattr(exc, "failures", {})
        first = exc.get_first_failure() if hasattr(exc, "get_first_failure") and failures else None
        raw = getattr(first[1], "exitcode", 1) if first is not None else 1
        # A rank that stopped on bad input (2) or a signal is the root cause even when a peer,
        # whose collective broke as it left, was reported first (that one exits 1, silently).
        codes = [getattr(f, "exitcode", 1) for f in failures.values()]
        raw = next((c for c in codes if c == 2), raw)
        code = 128 - raw if raw < 0 else raw  # a rank killed by signal n reports -n
        if raw < 0 and code not in (130, 143):
            rank = getattr(first[1], "local_rank", first[0]) if first is not None else "?"
            try:
                name = _signal.Signals(-raw).name
            except ValueError:
                name = f"signal {-raw}"
            print(f"progvid: runtime failure: rank {rank} died of {name}", file=sys.stderr)
        # the root cause decides: the launcher stops the other ranks itself after a failure
        return code if code in (2, 130, 143) else 1
    finally:
        for lg, level in zip(quiet, levels, strict=True):
            lg.setLevel(level)
    return 0
