"""Tests for progvid.data.transforms (clip-level spatial transforms)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from progvid.data import transforms as T


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def pattern_clip(t: int = 4, h: int = 48, w: int = 64, step: int = 10) -> torch.Tensor:
    """A smooth spatial pattern; frame i adds the constant ``step * i`` (no overflow)."""
    ys = torch.linspace(0, 1, h)[:, None, None]
    xs = torch.linspace(0, 1, w)[None, :, None]
    ch = torch.tensor([0.3, 0.6, 1.0])[None, None, :]
    base = 30 + 60 * ys + 80 * xs * ch + 20 * torch.sin(6 * xs + 4 * ys)  # in [10, 190]
    base = base.round().to(torch.uint8)
    return torch.stack([base + step * i for i in range(t)])


def assert_same_pattern_every_frame(out: torch.Tensor, step: int = 10) -> None:
    """Frame i must equal frame 0 plus step * i: the same crop / flip for every frame."""
    ref = out[0].to(torch.int32)
    for i in range(1, out.shape[0]):
        diff = out[i].to(torch.int32) - ref
        # resize rounds to uint8, so allow an off-by-one from float rounding
        assert (diff - step * i).abs().max() <= 1


RANDOM_TRANSFORMS = [
    T.MultiScaleCrop(24),
    T.MultiScaleCrop(24, fix_crop=False),
    T.RandomResizedCrop(24),
    T.HorizontalFlip(p=0.5),
    T.Compose([T.MultiScaleCrop(24), T.HorizontalFlip(1.0)]),
]


@pytest.mark.parametrize("tf", RANDOM_TRANSFORMS, ids=lambda tf: type(tf).__name__)
def test_same_crop_every_frame(tf) -> None:
    identical = pattern_clip(step=0)
    offset = pattern_clip(step=10)
    for seed in range(4):
        out = tf(identical, rng(seed))
        assert out.dtype == torch.uint8
        assert all(torch.equal(out[0], out[i]) for i in range(out.shape[0]))
        assert_same_pattern_every_frame(tf(offset, rng(seed)))


@pytest.mark.parametrize("tf", RANDOM_TRANSFORMS, ids=lambda tf: type(tf).__name__)
def test_reproducible_for_fixed_seed(tf) -> None:
    clip = pattern_clip()
    assert torch.equal(tf(clip, rng(11)), tf(clip, rng(11)))
    with pytest.raises(ValueError, match="rng"):
        tf(clip, None)


def test_crops_output_shape_and_vary() -> None:
    clip = pattern_clip(t=3, h=40, w=56)
    for tf in (T.MultiScaleCrop(32), T.RandomResizedCrop(32)):
        outs = [tf(clip, rng(s)) for s in range(8)]
        assert all(o.shape == (3, 32, 32, 3) and o.dtype == torch.uint8 for o in outs)
        assert len({o.sum().item() for o in outs}) > 1  # different crops for different seeds


def test_multiscale_crop_sizes_from_allowed_set() -> None:
    tf = T.MultiScaleCrop(32, scales=(1, 0.875, 0.75, 0.66), max_distort=1)
    H, W = 100, 140
    sides = [int(100 * s) for s in (1, 0.875, 0.75, 0.66)]  # 100, 87, 75, 66
    allowed = {(sides[i], sides[j]) for i in range(4) for j in range(4) if abs(i - j) <= 1}
    assert set(tf.crop_sizes(H, W)) == allowed
    grid_tops = {(H - h) // 4 * k for h, _ in allowed for k in range(5)}
    seen = set()
    for s in range(200):
        top, left, h, w = tf.params(H, W, rng(s))
        assert (h, w) in allowed
        assert 0 <= top <= H - h and 0 <= left <= W - w
        assert top in grid_tops and top % ((H - h) // 4 or 1) == 0  # fixed grid offsets
        seen.add((h, w))
    assert len(seen) > 5
    # near-output sizes snap to the output size; max_distort=0 only keeps square crops
    assert T.MultiScaleCrop(98, scales=(1, 0.5), max_distort=0).crop_sizes(100, 120) == [
        (98, 98),
        (50, 50),
    ]


def test_multiscale_fixed_offsets_grid() -> None:
    offs = T._fixed_offsets(100, 140, 60, 60, more=False)
    assert offs == [(0, 0), (0, 80), (40, 0), (40, 80), (20, 40)]
    assert len(T._fixed_offsets(100, 140, 60, 60, more=True)) == 13


def test_rrc_params_area_within_scale() -> None:
    H, W, scale, ratio = 120, 160, (0.2, 0.6), (3 / 4, 4 / 3)
    for s in range(300):
        top, left, h, w = T.rrc_params(H, W, scale, ratio, rng(s))
        assert 0 <= top <= H - h and 0 <= left <= W - w
        frac = h * w / (H * W)
        assert scale[0] * 0.9 <= frac <= scale[1] * 1.1  # slack for rounding h and w
        assert ratio[0] * 0.9 <= w / h <= ratio[1] * 1.1


def test_rrc_params_fallback_centre() -> None:
    # an impossible aspect range forces the fallback: largest centred crop within ratio
    top, left, h, w = T.rrc_params(100, 400, (0.9, 1.0), (1.0, 1.0), rng())
    assert (top, left, h, w) == (0, 150, 100, 100)
    top, left, h, w = T.rrc_params(300, 100, (0.99, 1.0), (0.5, 0.5), rng())
    assert (h, w) == (200, 100) and top == 50 and left == 0


def test_flip_reverses_width() -> None:
    clip = pattern_clip()
    assert torch.equal(T.HorizontalFlip(1.0)(clip, rng()), clip.flip(2))
    assert torch.equal(T.HorizontalFlip(0.0)(clip, rng()), clip)
    flips = [not torch.equal(T.HorizontalFlip()(clip, rng(s)), clip) for s in range(40)]
    assert 5 < sum(flips) < 35


def test_constant_resize_stays_constant() -> None:
    clip = torch.full((2, 37, 53, 3), 173, dtype=torch.uint8)
    for h, w in [(16, 16), (80, 100), (37, 20)]:
        out = T.resize(clip, h, w)
        assert out.shape == (2, h, w, 3) and out.dtype == torch.uint8
        assert bool((out == 173).all())


def test_short_side_resize() -> None:
    assert T.ShortSideResize(32)(pattern_clip(h=48, w=64), None).shape == (4, 32, 43, 3)
    assert T.ShortSideResize(32)(pattern_clip(h=64, w=48), None).shape == (4, 43, 32, 3)
    clip = pattern_clip(h=32, w=40)
    assert T.ShortSideResize(32)(clip) is clip  # no-op resize returns the input


def test_center_crop() -> None:
    clip = pattern_clip(h=48, w=64)
    out = T.CenterCrop(32)(clip)
    assert torch.equal(out, clip[:, 8:40, 16:48])
    with pytest.raises(ValueError, match="CenterCrop"):
        T.CenterCrop(50)(clip)


def test_three_crop_positions() -> None:
    clip = pattern_clip(h=32, w=80)
    left, centre, right = T.ThreeCrop(32)(clip)
    assert torch.equal(left, clip[:, :, 0:32])
    assert torch.equal(centre, clip[:, :, 24:56])
    assert torch.equal(right, clip[:, :, 48:80])
    portrait = pattern_clip(h=80, w=40)
    top, mid, bottom = T.ThreeCrop(32)(portrait)
    assert torch.equal(top, portrait[:, 0:32, 4:36])
    assert torch.equal(mid, portrait[:, 24:56, 4:36])
    assert torch.equal(bottom, portrait[:, 48:80, 4:36])


def test_normalize_numeric() -> None:
    clip = torch.tensor([[[[0, 128, 255]]], [[[51, 102, 204]]]], dtype=torch.uint8)  # (2,1,1,3)
    mean, std = (0.5, 0.25, 0.1), (0.5, 0.2, 0.4)
    out = T.Normalize(mean, std)(clip)
    assert out.dtype == torch.float32 and out.shape == (3, 2, 1, 1)
    expect = np.empty((3, 2, 1, 1), dtype=np.float64)
    for t, px in enumerate([(0, 128, 255), (51, 102, 204)]):
        for c in range(3):
            expect[c, t, 0, 0] = (px[c] / 255 - mean[c]) / std[c]
    np.testing.assert_allclose(out.numpy(), expect, rtol=1e-5, atol=1e-6)
    default = T.Normalize()(clip)
    np.testing.assert_allclose(default[0, 0, 0, 0].item(), (0 - 0.485) / 0.229, rtol=1e-5)
    with pytest.raises(ValueError, match="channels"):
        T.Normalize((0.5,), (0.5,))(clip)


def test_compose_maps_over_lists() -> None:
    clip = pattern_clip(h=32, w=80)
    out = T.Compose([T.ThreeCrop(32), T.Normalize()])(clip)
    assert isinstance(out, list) and len(out) == 3
    assert all(o.shape == (3, 4, 32, 32) and o.dtype == torch.float32 for o in out)


@pytest.mark.parametrize("crop", ["multiscale", "rrc"])
def test_train_transform(crop: str) -> None:
    tf = T.train_transform(24, crop=crop)
    clip = pattern_clip()
    out = tf(clip, rng(3))
    assert out.shape == (3, 4, 24, 24) and out.dtype == torch.float32
    assert torch.equal(out, tf(clip, rng(3)))
    assert T.train_transform(24, flip=False).transforms[-2].__class__ is T.MultiScaleCrop
    with pytest.raises(ValueError, match="crop"):
        T.train_transform(24, crop="center")  # type: ignore[arg-type]


def test_test_transform_views() -> None:
    clip = pattern_clip(h=48, w=64)
    one = T.test_transform(32)(clip, None)
    assert isinstance(one, list) and len(one) == 1
    assert one[0].shape == (3, 4, 32, 32) and one[0].dtype == torch.float32
    three = T.test_transform(32, short_side=40, crops=3)(clip, rng())
    assert len(three) == 3 and all(v.shape == (3, 4, 32, 32) for v in three)
    assert not torch.equal(three[0], three[2])  # left and right views differ
    with pytest.raises(ValueError, match="crops"):
        T.test_transform(32, crops=2)
    with pytest.raises(ValueError, match="short_side"):
        T.test_transform(32, short_side=16)


def test_bad_clip_shape() -> None:
    with pytest.raises(ValueError, match=r"\(T, H, W, C\)"):
        T.CenterCrop(4)(torch.zeros(8, 8, 3, dtype=torch.uint8))
