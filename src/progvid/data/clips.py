"""Clip datasets from typed data settings: the one place that turns a `DataConfig` into a
sampler, transforms and a `VideoDataset`, for training and for testing.

Testing (every evaluation, probe, prediction and picture): the data config's temporal sampler
at the clip length asked for, deterministic clips spread over the video, the short side resized
to the input size, one centre crop or three crops, the config's normalization.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import ConfigError, DataError
from .datasets import Sample, VideoDataset
from .sampling import TemporalSampler
from .transforms import test_transform, train_transform

if TYPE_CHECKING:
    from ..config import DataConfig


def train_dataset(d: DataConfig, samples: list[Sample], *, frames: int, seed: int,
                  rate: int | None = None, clips_per_decode: int = 1) -> VideoDataset:
    """Augmented training clips of `frames` frames (stride `rate`, default the config's),
    `clips_per_decode` of them from each decode (see `VideoDataset`)."""
    sampler = TemporalSampler(d.sampler, frames, rate or d.sampling_rate, d.clip_mode)
    try:
        transform = train_transform(d.input_size, crop=d.crop, flip=d.flip, mean=d.mean,
                                    std=d.std, scales=d.crop_scales, rrc_scale=d.rrc_scale,
                                    randaug=d.randaug, erase=d.erase_prob,
                                    normalize=d.worker_normalizes())
    except ValueError as exc:  # a malformed RandAugment spec
        raise ConfigError(f"data.randaug: {exc}") from None
    return VideoDataset(samples, sampler=sampler, transform=transform, train=True,
                        num_sample=d.num_sample, seed=seed, short_side=d.short_side,
                        decode_threads=d.decode_threads, on_error=d.on_error,
                        clips_per_decode=clips_per_decode)


def test_dataset(d: DataConfig, samples: list[Sample], *, frames: int | None = None,
                 clips: int = 1, crops: int = 1, seed: int = 0,
                 on_error: str | None = None) -> VideoDataset:
    """Deterministic test views: `clips` x `crops` per video, each (C, frames, S, S) with S the
    config's input size. `frames` defaults to the config's clip length, `on_error` to its
    policy; `on_error="drop"` leaves a bad video out of the batches (`VideoDataset`)."""
    sampler = TemporalSampler(d.sampler, frames or d.num_frames, d.sampling_rate, d.clip_mode)
    transform = test_transform(d.input_size, crops=crops, mean=d.mean, std=d.std)
    return VideoDataset(samples, sampler=sampler, transform=transform, train=False,
                        test_clips=clips, seed=seed, short_side=d.short_side,
                        decode_threads=d.decode_threads, on_error=on_error or d.on_error)


# The names start with "test_": stop pytest collecting them when a test module imports them.
test_dataset.__test__ = False  # type: ignore[attr-defined]


def test_clip(d: DataConfig, video: str | Path, *, frames: int | None = None) -> torch.Tensor:
    """The centred test clip of one video file: float (1, C, T, S, S), normalized."""
    path = Path(video)
    if not path.exists():
        raise DataError(path, "file not found")
    item = test_dataset(d, [Sample(path)], frames=frames, on_error="raise")[0]
    return item["video"][:1]


test_clip.__test__ = False  # type: ignore[attr-defined]
