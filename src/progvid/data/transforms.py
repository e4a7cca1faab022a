"""Clip-level spatial transforms: one crop / flip decision for every frame of a clip.

Dtype contract
--------------
* Input clips are ``uint8`` tensors shaped ``(T, H, W, C)`` (what the decoder yields).
* Every spatial transform (crops, resize, flip) returns the same layout and dtype. A resize
  runs torch's native antialiased bilinear kernel for ``uint8`` on all frames in one
  ``interpolate`` call (no float round trip; it differs from resizing in float and rounding by
  at most 1 grey level) - this keeps memory 4x smaller between steps and makes ``Normalize``
  the single place where floats appear.
* ``Normalize`` returns ``float32`` ``(C, T, H, W)``, the layout video models consume.

Each transform is a callable ``__call__(clip, rng) -> clip``; all randomness comes from the
``numpy.random.Generator`` passed in (deterministic transforms accept and ignore it).
``ThreeCrop`` returns a list of clips; ``Compose`` applies later steps to each element.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from progvid.constants import IMAGENET_MEAN, IMAGENET_STD

from .augment import RandomErasing, clip_randaugment
from .clipcheck import Rng, check_clip, need_rng


def _positive(size: int, what: str = "size") -> int:
    if int(size) < 1:
        raise ValueError(f"{what} must be a positive int, got {size}")
    return int(size)


def crop(clip: torch.Tensor, top: int, left: int, h: int, w: int) -> torch.Tensor:
    """The same ``h x w`` window of every frame (a view, no copy)."""
    H, W = check_clip(clip)
    if top < 0 or left < 0 or top + h > H or left + w > W or h < 1 or w < 1:
        raise ValueError(f"crop ({top}, {left}, {h}, {w}) does not fit a {H}x{W} clip")
    return clip[:, top : top + h, left : left + w, :]


def resize(clip: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Bilinear (antialiased) resize of all frames at once; ``uint8`` in, ``uint8`` out."""
    H, W = check_clip(clip)
    if (H, W) == (h, w):
        return clip
    x = clip.permute(0, 3, 1, 2)  # (T, C, H, W) view, channels-last strides
    if clip.dtype != torch.uint8:
        x = x.float()
    # uint8 channels-last input has a native antialiased bilinear kernel: no float round trip
    x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    return x.permute(0, 2, 3, 1).contiguous()


class Compose:
    """Apply transforms in order; after one returns a list, later ones map over its items.

    With ``views=True`` the result is always a list (multi-view testing).
    """

    def __init__(self, transforms: Sequence[Callable[..., Any]], views: bool = False) -> None:
        self.transforms = list(transforms)
        self.views = views

    def __call__(self, clip: Any, rng: Rng = None) -> Any:
        for tf in self.transforms:
            clip = [tf(c, rng) for c in clip] if isinstance(clip, list) else tf(clip, rng)
        return [clip] if self.views and not isinstance(clip, list) else clip

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r}, views={self.views})"


def _fixed_offsets(H: int, W: int, h: int, w: int, more: bool) -> list[tuple[int, int]]:
    """(top, left) grid positions of TSN's fixed crops: corners and centre, plus extras."""
    hs, ws = (H - h) // 4, (W - w) // 4  # quarter steps of the free room
    grid = [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2)]  # corners + centre, in quarter units
    if more:
        grid += [(2, 0), (2, 4), (4, 2), (0, 2), (1, 1), (1, 3), (3, 1), (3, 3)]
    return [(i * hs, j * ws) for i, j in grid]


class MultiScaleCrop:
    """TSN / VideoMAE multi-scale crop, then resize to ``size x size``.

    Candidate side lengths are ``int(min(H, W) * s)`` for ``s`` in ``scales`` (lengths within
    3 px of ``size`` snap to ``size``); height and width are drawn independently among pairs
    whose scale indices differ by at most ``max_distort``. With ``fix_crop`` the offset comes
    from a fixed grid (4 corners + centre; ``more_fix_crop`` adds centre-left/right/top/bottom
    and the 4 quarter points), otherwise it is uniform.
    """

    def __init__(
        self,
        size: int,
        scales: Sequence[float] = (1, 0.875, 0.75, 0.66),
        max_distort: int = 1,
        fix_crop: bool = True,
        more_fix_crop: bool = True,
    ) -> None:
        self.size = _positive(size)
        self.scales = tuple(float(s) for s in scales)
        if not self.scales or not all(0 < s <= 1 for s in self.scales):
            raise ValueError(f"scales must be non-empty and in (0, 1], got {scales}")
        if max_distort < 0:
            raise ValueError(f"max_distort must be >= 0, got {max_distort}")
        self.max_distort = int(max_distort)
        self.fix_crop, self.more_fix_crop = bool(fix_crop), bool(more_fix_crop)

    def crop_sizes(self, H: int, W: int) -> list[tuple[int, int]]:
        """All allowed (crop_h, crop_w) pairs for an ``H x W`` clip."""
        base = min(H, W)
        sides = [max(1, int(base * s)) for s in self.scales]
        # snapping to the output size skips a near-identity resize; only when it still fits
        sides = [self.size if abs(x - self.size) < 3 and self.size <= base else x for x in sides]
        return [
            (h, w)
            for i, h in enumerate(sides)
            for j, w in enumerate(sides)
            if abs(i - j) <= self.max_distort
        ]

    def params(self, H: int, W: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """(top, left, h, w) of one random crop."""
        pairs = self.crop_sizes(H, W)
        h, w = pairs[int(rng.integers(len(pairs)))]
        if self.fix_crop:
            offsets = _fixed_offsets(H, W, h, w, self.more_fix_crop)
            top, left = offsets[int(rng.integers(len(offsets)))]
        else:
            top, left = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
        return top, left, h, w

    def __call__(self, clip: torch.Tensor, rng: Rng = None) -> torch.Tensor:
        H, W = check_clip(clip)
        top, left, h, w = self.params(H, W, need_rng(rng, "MultiScaleCrop"))
        return resize(crop(clip, top, left, h, w), self.size, self.size)


def rrc_params(
    H: int,
    W: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    rng: np.random.Generator,
    attempts: int = 10,
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of an Inception-style random resized crop.

    Area fraction uniform in ``scale``, aspect ratio ``w / h`` log-uniform in ``ratio``; after
    ``attempts`` misses, fall back to the largest centred crop with aspect within ``ratio``.
    """
    area = H * W
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(attempts):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= W and 0 < h <= H:
            return int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1)), h, w
    in_ratio = W / H
    if in_ratio < ratio[0]:  # too tall: full width, cut height
        w, h = W, min(H, int(round(W / ratio[0])))
    elif in_ratio > ratio[1]:  # too wide: full height, cut width
        h, w = H, min(W, int(round(H * ratio[1])))
    else:
        h, w = H, W
    return (H - h) // 2, (W - w) // 2, h, w


class RandomResizedCrop:
    """Inception-style random crop (area in ``scale``, log-uniform ``ratio``), resized square."""

    def __init__(
        self,
        size: int,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
    ) -> None:
        self.size = _positive(size)
        if not (0 < scale[0] <= scale[1] <= 1):
            raise ValueError(f"scale must satisfy 0 < lo <= hi <= 1, got {scale}")
        if not (0 < ratio[0] <= ratio[1]):
            raise ValueError(f"ratio must satisfy 0 < lo <= hi, got {ratio}")
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))

    def __call__(self, clip: torch.Tensor, rng: Rng = None) -> torch.Tensor:
        H, W = check_clip(clip)
        rng = need_rng(rng, "RandomResizedCrop")
        top, left, h, w = rrc_params(H, W, self.scale, self.ratio, rng)
        return resize(crop(clip, top, left, h, w), self.size, self.size)


class HorizontalFlip:
    """Mirror every frame left-right together with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0 <= p <= 1:
            raise ValueError(f"flip probability must be in [0, 1], got {p}")
        self.p = float(p)

    def __call__(self, clip: torch.Tensor, rng: Rng = None) -> torch.Tensor:
        check_clip(clip)
        # draw even when p is 0 or 1 so the rng stream does not depend on p
        if need_rng(rng, "HorizontalFlip").random() < self.p:
            return clip.flip(2)
        return clip


class ShortSideResize:
    """Resize so the shorter side is ``size``, keeping the aspect ratio."""

    def __init__(self, size: int) -> None:
        self.size = _positive(size)

    def __call__(self, clip: torch.Tensor, rng: Rng = None) -> torch.Tensor:
        H, W = check_clip(clip)
        if H <= W:
            return resize(clip, self.size, max(1, int(round(W * self.size / H))))
        return resize(clip, max(1, int(round(H * self.size / W))), self.size)


def _check_fits(H: int, W: int, size: int, who: str) -> None:
    if H < size or W < size:
        raise ValueError(f"{who}({size}) needs a clip at least {size}x{size}, got {H}x{W}")


class CenterCrop:
    """The centred ``size x size`` window."""

    def __init__(self, size: int) -> None:
        self.size = _positive(size)

    def __call__(self, clip: torch.Tensor, rng: Rng = None) -> torch.Tensor:
        H, W = check_clip(clip)
        _check_fits(H, W, self.size, "CenterCrop")
        return crop(clip, (H - self.size) // 2, (W - self.size) // 2, self.size, self.size)


class ThreeCrop:
    """Three ``size x size`` crops along the long side (left/centre/right, or top/centre/bottom
    for portrait clips), centred on the short side - VideoMAE's 3-crop testing."""

    def __init__(self, size: int) -> None:
        self.size = _positive(size)

    def __call__(self, clip: torch.Tensor, rng: Rng = None) -> list[torch.Tensor]:
        H, W = check_clip(clip)
        s = self.size
        _check_fits(H, W, s, "ThreeCrop")
        if W >= H:
            top = (H - s) // 2
            return [crop(clip, top, left, s, s) for left in (0, (W - s) // 2, W - s)]
        left = (W - s) // 2
        return [crop(clip, top, left, s, s) for top in (0, (H - s) // 2, H - s)]


class Normalize:
    """``uint8`` (T, H, W, C) -> ``float32`` (C, T, H, W) scaled to [0, 1] then standardised.

    ``mean`` / ``std`` are per channel in 0-1 units. Float input is taken as 0-255 values.
    """

    def __init__(
        self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
    ) -> None:
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"mean/std must have equal length and std > 0, got {mean}, {std}")
        self.mean = torch.tensor(mean, dtype=torch.float32)
        self.std = torch.tensor(std, dtype=torch.float32)

    def __call__(self, clip: torch.Tensor, rng: Rng = None) -> torch.Tensor:
        check_clip(clip)
        if clip.shape[-1] != len(self.mean):
            raise ValueError(f"clip has {clip.shape[-1]} channels, mean/std {len(self.mean)}")
        return normalize_clips(clip.permute(3, 0, 1, 2), self.mean, self.std)


class ChannelsFirst:
    """``uint8`` (T, H, W, C) -> ``uint8`` (C, T, H, W), left for the training side to
    normalise with `normalize_clips` (a quarter of the bytes to hand over and copy)."""

    def __call__(self, clip: torch.Tensor, rng: Rng = None) -> torch.Tensor:
        check_clip(clip)
        return clip.permute(3, 0, 1, 2)


def normalize_clips(video: torch.Tensor, mean: Sequence[float] | torch.Tensor,
                    std: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Channels-first clips (C, T, H, W) or batches (B, C, T, H, W), 0-255 values (uint8 or
    float), to float32 scaled to [0, 1] and standardised per channel, on their device. The
    same arithmetic wherever it runs (a loader worker or the training device), so a clip
    normalised in either place is bitwise the same."""
    mean = torch.as_tensor(mean, dtype=torch.float32, device=video.device)
    std = torch.as_tensor(std, dtype=torch.float32, device=video.device)
    # fold /255 into the affine map: one multiply-add pass over the clip
    scale = (1.0 / (255.0 * std)).view(-1, 1, 1, 1)
    shift = (-mean / std).view(-1, 1, 1, 1)
    # one float buffer, filled by the (possibly layout-changing) copy, then scaled in place
    x = torch.empty(video.shape, dtype=torch.float32, device=video.device)
    x.copy_(video)
    return x.mul_(scale).add_(shift)


def train_transform(
    size: int,
    *,
    crop: Literal["multiscale", "rrc"] = "multiscale",
    flip: bool = True,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    scales: Sequence[float] = (1, 0.875, 0.75, 0.66),
    rrc_scale: tuple[float, float] = (0.08, 1.0),
    randaug: str | bool | Callable[..., Any] | None = None,
    erase: float | bool | Callable[..., Any] | None = None,
    normalize: bool = True,
) -> Compose:
    """Random crop (multi-scale or RRC) -> optional flip -> [RandAugment] -> Normalize ->
    [random erasing]: (C, T, size, size). ``normalize=False`` ends with uint8 clips instead
    (`ChannelsFirst`; normalise them with `normalize_clips` where they are used); random
    erasing needs normalised clips and is refused then.

    ``randaug``: a timm RandAugment spec (``True``: VideoMAE's ``rand-m7-n4-mstd0.5-inc1``) or a
    clip transform, run on the uint8 crop. ``erase``: a random-erasing probability (``True``:
    VideoMAE's 0.25, pixel mode, one box) or a transform, run on the normalised clip. See
    :mod:`progvid.data.augment`. Both default to off.
    """
    if crop == "multiscale":
        steps: list[Callable[..., Any]] = [MultiScaleCrop(size, scales)]
    elif crop == "rrc":
        steps = [RandomResizedCrop(size, rrc_scale)]
    else:
        raise ValueError(f"crop must be 'multiscale' or 'rrc', got {crop!r}")
    if flip:
        steps.append(HorizontalFlip())
    if randaug is not None and randaug is not False:
        if randaug is True:
            steps.append(clip_randaugment())
        elif isinstance(randaug, str):
            steps.append(clip_randaugment(randaug))
        elif callable(randaug):
            steps.append(randaug)
        else:
            raise ValueError(
                f"randaug must be a spec string, a bool or a transform, got {randaug!r}"
            )
    erasing = erase is not None and erase is not False and erase != 0
    if not normalize:
        if erasing:
            raise ValueError("random erasing works on normalised clips: it needs normalize=True")
        return Compose([*steps, ChannelsFirst()])
    steps.append(Normalize(mean, std))
    if erase is not None and erase is not False:
        if erase is True:
            steps.append(RandomErasing())
        elif isinstance(erase, (int, float)):
            if erase:  # 0 means off
                steps.append(RandomErasing(float(erase)))
        elif callable(erase):
            steps.append(erase)
        else:
            raise ValueError(f"erase must be a probability, a bool or a transform, got {erase!r}")
    return Compose(steps)


def test_transform(
    size: int,
    *,
    short_side: int | None = None,
    crops: int = 1,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Compose:
    """Deterministic test views: resize the short side to ``short_side`` (default ``size``),
    then 1 centre crop or 3 crops; returns a list of ``float32`` (C, T, size, size) tensors."""
    if crops not in (1, 3):
        raise ValueError(f"crops must be 1 or 3, got {crops}")
    short = size if short_side is None else short_side
    if short < size:
        raise ValueError(f"short_side ({short}) must be >= crop size ({size})")
    cropper = CenterCrop(size) if crops == 1 else ThreeCrop(size)
    return Compose([ShortSideResize(short), cropper, Normalize(mean, std)], views=True)


# The name starts with "test_": stop pytest collecting it when a test module imports it.
test_transform.__test__ = False  # type: ignore[attr-defined]
