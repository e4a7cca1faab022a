"""Mixup / CutMix for video batches with label smoothing (timm's batch mode, clip-aware).

One draw per batch: with probability `prob`, either mixup (lambda ~ Beta(mixup_alpha,
mixup_alpha), a convex combination of each clip with the batch flipped) or, with probability
`switch_prob`, cutmix (lambda ~ Beta(cutmix_alpha, cutmix_alpha), one box of area about
(1 - lambda) pasted from the flipped batch, the same box in every frame; lambda is then set to
the exact kept area). Targets mix the smoothed one-hot labels with the same lambda.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from progvid.errors import ConfigError, ProgvidError


@dataclass(frozen=True)
class MixParams:
    """One batch's draw. `box` = (y0, y1, x0, x1) for cutmix, None otherwise; `lam` is the
    weight of the original clip (1.0 when nothing was mixed)."""

    mode: str  # "mixup", "cutmix" or "none"
    lam: float
    box: tuple[int, int, int, int] | None = None


def smooth_one_hot(labels: Tensor, num_classes: int, smoothing: float = 0.0) -> Tensor:
    """labels (B,) int -> (B, K) float32 with `1 - smoothing + smoothing/K` on the label and
    `smoothing/K` elsewhere."""
    off = smoothing / num_classes
    out = torch.full((labels.shape[0], num_classes), off, device=labels.device)
    return out.scatter_(1, labels.long().unsqueeze(1), 1.0 - smoothing + off)


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean over the batch of -sum_k targets_k * log_softmax(logits)_k, in float32."""
    return torch.sum(-targets.float() * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


def cutmix_box(
    height: int, width: int, lam: float, rng: random.Random
) -> tuple[tuple[int, int, int, int], float]:
    """Box (y0, y1, x0, x1) of area about (1 - lam) * H * W centred at a uniform point, clipped
    to the frame, and the lambda that matches the clipped box exactly."""
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = rng.randrange(height), rng.randrange(width)
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return (y0, y1, x0, x1), 1.0 - (y1 - y0) * (x1 - x0) / (height * width)


class Mixup:
    """`mixup(video (B, C, T, H, W), labels (B,), generator=None) -> (video, targets (B, K))`.

    Randomness comes from one draw of `generator` (or torch's global RNG) per call, so a seeded
    generator gives the same result. The last draw is kept on `self.last` (a MixParams)."""

    def __init__(
        self,
        *,
        num_classes: int,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        switch_prob: float = 0.5,
        prob: float = 1.0,
        label_smoothing: float = 0.1,
    ) -> None:
        if num_classes < 1:
            raise ConfigError(f"mixup: num_classes must be >= 1, got {num_classes}")
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ConfigError(f"mixup: alphas must be >= 0, got {mixup_alpha}, {cutmix_alpha}")
        for name, value in (("switch_prob", switch_prob), ("prob", prob),
                            ("label_smoothing", label_smoothing)):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"mixup: {name} must be in [0, 1], got {value}")
        self.num_classes = num_classes
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.switch_prob = switch_prob
        self.prob = prob
        self.label_smoothing = label_smoothing
        self.last: MixParams | None = None

    def sample(
        self, height: int, width: int, generator: torch.Generator | None = None
    ) -> MixParams:
        """Draw the mode, lambda and (for cutmix) the box for one batch of H x W clips."""
        device = generator.device if generator is not None else "cpu"
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=device))
        rng = random.Random(seed)
        use_mix, use_cut = self.mixup_alpha > 0, self.cutmix_alpha > 0
        if not (use_mix or use_cut) or rng.random() >= self.prob:
            return MixParams("none", 1.0)
        if use_cut and (not use_mix or rng.random() < self.switch_prob):
            lam = rng.betavariate(self.cutmix_alpha, self.cutmix_alpha)
            box, lam = cutmix_box(height, width, lam, rng)
            return MixParams("cutmix", lam, box)
        return MixParams("mixup", rng.betavariate(self.mixup_alpha, self.mixup_alpha))

    def apply(self, video: Tensor, labels: Tensor, params: MixParams) -> tuple[Tensor, Tensor]:
        """Mix `video` with `video.flip(0)` as `params` says (the input is not modified)."""
        if video.ndim != 5 or not video.is_floating_point():
            raise ProgvidError(f"mixup expects float video (B, C, T, H, W), got "
                               f"{video.dtype} {tuple(video.shape)}")
        if labels.shape != (video.shape[0],):
            raise ProgvidError(f"mixup expects labels ({video.shape[0]},), got "
                               f"{tuple(labels.shape)}")
        # the range is checked where reading it is free (on the host; the fine-tuning step
        # checks its labels there before they move to the device)
        if labels.numel() and labels.device.type == "cpu" and (
                int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ProgvidError(f"mixup: labels must be in [0, {self.num_classes}), got "
                               f"{labels.min().item()}..{labels.max().item()}")
        lam = params.lam
        if params.mode == "mixup":
            video = video * lam + video.flip(0) * (1.0 - lam)
        elif params.mode == "cutmix":
            assert params.box is not None
            y0, y1, x0, x1 = params.box
            video = video.clone()
            video[..., y0:y1, x0:x1] = video.flip(0)[..., y0:y1, x0:x1]  # same box, every frame
        y = smooth_one_hot(labels, self.num_classes, self.label_smoothing)
        targets = y * lam + y.flip(0) * (1.0 - lam)
        return video, targets

    def __call__(
        self, video: Tensor, labels: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        self.last = self.sample(video.shape[-2], video.shape[-1], generator)
        return self.apply(video, labels, self.last)


__all__ = ["MixParams", "Mixup", "cutmix_box", "smooth_one_hot", "soft_cross_entropy"]
