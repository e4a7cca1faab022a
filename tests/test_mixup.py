"""Mixup / CutMix for clips: target sums, clip-consistent boxes, convexity, determinism."""

from __future__ import annotations

import random

import pytest
import torch

from progvid.data.mixup import MixParams, Mixup, cutmix_box, smooth_one_hot, soft_cross_entropy
from progvid.errors import ConfigError, ProgvidError

K = 5


def batch(b: int = 4, t: int = 4, s: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(b, 3, t, s, s, generator=g), torch.tensor([0, 1, 2, 3][:b])


def run_until(mix: Mixup, mode: str, seed: int = 0):
    video, labels = batch()
    for s in range(seed, seed + 200):
        out, targets = mix(video, labels, torch.Generator().manual_seed(s))
        if mix.last is not None and mix.last.mode == mode:
            return video, labels, out, targets, mix.last
    raise AssertionError(f"no {mode} draw in 200 seeds")


def test_label_smoothing_values() -> None:
    y = smooth_one_hot(torch.tensor([2, 0]), K, 0.1)
    off, on = 0.1 / K, 1 - 0.1 + 0.1 / K
    assert torch.allclose(y[0], torch.tensor([off, off, on, off, off]))
    assert torch.allclose(y.sum(1), torch.ones(2))
    mix = Mixup(num_classes=K, prob=0.0, label_smoothing=0.1)  # never mixes: targets smoothed
    video, labels = batch()
    out, targets = mix(video, labels, torch.Generator().manual_seed(0))
    assert torch.equal(out, video) and mix.last == MixParams("none", 1.0)
    assert torch.allclose(targets, smooth_one_hot(labels, K, 0.1))
    assert torch.allclose(targets.max(1).values, torch.full((4,), on))


@pytest.mark.parametrize("mode", ["mixup", "cutmix"])
def test_targets_sum_to_one_and_use_lambda(mode: str) -> None:
    mix = Mixup(num_classes=K, label_smoothing=0.1)
    _, labels, _, targets, params = run_until(mix, mode)
    assert torch.allclose(targets.sum(1), torch.ones(4))
    y = smooth_one_hot(labels, K, 0.1)
    torch.testing.assert_close(targets, params.lam * y + (1 - params.lam) * y.flip(0))
    assert 0.0 <= params.lam <= 1.0


def test_mixup_is_convex_combination_with_flipped_batch() -> None:
    mix = Mixup(num_classes=K, cutmix_alpha=0.0)
    video, _, out, _, params = run_until(mix, "mixup")
    lam = params.lam
    torch.testing.assert_close(out, lam * video + (1 - lam) * video.flip(0))
    assert not torch.equal(out, video)


def test_cutmix_box_is_the_same_in_every_frame() -> None:
    mix = Mixup(num_classes=K, mixup_alpha=0.0)
    video, _, out, _, params = run_until(mix, "cutmix")
    changed = (out != video).any(dim=1)  # (B, T, H, W)
    y0, y1, x0, x1 = params.box
    inside = torch.zeros(16, 16, dtype=torch.bool)
    inside[y0:y1, x0:x1] = True
    for b in range(4):
        for t in range(4):
            assert torch.equal(changed[b, t], changed[b, 0])  # identical region per frame
            assert torch.equal(changed[b, t], inside)  # exactly the box (random data differ)
    area = (y1 - y0) * (x1 - x0)
    assert params.lam == pytest.approx(1 - area / 256)
    torch.testing.assert_close(out[..., y0:y1, x0:x1], video.flip(0)[..., y0:y1, x0:x1])


def test_cutmix_lambda_corrected_after_clipping() -> None:
    rng = random.Random(0)
    for _ in range(200):
        lam = rng.random()
        (y0, y1, x0, x1), fixed = cutmix_box(20, 12, lam, rng)
        assert 0 <= y0 <= y1 <= 20 and 0 <= x0 <= x1 <= 12
        assert fixed == pytest.approx(1 - (y1 - y0) * (x1 - x0) / 240)
        assert fixed >= lam - 1e-9  # clipping only shrinks the box


def test_deterministic_for_a_seed_and_input_untouched() -> None:
    video, labels = batch()
    copy = video.clone()
    mix = Mixup(num_classes=K)
    outs = [mix(video, labels, torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    assert torch.equal(video, copy)
    modes = set()
    for s in range(40):
        mix(video, labels, torch.Generator().manual_seed(s))
        modes.add(mix.last.mode)
    assert modes == {"mixup", "cutmix"}  # switch_prob 0.5 picks both


def test_soft_cross_entropy_matches_hard_labels() -> None:
    logits = torch.randn(6, K, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    hard = torch.nn.functional.cross_entropy(logits, labels)
    torch.testing.assert_close(soft_cross_entropy(logits, smooth_one_hot(labels, K)), hard)
    smooth = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.1)
    torch.testing.assert_close(soft_cross_entropy(logits, smooth_one_hot(labels, K, 0.1)), smooth)


def test_bad_inputs() -> None:
    with pytest.raises(ConfigError):
        Mixup(num_classes=K, prob=1.5)
    mix = Mixup(num_classes=K)
    video, labels = batch()
    with pytest.raises(ProgvidError, match="labels"):
        mix(video, labels + 5)
    with pytest.raises(ProgvidError, match="float video"):
        mix(video.to(torch.uint8), labels)
