"""Tests for progvid.data.sampling (frame-index samplers)."""

from __future__ import annotations

import numpy as np
import pytest

from progvid.data.sampling import (
    TemporalSampler,
    multi_clip_indices,
    random_subset_indices,
    segment_indices,
    stride_indices,
)
from progvid.errors import ConfigError


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def assert_valid(idx: np.ndarray, n: int, t: int, *, sorted_: bool = True) -> None:
    assert isinstance(idx, np.ndarray)
    assert idx.dtype == np.int64
    assert idx.shape == (t,)
    assert idx.min() >= 0 and idx.max() < n
    if sorted_:
        assert np.all(np.diff(idx) >= 0)


# ---------------------------------------------------------------- stride
@pytest.mark.parametrize("n", [1, 5, 63, 64, 65, 300])
@pytest.mark.parametrize("mode", ["clamp", "loop"])
@pytest.mark.parametrize("train", [True, False])
def test_stride_bounds_and_length(n: int, mode: str, train: bool) -> None:
    for seed in range(5):
        idx = stride_indices(n, 16, 4, train=train, rng=rng(seed), mode=mode)
        # loop-mode clips of short videos wrap around and are not sorted
        assert_valid(idx, n, 16, sorted_=(mode == "clamp" or n >= 64))


def test_stride_keeps_rate_when_video_long_enough() -> None:
    for seed in range(20):
        idx = stride_indices(100, 8, 4, train=True, rng=rng(seed))
        assert np.all(np.diff(idx) == 4)
        # window of span = t * rate = 32 frames must fit: start in [0, 68]
        assert 0 <= idx[0] <= 100 - 32


def test_stride_test_clip_centred() -> None:
    idx = stride_indices(100, 8, 4, train=False)
    assert idx[0] == (100 - 32) // 2
    np.testing.assert_array_equal(idx, 34 + 4 * np.arange(8))
    # exact fit: the single window starts at 0 in train and test
    np.testing.assert_array_equal(stride_indices(32, 8, 4, train=False), 4 * np.arange(8))
    np.testing.assert_array_equal(stride_indices(32, 8, 4, train=True, rng=rng()), 4 * np.arange(8))


def test_stride_short_video_clamp_and_loop() -> None:
    clamp = stride_indices(10, 8, 4, train=False, mode="clamp")
    np.testing.assert_array_equal(clamp, [0, 4, 8, 9, 9, 9, 9, 9])
    loop = stride_indices(10, 8, 4, train=False, mode="loop")
    np.testing.assert_array_equal(loop, [0, 4, 8, 2, 6, 0, 4, 8])
    np.testing.assert_array_equal(stride_indices(1, 4, 2, train=True, rng=rng()), [0, 0, 0, 0])
    np.testing.assert_array_equal(
        stride_indices(1, 4, 2, train=True, rng=rng(), mode="loop"), [0, 0, 0, 0]
    )


def test_stride_randomness_reproducible_and_varies() -> None:
    a = stride_indices(500, 16, 2, train=True, rng=rng(7))
    b = stride_indices(500, 16, 2, train=True, rng=rng(7))
    np.testing.assert_array_equal(a, b)
    starts = {int(stride_indices(500, 16, 2, train=True, rng=rng(s))[0]) for s in range(20)}
    assert len(starts) > 5


def test_stride_errors() -> None:
    with pytest.raises(ValueError, match="rng"):
        stride_indices(100, 8, 4, train=True)
    with pytest.raises(ValueError, match="mode"):
        stride_indices(100, 8, 4, train=False, mode="pad")  # type: ignore[arg-type]
    for n, t, r in [(0, 8, 4), (10, 0, 4), (10, 8, 0)]:
        with pytest.raises(ValueError):
            stride_indices(n, t, r, train=False)


# ---------------------------------------------------------------- segments
@pytest.mark.parametrize("n", [1, 3, 8, 16, 17, 250])
@pytest.mark.parametrize("train", [True, False])
def test_segment_bounds(n: int, train: bool) -> None:
    for seed in range(5):
        assert_valid(segment_indices(n, 8, train=train, rng=rng(seed)), n, 8)


def test_segment_middle_and_within_segment() -> None:
    np.testing.assert_array_equal(segment_indices(80, 8, train=False), 5 + 10 * np.arange(8))
    for seed in range(20):
        idx = segment_indices(80, 8, train=True, rng=rng(seed))
        np.testing.assert_array_equal(idx // 10, np.arange(8))  # one frame in each segment


def test_segment_short_video_repeats() -> None:
    idx = segment_indices(3, 8, train=False)
    assert_valid(idx, 3, 8)
    assert set(idx.tolist()) == {0, 1, 2}
    np.testing.assert_array_equal(segment_indices(1, 4, train=True, rng=rng()), [0, 0, 0, 0])


def test_segment_randomness() -> None:
    a = segment_indices(300, 16, train=True, rng=rng(3))
    np.testing.assert_array_equal(a, segment_indices(300, 16, train=True, rng=rng(3)))
    assert not np.array_equal(a, segment_indices(300, 16, train=True, rng=rng(4)))


# ---------------------------------------------------------------- random subset
def test_random_subset_distinct_sorted() -> None:
    for seed in range(10):
        idx = random_subset_indices(50, 16, rng(seed))
        assert_valid(idx, 50, 16)
        assert len(set(idx.tolist())) == 16
    np.testing.assert_array_equal(random_subset_indices(16, 16, rng()), np.arange(16))
    a = random_subset_indices(1000, 8, rng(1))
    np.testing.assert_array_equal(a, random_subset_indices(1000, 8, rng(1)))
    assert not np.array_equal(a, random_subset_indices(1000, 8, rng(2)))


def test_random_subset_short_video() -> None:
    idx = random_subset_indices(5, 12, rng())
    assert_valid(idx, 5, 12)
    assert set(idx.tolist()) == set(range(5))  # every frame used at least once
    np.testing.assert_array_equal(random_subset_indices(1, 3, rng()), [0, 0, 0])


# ---------------------------------------------------------------- multi clip
def test_multi_clip_stride_spread() -> None:
    clips = multi_clip_indices(200, 8, 5, rate=4)
    assert len(clips) == 5
    for c in clips:
        assert_valid(c, 200, 8)
        assert np.all(np.diff(c) == 4)
    assert clips[0][0] == 0  # first clip at the start
    assert clips[-1][-1] == 200 - 4  # last window ends at the end (last frame = n - rate)
    starts = [int(c[0]) for c in clips]
    assert starts == sorted(starts) and len(set(starts)) == 5
    np.testing.assert_array_equal(clips[2], stride_indices(200, 8, 4, train=False))
    # one clip = the centred test clip
    (single,) = multi_clip_indices(200, 8, 1, rate=4)
    np.testing.assert_array_equal(single, stride_indices(200, 8, 4, train=False))


def test_multi_clip_stride_short_video() -> None:
    clips = multi_clip_indices(10, 8, 3, rate=4)
    for c in clips:
        np.testing.assert_array_equal(c, stride_indices(10, 8, 4, train=False))


def test_multi_clip_segments() -> None:
    # VideoMAE's SSv2 test views: the segments' middles and their starts (ssv2.py)
    clips = multi_clip_indices(80, 8, 2, mode="segments")
    np.testing.assert_array_equal(clips[0], 5 + 10 * np.arange(8))  # offset 0.5 of 10
    np.testing.assert_array_equal(clips[1], 10 * np.arange(8))  # offset 0
    tick = 50 / 16  # the official indices int(tick / 2 + tick * x) and int(tick * x), n = 50
    official = ([int(tick / 2 + tick * x) for x in range(16)], [int(tick * x) for x in range(16)])
    got = multi_clip_indices(50, 16, 2, mode="segments")
    assert [c.tolist() for c in got] == [official[0], official[1]]
    (single,) = multi_clip_indices(80, 8, 1, mode="segments")
    np.testing.assert_array_equal(single, segment_indices(80, 8, train=False))
    for c in multi_clip_indices(3, 8, 4, mode="segments"):
        assert_valid(c, 3, 8)


def test_multi_clip_errors() -> None:
    with pytest.raises(ValueError, match="rate"):
        multi_clip_indices(100, 8, 2)
    with pytest.raises(ValueError, match="clips"):
        multi_clip_indices(100, 8, 0, rate=2)
    with pytest.raises(ValueError, match="mode"):
        multi_clip_indices(100, 8, 2, rate=2, mode="x")  # type: ignore[arg-type]


# ---------------------------------------------------------------- TemporalSampler
def test_temporal_sampler_dispatch() -> None:
    s = TemporalSampler("stride", 8, rate=2)
    assert s.span == 16
    np.testing.assert_array_equal(s(100, train=False), stride_indices(100, 8, 2, train=False))
    np.testing.assert_array_equal(
        s(100, train=True, rng=rng(5)), stride_indices(100, 8, 2, train=True, rng=rng(5))
    )
    assert len(s.test_clips(100, 3)) == 3
    seg = TemporalSampler("segments", 8)
    np.testing.assert_array_equal(seg(80, train=False), segment_indices(80, 8, train=False))
    np.testing.assert_array_equal(
        seg.test_clips(80, 2)[1], multi_clip_indices(80, 8, 2, mode="segments")[1]
    )
    r = TemporalSampler("random", 8)
    np.testing.assert_array_equal(
        r(80, train=True, rng=rng(1)), random_subset_indices(80, 8, rng(1))
    )
    np.testing.assert_array_equal(r(80, train=False), segment_indices(80, 8, train=False))
    loop = TemporalSampler("stride", 8, rate=4, mode="loop")
    assert loop(10, train=False).tolist() == [0, 4, 8, 2, 6, 0, 4, 8]


def test_temporal_sampler_with_frames() -> None:
    s = TemporalSampler("stride", 16, rate=4)
    keep_stride = s.with_frames(8)
    assert (keep_stride.num_frames, keep_stride.rate) == (8, 4)
    keep_span = s.with_frames(8, keep="span")
    assert (keep_span.num_frames, keep_span.rate) == (8, 8)
    assert keep_span.span == s.span
    assert s.with_frames(4, keep="span").rate == 16
    assert s.with_frames(64, keep="span").rate == 1  # never below 1
    assert s.with_frames(24, keep="span").rate == 3  # 64 / 24 = 2.67 rounds to 3
    assert s.num_frames == 16  # original untouched (frozen)
    assert keep_span.kind == "stride" and keep_span.mode == "clamp"


def test_temporal_sampler_config_errors() -> None:
    with pytest.raises(ConfigError, match="kind"):
        TemporalSampler("dense", 8)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="num_frames"):
        TemporalSampler("stride", 0)
    with pytest.raises(ConfigError, match="rate"):
        TemporalSampler("stride", 8, rate=0)
    with pytest.raises(ConfigError, match="mode"):
        TemporalSampler("stride", 8, mode="wrap")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="keep"):
        TemporalSampler("stride", 8).with_frames(4, keep="time")  # type: ignore[arg-type]
