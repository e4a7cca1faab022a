"""Frame-index samplers: which t of a video's n frames make up a clip.

Every sampler returns a 1-D ``np.ndarray`` of dtype int64 and length ``t`` whose values lie in
``[0, n)``. Randomness comes only from an explicit ``numpy.random.Generator`` (the dataset seeds
one per sample), so a clip is reproducible whatever the worker layout.

Conventions
-----------
* **Stride clips** (Kinetics / VideoMAE style) take ``t`` frames every ``rate`` frames. The clip
  *reserves a window* of ``span = t * rate`` frames (VideoMAE's ``clip_len * frame_sample_rate``)
  and its frames are ``start, start + rate, ..., start + (t - 1) * rate``, so the last frame is
  ``start + span - rate``. Training picks ``start`` uniformly in ``[0, n - span]``; testing
  centres the window. (VideoMAE's Kinetics loader spreads its 16 frames with ``np.linspace``
  over the whole 64-frame window, kinetics.py: steps of 4 or 5 frames ending on frame 63; here
  the steps are exactly ``rate``, the last frame 60: a 5% shorter span, kept for a regular grid.)
* **Short videos** (``span > n``): mode ``"clamp"`` (the default, as VideoMAE pads with the last
  frame) starts at 0 and clamps indices to ``n - 1``, so the stride is kept and the tail repeats
  the last frame. Mode ``"loop"`` wraps indices modulo ``n`` (the clip then loops the video and
  is not sorted); in training its start is random in ``[0, n)``.
* **Segment clips** (SSv2 / TSN style) cut the whole video into ``t`` equal segments and take
  one frame per segment, so they always cover the full video whatever its length.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import numpy as np

from progvid.errors import ConfigError

PadMode = Literal["clamp", "loop"]
SamplerKind = Literal["stride", "segments", "random"]


def _check(n: int, t: int, rate: int | None = None) -> None:
    if int(n) < 1:
        raise ValueError(f"video must have at least 1 frame, got n={n}")
    if int(t) < 1:
        raise ValueError(f"clip must have at least 1 frame, got t={t}")
    if rate is not None and int(rate) < 1:
        raise ValueError(f"frame rate (stride) must be >= 1, got rate={rate}")


def need_rng(rng: np.random.Generator | None) -> np.random.Generator:
    if rng is None:
        raise ValueError("training sampling needs an explicit rng (numpy.random.Generator)")
    return rng


def _stride_from(start: int, n: int, t: int, rate: int, mode: PadMode) -> np.ndarray:
    idx = start + np.arange(t, dtype=np.int64) * rate
    if mode == "loop":
        return idx % n
    return np.minimum(idx, n - 1)


def stride_indices(
    n: int,
    t: int,
    rate: int,
    *,
    train: bool,
    rng: np.random.Generator | None = None,
    mode: PadMode = "clamp",
) -> np.ndarray:
    """``t`` frames every ``rate`` frames from a window of ``span = t * rate`` frames.

    Training: window start uniform in ``[0, n - span]``; testing: window centred. When
    ``span > n`` see the module docstring (``"clamp"`` repeats the last frame, ``"loop"`` wraps).
    """
    _check(n, t, rate)
    if mode not in ("clamp", "loop"):
        raise ValueError(f"mode must be 'clamp' or 'loop', got {mode!r}")
    span = t * rate
    if span <= n:
        start = int(need_rng(rng).integers(0, n - span + 1)) if train else (n - span) // 2
    elif mode == "loop" and train:
        start = int(need_rng(rng).integers(0, n))
    else:
        start = 0
    return _stride_from(start, n, t, rate, mode)


def _segment_at(n: int, t: int, frac: np.ndarray | float) -> np.ndarray:
    """Frame at relative position ``frac`` (in [0, 1)) inside each of ``t`` equal segments."""
    pos = (np.arange(t, dtype=np.float64) + frac) * (n / t)
    return np.minimum(np.floor(pos).astype(np.int64), n - 1)


def segment_indices(
    n: int, t: int, *, train: bool, rng: np.random.Generator | None = None
) -> np.ndarray:
    """One frame from each of ``t`` equal segments spanning the whole video (TSN / SSv2).

    Training: a uniformly random frame inside each segment; testing: each segment's middle frame.
    With ``n < t`` segments are shorter than a frame, so frames repeat (still sorted).
    """
    _check(n, t)
    frac = need_rng(rng).random(t) if train else 0.5
    return _segment_at(n, t, frac)


def random_subset_indices(n: int, t: int, rng: np.random.Generator) -> np.ndarray:
    """``t`` distinct frames chosen uniformly at random, sorted.

    With ``n < t`` every frame is used once and the remaining ``t - n`` are drawn with
    replacement (so the result is sorted, covers the video, and repeats some frames).
    """
    _check(n, t)
    rng = need_rng(rng)
    if t <= n:
        idx = rng.choice(n, size=t, replace=False)
    else:
        idx = np.concatenate([np.arange(n), rng.integers(0, n, size=t - n)])
    return np.sort(idx).astype(np.int64)


def multi_clip_indices(
    n: int,
    t: int,
    clips: int,
    *,
    rate: int | None = None,
    mode: Literal["stride", "segments"] = "stride",
    pad: PadMode = "clamp",
) -> list[np.ndarray]:
    """``clips`` deterministic test clips spread evenly over the video.

    ``"stride"`` (needs ``rate``): window starts evenly spaced over ``[0, n - span]`` like
    VideoMAE's multi-clip testing (one clip is centred); a video shorter than the window gives
    ``clips`` identical clips padded per ``pad``. ``"segments"``: clip ``k`` takes the frame at
    relative offset ``(0.5 + k / clips) mod 1`` inside each of ``t`` equal segments: one clip the
    segments' middles, two clips their middles and starts, as VideoMAE's SSv2 test loader
    (ssv2.py: frames ``int(tick / 2 + tick * x)`` and ``int(tick * x)``, one view each).
    """
    _check(n, t, rate)
    if int(clips) < 1:
        raise ValueError(f"clips must be >= 1, got {clips}")
    if mode == "segments":
        return [_segment_at(n, t, (0.5 + k / clips) % 1.0) for k in range(clips)]
    if mode != "stride":
        raise ValueError(f"mode must be 'stride' or 'segments', got {mode!r}")
    if rate is None:
        raise ValueError("stride multi-clip sampling needs rate")
    if pad not in ("clamp", "loop"):
        raise ValueError(f"pad must be 'clamp' or 'loop', got {pad!r}")
    room = max(n - t * rate, 0)
    if clips == 1:
        starts = [room // 2]
    else:
        starts = [int(round(k * room / (clips - 1))) for k in range(clips)]
    return [_stride_from(s, n, t, rate, pad) for s in starts]


@dataclass(frozen=True)
class TemporalSampler:
    """One object a dataset holds to sample clips of ``num_frames`` frames.

    ``kind``: ``"stride"`` (every ``rate`` frames, padding per ``mode``), ``"segments"`` (TSN),
    or ``"random"`` (random distinct frames in training, segment middles in testing).
    """

    kind: SamplerKind
    num_frames: int
    rate: int = 4
    mode: PadMode = "clamp"

    def __post_init__(self) -> None:
        # Built from user config, so failures are ConfigErrors the CLI reports cleanly.
        if self.kind not in ("stride", "segments", "random"):
            raise ConfigError(f"sampler kind must be stride, segments or random, got {self.kind!r}")
        if int(self.num_frames) < 1:
            raise ConfigError(f"sampler num_frames must be >= 1, got {self.num_frames}")
        if int(self.rate) < 1:
            raise ConfigError(f"sampler rate must be >= 1, got {self.rate}")
        if self.mode not in ("clamp", "loop"):
            raise ConfigError(f"sampler mode must be clamp or loop, got {self.mode!r}")

    @property
    def span(self) -> int:
        """Frames the clip window reserves (``num_frames * rate``; stride kind only)."""
        return self.num_frames * self.rate

    def __call__(
        self, n: int, *, train: bool, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        t = self.num_frames
        if self.kind == "stride":
            return stride_indices(n, t, self.rate, train=train, rng=rng, mode=self.mode)
        if self.kind == "random" and train:
            return random_subset_indices(n, t, need_rng(rng))
        return segment_indices(n, t, train=train, rng=rng)

    def test_clips(self, n: int, clips: int) -> list[np.ndarray]:
        """``clips`` deterministic clips spread over the video (multi-view testing)."""
        if self.kind == "stride":
            return multi_clip_indices(
                n, self.num_frames, clips, rate=self.rate, mode="stride", pad=self.mode
            )
        return multi_clip_indices(n, self.num_frames, clips, mode="segments")

    def with_frames(self, t: int, keep: Literal["stride", "span"] = "stride") -> TemporalSampler:
        """The same sampler with ``t`` frames, for progressive (short-to-long) training stages.

        ``keep="stride"`` keeps ``rate`` (the clip covers less / more time); ``keep="span"`` scales
        ``rate`` so ``t * rate`` stays (about) the same, rounding half up and never below 1.
        """
        if int(t) < 1:
            raise ConfigError(f"num_frames must be >= 1, got {t}")
        if keep == "stride":
            return dataclasses.replace(self, num_frames=int(t))
        if keep == "span":
            rate = max(1, int(self.span / t + 0.5))  # round half up
            return dataclasses.replace(self, num_frames=int(t), rate=rate)
        raise ConfigError(f"with_frames keep must be 'stride' or 'span', got {keep!r}")
