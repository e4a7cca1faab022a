"""Clip RandAugment and random erasing: the two VideoMAE fine-tuning augmentations.

VideoMAE fine-tunes with ``--aa rand-m7-n4-mstd0.5-inc1 --train_interpolation bicubic`` and
``--reprob 0.25 --remode pixel --recount 1`` (``run_class_finetuning.py``). Its ``kinetics.py``
(``_aug_frame``) converts every frame to PIL and runs timm's RandAugment with one draw per clip
(its ``rand_augment.py`` applies each sampled op, with the same arguments, to every frame of the
list), and erases one box in "cube" mode (``random_erasing.py``: the same box on every frame, after
normalisation, fresh noise per frame). This module reimplements both on ``torch`` tensors, without
PIL, following the definitions in

* timm ``timm/data/auto_augment.py`` (``rand_augment_transform``, ``_RAND_INCREASING_TRANSFORMS``,
  ``AugmentOp``, the ``*_level_to_arg`` maps) and ``timm/data/random_erasing.py``,
  https://github.com/huggingface/pytorch-image-models;
* VideoMAE's copies of them, https://github.com/MCG-NJU/VideoMAE (``rand_augment.py``,
  ``random_erasing.py``, ``video_transforms.create_random_augment``);
* Pillow, for what each op does to the pixels (``ImageOps``, ``ImageEnhance``, ``Image.rotate`` /
  ``Image.transform`` and ``libImaging/Geometry.c``, ``Blend.c``, ``Filter.c``).

RandAugment (``ClipRandAugment``, built from a timm spec by ``clip_randaugment``)
-------------------------------------------------------------------------------
Per clip, ``n`` ops are drawn uniformly *with replacement* from the op set; each is applied with
probability ``p`` (0.5); its magnitude is ``m`` plus Gaussian noise of std ``mstd`` (``mstd`` over
100: uniform in [0, m]), clipped to [0, 10] (``mmax``); signed ops flip sign with probability 0.5.
One draw is applied identically to every frame. Magnitude ``m`` (of 10) maps to the op argument as
in timm, with ``l = m / 10``:

=====================  =====================================================================
Rotate                 +/- 30 l degrees, about the frame centre (PIL ``Image.rotate``)
ShearX / ShearY        +/- 0.3 l (PIL affine ``(1, s, 0, 0, 1, 0)`` / ``(1, 0, 0, s, 1, 0)``)
TranslateXRel / YRel   +/- 0.45 l of the width / height
PosterizeIncreasing    keep ``4 - int(4 l)`` bits (``Posterize``: ``int(4 l)``)
SolarizeIncreasing     invert values >= ``256 - int(256 l)`` (``Solarize``: ``int(256 l)``)
SolarizeAdd            add ``min(128, int(110 l))`` to values < 128, saturating at 255
*Increasing enhance    factor ``max(0.1, 1 +/- 0.9 l)`` (plain ``Color`` etc.: ``0.1 + 1.8 l``)
AutoContrast, Equalize, Invert: no argument
=====================  =====================================================================

The "increasing" set (``inc1``) is AutoContrast, Equalize, Invert, Rotate, PosterizeIncreasing,
SolarizeIncreasing, SolarizeAdd, Color/Contrast/Brightness/SharpnessIncreasing, ShearX, ShearY,
TranslateXRel, TranslateYRel.
Cost: one CPU thread, as in DataLoader workers (a second thread only adds synchronisation on
clips this small). A 16 x 224 x 224 clip takes about 30-40 ms on average for
``rand-m7-n4-mstd0.5-inc1`` (PIL frame by frame, as VideoMAE does: about 60 ms).

Where it runs: VideoMAE applies RandAugment to the decoded frames *before* its random resized
crop; ``transforms.train_transform(randaug=...)`` applies it to the crop (timm's image order),
which costs the crop's area instead of the frame's. The geometric arguments are relative, so the
two orders give similar, not identical, distributions.

Deviations: Posterize to 0 bits gives black (recent Pillow raises; older Pillow gave black);
``inc0`` means *not* increasing (timm's parser treats any ``inc`` value as true); ``t``/``w``
(weighted op sets) are not supported.

Random erasing (``RandomErasing``)
----------------------------------
Applied **after** ``Normalize``, to float ``(C, T, H, W)`` clips, as in timm / VideoMAE: with
probability ``prob`` one box (``count`` boxes at most) is erased on every frame at the same place;
area fraction uniform in [0.02, 1/3] (divided by the box count), aspect ratio log-uniform in
[0.3, 1/0.3], up to 100 attempts for a box that fits (VideoMAE's cube mode). ``pixel`` mode fills it
with standard normal noise drawn per pixel, channel and frame (in normalised units, i.e. noise
around the dataset mean), ``rand`` with one normal value per channel and frame, ``const`` with 0.

Randomness
----------
Everything is drawn from the ``numpy.random.Generator`` passed in. ``ClipRandAugment`` makes the
same draws on every call (op, coin, magnitude and sign for each of the ``n`` slots, whether or not
the op runs); ``RandomErasing`` draws one value (the seed of its own generator). So the stream seen
by later transforms depends only on its state before, not on the clip or on which ops ran."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from .clipcheck import Rng, need_rng
from .frame_ops import (
    FILL,
    Interpolation,
    auto_contrast,
    brightness,
    check_rgb,
    check_u8,
    color,
    contrast,
    equalize,
    invert,
    posterize,
    rotate,
    sharpness,
    shear_x,
    shear_y,
    solarize,
    solarize_add,
    translate_x_rel,
    translate_y_rel,
)

LEVEL_DENOM = 10.0  # timm's _LEVEL_DENOM: magnitudes are out of 10

INCREASING_OPS: tuple[str, ...] = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "PosterizeIncreasing",
    "SolarizeIncreasing",
    "SolarizeAdd",
    "ColorIncreasing",
    "ContrastIncreasing",
    "BrightnessIncreasing",
    "SharpnessIncreasing",
    "ShearX",
    "ShearY",
    "TranslateXRel",
    "TranslateYRel",
)
STANDARD_OPS: tuple[str, ...] = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "Posterize",
    "Solarize",
    "SolarizeAdd",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "TranslateXRel",
    "TranslateYRel",
)
SIGNED_OPS = frozenset(
    {
        "Rotate",
        "ShearX",
        "ShearY",
        "TranslateXRel",
        "TranslateYRel",
        "ColorIncreasing",
        "ContrastIncreasing",
        "BrightnessIncreasing",
        "SharpnessIncreasing",
    }
)

# --------------------------------------------------------------------------------------------
# RandAugment

_GEOMETRIC = {
    "Rotate": rotate,
    "ShearX": shear_x,
    "ShearY": shear_y,
    "TranslateXRel": translate_x_rel,
    "TranslateYRel": translate_y_rel,
}
_PIXEL: dict[str, Callable[..., torch.Tensor]] = {
    "AutoContrast": auto_contrast,
    "Equalize": equalize,
    "Invert": invert,
    "Posterize": posterize,
    "PosterizeIncreasing": posterize,
    "Solarize": solarize,
    "SolarizeIncreasing": solarize,
    "SolarizeAdd": solarize_add,
    "Color": color,
    "ColorIncreasing": color,
    "Contrast": contrast,
    "ContrastIncreasing": contrast,
    "Brightness": brightness,
    "BrightnessIncreasing": brightness,
    "Sharpness": sharpness,
    "SharpnessIncreasing": sharpness,
}
KNOWN_OPS = frozenset(_GEOMETRIC) | frozenset(_PIXEL)


def level_to_args(
    name: str, magnitude: float, negate: bool = False, translate_pct: float = 0.45
) -> tuple:
    """timm's ``LEVEL_TO_ARG[name](magnitude)`` with the sign chosen by ``negate``."""
    lvl = magnitude / LEVEL_DENOM
    sign = -1.0 if negate else 1.0
    if name in ("AutoContrast", "Equalize", "Invert"):
        return ()
    if name == "Rotate":
        return (sign * (lvl * 30.0),)
    if name in ("ShearX", "ShearY"):
        return (sign * (lvl * 0.3),)
    if name in ("TranslateXRel", "TranslateYRel"):
        return (sign * (lvl * translate_pct),)
    if name == "Posterize":
        return (int(lvl * 4),)
    if name == "PosterizeIncreasing":
        return (4 - int(lvl * 4),)
    if name == "Solarize":
        return (min(256, int(lvl * 256)),)
    if name == "SolarizeIncreasing":
        return (256 - min(256, int(lvl * 256)),)
    if name == "SolarizeAdd":
        return (min(128, int(lvl * 110)),)
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return (lvl * 1.8 + 0.1,)
    if name in (
        "ColorIncreasing",
        "ContrastIncreasing",
        "BrightnessIncreasing",
        "SharpnessIncreasing",
    ):
        return (max(0.1, 1.0 + sign * (lvl * 0.9)),)
    raise ValueError(f"unknown RandAugment op {name!r}; known: {sorted(KNOWN_OPS)}")


@dataclass(frozen=True)
class OpDraw:
    """One op slot of a RandAugment draw: which op, whether it runs, and its argument."""

    name: str
    applied: bool
    magnitude: float
    negate: bool
    args: tuple


class ClipRandAugment:
    """timm RandAugment with one draw per clip, applied identically to every frame.

    Defaults are VideoMAE's ``rand-m7-n4-mstd0.5-inc1`` with bicubic geometry and fill 128.
    Input and output: uint8 ``(T, H, W, C)`` (C = 3 RGB, or 1 grey).
    """

    def __init__(
        self,
        magnitude: float = 7,
        num_ops: int = 4,
        magnitude_std: float = 0.5,
        prob: float = 0.5,
        increasing: bool = True,
        magnitude_max: float | None = None,
        ops: Sequence[str] | None = None,
        interpolation: Interpolation = "bicubic",
        fill: int | Sequence[int] = FILL,
        translate_pct: float = 0.45,
    ) -> None:
        if magnitude < 0:
            raise ValueError(f"magnitude must be >= 0, got {magnitude}")
        if int(num_ops) != num_ops or num_ops < 0:
            raise ValueError(f"num_ops must be an int >= 0, got {num_ops}")
        if not magnitude_std >= 0:
            raise ValueError(f"magnitude_std must be >= 0, got {magnitude_std}")
        if not 0 <= prob <= 1:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        if magnitude_max is not None and magnitude_max <= 0:
            raise ValueError(f"magnitude_max must be > 0, got {magnitude_max}")
        if interpolation not in ("nearest", "bilinear", "bicubic"):
            raise ValueError(
                f"interpolation must be nearest, bilinear or bicubic, got {interpolation!r}"
            )
        chosen = tuple(ops) if ops is not None else (INCREASING_OPS if increasing else STANDARD_OPS)
        unknown = [o for o in chosen if o not in KNOWN_OPS]
        if unknown or not chosen:
            raise ValueError(f"unknown RandAugment ops {unknown}; known: {sorted(KNOWN_OPS)}")
        self.magnitude = float(magnitude)
        self.num_ops = int(num_ops)
        # timm: mstd > 100 means uniform sampling in [0, magnitude]
        self.magnitude_std = math.inf if magnitude_std > 100 else float(magnitude_std)
        self.prob = float(prob)
        self.magnitude_max = LEVEL_DENOM if magnitude_max is None else float(magnitude_max)
        self.ops = chosen
        self.interpolation = interpolation
        self.fill = fill
        self.translate_pct = float(translate_pct)

    def sample(self, rng: np.random.Generator) -> list[OpDraw]:
        """Draw the op slots for one clip. The same draws are made whatever comes out (op,
        coin, magnitude unless ``magnitude_std`` is 0, sign), so the rng ends up in a state that
        depends only on its state before."""
        n = self.num_ops
        which = rng.integers(0, len(self.ops), size=n)
        coin = rng.random(n)
        if self.magnitude_std == math.inf:
            mags = rng.uniform(0.0, self.magnitude, size=n)
        elif self.magnitude_std > 0:
            mags = rng.normal(self.magnitude, self.magnitude_std, size=n)
        else:
            mags = np.full(n, self.magnitude)
        signs = rng.random(n)
        mags = np.clip(mags, 0.0, self.magnitude_max)
        draws = []
        for k in range(n):
            name = self.ops[int(which[k])]
            negate = bool(signs[k] < 0.5) and name in SIGNED_OPS
            mag = float(mags[k])
            draws.append(
                OpDraw(
                    name=name,
                    applied=bool(coin[k] < self.prob),
                    magnitude=mag,
                    negate=negate,
                    args=level_to_args(name, mag, negate, self.translate_pct),
                )
            )
        return draws

    def apply(self, clip: torch.Tensor, draws: Sequence[OpDraw]) -> torch.Tensor:
        """Run the applied slots of ``draws`` on ``clip`` in order."""
        T, H, W, C = check_u8(clip, "ClipRandAugment")
        check_rgb(C, "ClipRandAugment")
        for dr in draws:
            if not dr.applied:
                continue
            if dr.name in _GEOMETRIC:
                clip = _GEOMETRIC[dr.name](
                    clip, *dr.args, interpolation=self.interpolation, fill=self.fill
                )
            else:
                clip = _PIXEL[dr.name](clip, *dr.args)
        return clip

    def __call__(self, clip: torch.Tensor, rng: Rng = None) -> torch.Tensor:
        check_u8(clip, "ClipRandAugment")
        return self.apply(clip, self.sample(need_rng(rng, "ClipRandAugment")))

    def __repr__(self) -> str:
        std = "uniform" if self.magnitude_std == math.inf else self.magnitude_std
        return (
            f"ClipRandAugment(m={self.magnitude:g}, n={self.num_ops}, mstd={std}, "
            f"p={self.prob}, mmax={self.magnitude_max:g}, ops={len(self.ops)}, "
            f"interpolation={self.interpolation!r}, fill={self.fill})"
        )


_SPEC_KEYS = {
    "m": "magnitude",
    "n": "num_ops",
    "mstd": "magnitude_std",
    "mmax": "magnitude_max",
    "p": "prob",
    "inc": "increasing",
}


def parse_randaugment_spec(spec: str) -> dict:
    """Keyword arguments of ``ClipRandAugment`` for a timm spec such as ``rand-m9-n3-mstd0.5``.

    Sections after ``rand``, in any order: ``m`` magnitude (int, default 10), ``n`` ops per clip
    (int, default 2), ``mstd`` magnitude noise std (float, default 0; over 100: uniform),
    ``mmax`` magnitude upper bound (default 10), ``p`` probability of each op (default 0.5),
    ``inc`` 1 for the increasing op set (default 0). Raises ``ValueError`` naming the bad part.
    """
    if not isinstance(spec, str):
        raise ValueError(f"RandAugment spec must be a string, got {type(spec).__name__}")
    parts = spec.split("-")
    if parts[0] != "rand":
        raise ValueError(f"RandAugment spec {spec!r} must start with 'rand', got {parts[0]!r}")
    kw: dict = {
        "magnitude": 10,
        "num_ops": 2,
        "magnitude_std": 0.0,
        "prob": 0.5,
        "increasing": False,
        "magnitude_max": None,
    }
    seen: set[str] = set()
    known = ", ".join(_SPEC_KEYS)
    for part in parts[1:]:
        match = re.fullmatch(r"([a-z]+)(\d.*)", part)
        if match is None:
            raise ValueError(
                f"bad part {part!r} in RandAugment spec {spec!r}: expected a key ({known}) "
                "followed by a number, e.g. 'm9'"
            )
        key, val = match.groups()
        if key not in _SPEC_KEYS:
            raise ValueError(
                f"unknown key {key!r} in part {part!r} of RandAugment spec {spec!r}; "
                f"known keys: {known}"
            )
        if key in seen:
            raise ValueError(f"part {part!r} repeats key {key!r} in RandAugment spec {spec!r}")
        seen.add(key)
        try:
            if key in ("m", "n", "inc"):
                num: float = int(val)
            else:
                num = float(val)
        except ValueError:
            kind = "an integer" if key in ("m", "n", "inc") else "a number"
            raise ValueError(
                f"bad value in part {part!r} of RandAugment spec {spec!r}: "
                f"{key!r} takes {kind}, got {val!r}"
            ) from None
        if key == "inc" and num not in (0, 1):
            raise ValueError(
                f"bad value in part {part!r} of RandAugment spec {spec!r}: inc takes 0 or 1"
            )
        if key == "p" and not 0 <= num <= 1:
            raise ValueError(
                f"bad value in part {part!r} of RandAugment spec {spec!r}: p must be in [0, 1]"
            )
        if key in ("mmax",) and num <= 0:
            raise ValueError(
                f"bad value in part {part!r} of RandAugment spec {spec!r}: mmax must be > 0"
            )
        kw[_SPEC_KEYS[key]] = bool(num) if key == "inc" else num
    return kw


def clip_randaugment(
    spec: str = "rand-m7-n4-mstd0.5-inc1",
    *,
    interpolation: Interpolation = "bicubic",
    fill: int | Sequence[int] = FILL,
    translate_pct: float = 0.45,
) -> ClipRandAugment:
    """Clip RandAugment from a timm spec; the default is VideoMAE's fine-tuning recipe.

    ``interpolation`` is for Rotate / Shear / Translate (VideoMAE: ``--train_interpolation
    bicubic``), ``fill`` the value of uncovered pixels (timm: 128).
    """
    return ClipRandAugment(
        **parse_randaugment_spec(spec),
        interpolation=interpolation,
        fill=fill,
        translate_pct=translate_pct,
    )


# --------------------------------------------------------------------------------------------
# random erasing


class RandomErasing:
    """VideoMAE / timm random erasing for normalised float ``(C, T, H, W)`` clips.

    With probability ``prob``, ``k`` boxes (``k`` uniform in [``min_count``, ``count``]) are
    erased, each at the same place on every frame. A box's area is ``uniform(min_area, max_area)
    / k`` of the frame, its aspect ratio log-uniform in [``min_aspect``, ``max_aspect``] (default
    ``1 / min_aspect``); up to ``attempts`` tries for one that fits strictly inside the frame.
    Fill: ``pixel`` standard normal per pixel, channel and frame; ``rand`` one normal value per
    channel and frame; ``const`` zeros. Returns a new tensor unless ``inplace``.
    """

    def __init__(
        self,
        prob: float = 0.25,
        mode: Literal["pixel", "rand", "const"] = "pixel",
        count: int = 1,
        *,
        min_count: int = 1,
        min_area: float = 0.02,
        max_area: float = 1 / 3,
        min_aspect: float = 0.3,
        max_aspect: float | None = None,
        attempts: int = 100,
        inplace: bool = False,
    ) -> None:
        if not 0 <= prob <= 1:
            raise ValueError(f"erase probability must be in [0, 1], got {prob}")
        if mode not in ("pixel", "rand", "const"):
            raise ValueError(f"erase mode must be 'pixel', 'rand' or 'const', got {mode!r}")
        if not 1 <= int(min_count) <= int(count):
            raise ValueError(f"need 1 <= min_count <= count, got {min_count}, {count}")
        if not 0 < min_area <= max_area <= 1:
            raise ValueError(f"need 0 < min_area <= max_area <= 1, got {min_area}, {max_area}")
        max_aspect = 1 / min_aspect if max_aspect is None else max_aspect
        if not 0 < min_aspect <= max_aspect:
            raise ValueError(f"need 0 < min_aspect <= max_aspect, got {min_aspect}, {max_aspect}")
        if int(attempts) < 1:
            raise ValueError(f"attempts must be >= 1, got {attempts}")
        self.prob = float(prob)
        self.mode = mode
        self.count, self.min_count = int(count), int(min_count)
        self.min_area, self.max_area = float(min_area), float(max_area)
        self.log_aspect = (math.log(min_aspect), math.log(max_aspect))
        self.attempts = int(attempts)
        self.inplace = bool(inplace)

    def params(self, H: int, W: int, rng: np.random.Generator) -> list[tuple[int, int, int, int]]:
        """(top, left, h, w) of the boxes to erase; empty when the coin says no."""
        if rng.random() >= self.prob:
            return []
        k = (
            self.count
            if self.count == self.min_count
            else int(rng.integers(self.min_count, self.count + 1))
        )
        boxes = []
        for _ in range(k):
            for _ in range(self.attempts):
                target = rng.uniform(self.min_area, self.max_area) * H * W / k
                aspect = math.exp(rng.uniform(*self.log_aspect))
                h = int(round(math.sqrt(target * aspect)))
                w = int(round(math.sqrt(target / aspect)))
                if w < W and h < H:
                    top = int(rng.integers(0, H - h + 1))
                    left = int(rng.integers(0, W - w + 1))
                    boxes.append((top, left, h, w))
                    break
        return boxes

    def __call__(self, clip: torch.Tensor, rng: Rng = None) -> torch.Tensor:
        if not isinstance(clip, torch.Tensor) or clip.ndim != 4 or not clip.is_floating_point():
            what = (
                f"{tuple(clip.shape)} {clip.dtype}"
                if isinstance(clip, torch.Tensor)
                else type(clip).__name__
            )
            raise ValueError(
                "RandomErasing expects a normalised float clip (C, T, H, W) - put it "
                f"after Normalize; got {what}"
            )
        # one draw from the caller's stream, whatever happens below
        local = np.random.default_rng(int(need_rng(rng, "RandomErasing").integers(2**63)))
        C, T, H, W = (int(s) for s in clip.shape)
        boxes = self.params(H, W, local)
        if not boxes:
            return clip
        out = clip if self.inplace else clip.clone()
        for top, left, h, w in boxes:
            if self.mode == "pixel":
                noise = local.standard_normal((C, T, h, w), dtype=np.float32)
            elif self.mode == "rand":
                noise = local.standard_normal((C, T, 1, 1), dtype=np.float32)
            else:
                noise = np.zeros((1, 1, 1, 1), dtype=np.float32)
            out[:, :, top : top + h, left : left + w] = torch.from_numpy(noise).to(out)
        return out

    def __repr__(self) -> str:
        return (
            f"RandomErasing(prob={self.prob}, mode={self.mode!r}, count={self.count}, "
            f"min_count={self.min_count})"
        )
