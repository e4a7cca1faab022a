"""The search's memory probe: bytes per clip of a training step, hence the largest batch
per clip length (`bz_max`)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

import torch

from ..config import PretrainConfig, validate
from ..engine.distributed import resolve_device
from .pretrain import build_model

CPU_BATCH_CAP = 64
CUDA_SAFETY = 0.9  # fraction of free GPU memory the trials may fill


def measure_memory(job: dict[str, Any]) -> dict[str, float]:
    """Bytes one clip adds to a training step at the job's frame count, and bytes available.

    CUDA: peak allocated during a batch-1 step minus the steady state; available = free memory
    (times a safety factor, less the other workers' models) / workers. CPU: the growth of the
    process's peak resident size over a batch-1 step; available = physical memory / 4 / workers.
    """
    cfg = validate(PretrainConfig, job["config"], "search memory probe")
    device, workers = resolve_device(cfg.train.device), int(job["workers"])
    model = build_model(cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    size = cfg.data.input_size
    video = torch.randn(1, model.in_chans, job["frames"], size, size, device=device)

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.precision)

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = model(video).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # optimizer state and allocator warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        per_clip = torch.cuda.max_memory_allocated(device) - base
        free, _ = torch.cuda.mem_get_info(device)
        available = max(0.0, (free * CUDA_SAFETY - (workers - 1) * base) / workers)
        return {"per_clip": float(max(per_clip, 1 << 20)), "available": available, "cuda": 1.0}
    before = _rss(current=True)
    step()
    per_clip = _rss(current=False) - before
    available = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 4 / workers
    return {"per_clip": float(max(per_clip, 1 << 20)), "available": float(available), "cuda": 0.0}


def _rss(current: bool) -> int:
    """Resident bytes now (Linux /proc) or the peak so far (getrusage; also the fallback)."""
    import resource

    if current and os.path.exists("/proc/self/statm"):
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def bz_max_table(memory: dict[str, float], frames: Iterable[int], measured_at: int) -> dict[int, int]:
    """Largest batch per clip length: memory per clip scales with the clip length (linear in
    tokens, an over-estimate for shorter clips since attention is quadratic)."""
    out = {}
    for f in frames:
        bz = max(1, int(memory["available"] // (memory["per_clip"] * f / measured_at)))
        out[f] = bz if memory.get("cuda") else min(bz, CPU_BATCH_CAP)
    return out
