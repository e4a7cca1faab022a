"""The clip contract every clip transform checks: uint8 (T, H, W, C) tensors and explicit
random generators."""

from __future__ import annotations

import numpy as np
import torch

Rng = np.random.Generator | None


def check_clip(clip: torch.Tensor) -> tuple[int, int]:
    """(H, W) of a (T, H, W, C) clip; ValueError for anything else."""
    if not isinstance(clip, torch.Tensor) or clip.ndim != 4:
        shape = tuple(clip.shape) if isinstance(clip, torch.Tensor) else type(clip).__name__
        raise ValueError(f"expected a clip tensor shaped (T, H, W, C), got {shape}")
    return int(clip.shape[1]), int(clip.shape[2])


def need_rng(rng: Rng, who: str) -> np.random.Generator:
    """`rng`, or a ValueError naming `who` when a random transform got none."""
    if rng is None:
        raise ValueError(f"{who} is random and needs an explicit rng (numpy.random.Generator)")
    return rng
