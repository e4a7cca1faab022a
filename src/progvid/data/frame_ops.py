"""Image ops on clips, frame by frame as Pillow computes them: the pixel and geometric
operations RandAugment draws from (`progvid.data.augment`), on uint8 (T, H, W, C) tensors.

What each op computes (uint8 ``(T, H, W, C)`` in and out, as Pillow does per frame):

* AutoContrast / Equalize use **per-frame, per-channel** histograms, and Contrast the per-frame
  mean grey level: exactly what VideoMAE gets by running the PIL op on each frame. The op and its
  argument are shared by the clip; the statistics are each frame's own.
* Color / Contrast / Brightness / Sharpness blend with a degenerate image like
  ``ImageEnhance``: grey ``L = (19595 R + 38470 G + 7471 B + 2^15) >> 16``; the grey image's mean;
  black; the 3x3 ``SMOOTH`` filter ``[[1,1,1],[1,5,1],[1,1,1]] / 13`` (rounded, one-pixel border
  left as is). The blend is Pillow's ``in1 + float32(alpha) * (in2 - in1)`` in float32, clipped and
  truncated.
* Rotate / Shear / Translate follow ``Image.transform(AFFINE)``: output pixel centre ``(x + .5,
  y + .5)`` maps to an input point; points outside the frame take the fill (128 in every channel,
  timm's ``_FILL``, which VideoMAE keeps); inside, taps beyond the border are clamped. Bicubic is
  Pillow's transform kernel (cubic convolution with ``a = -1``, not the ``-0.75`` of
  ``grid_sample``); results are clipped and truncated like Pillow's. Computed in float32 (Pillow:
  float64) with all frames gathered at once: within 1 grey level of Pillow (nearest: identical;
  every other op is identical to Pillow, see tests/test_augment.py).

"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from .clipcheck import check_clip

Interpolation = Literal["nearest", "bilinear", "bicubic"]

_TRUNC_BIAS = 1e-4  # see _weighted_gather()
_CHUNK_ELEMS = 1 << 18  # output values per block in _weighted_gather (1 MiB of float32)
FILL = 128  # timm's _FILL = (128, 128, 128); VideoMAE does not set img_mean


# the (T, H, W, C) uint8 clip contract, checked once per public op
Clip = torch.Tensor


def check_u8(clip: torch.Tensor, who: str) -> tuple[int, int, int, int]:
    check_clip(clip)
    if clip.dtype != torch.uint8:
        raise ValueError(f"{who} expects a uint8 clip (T, H, W, C), got dtype {clip.dtype}")
    if clip.device.type != "cpu":
        raise ValueError(f"{who} runs on CPU tensors (data loading), got one on {clip.device}")
    T, H, W, C = (int(s) for s in clip.shape)
    return T, H, W, C


def check_rgb(C: int, who: str) -> None:
    if C not in (1, 3):
        raise ValueError(f"{who} needs 1 (grey) or 3 (RGB) channels, got {C}")


# --------------------------------------------------------------------------------------------
# point ops


def invert(clip: Clip) -> Clip:
    """``ImageOps.invert``: ``255 - x``."""
    check_u8(clip, "invert")
    return torch.bitwise_not(clip)


def posterize(clip: Clip, bits: int) -> Clip:
    """``ImageOps.posterize``: keep the ``bits`` most significant bits (0 bits: black)."""
    check_u8(clip, "posterize")
    bits = int(bits)
    if bits >= 8:
        return clip
    if bits <= 0:
        return torch.zeros_like(clip, memory_format=torch.contiguous_format)
    return torch.bitwise_and(clip, (0xFF << (8 - bits)) & 0xFF)


def solarize(clip: Clip, threshold: int) -> Clip:
    """``ImageOps.solarize``: ``255 - x`` where ``x >= threshold``."""
    check_u8(clip, "solarize")
    threshold = int(threshold)
    if threshold > 255:
        return clip
    flip = (clip >= threshold).to(torch.uint8).neg_()  # 255 where inverted, else 0
    return torch.bitwise_xor(clip, flip)


def solarize_add(clip: Clip, add: int, threshold: int = 128) -> Clip:
    """timm ``solarize_add``: ``min(255, x + add)`` where ``x < threshold``."""
    check_u8(clip, "solarize_add")
    add, threshold = int(add), int(threshold)
    if add == 0 or threshold <= 0:
        return clip
    if 0 < add and threshold + add <= 256:  # no uint8 overflow where it is used (timm's case)
        added = clip + add
    else:
        added = (clip.to(torch.int16) + add).clamp_(0, 255).to(torch.uint8)
    return torch.where(clip < threshold, added, clip)


def _apply_lut(clip: Clip, lut: torch.Tensor) -> Clip:
    """``out[t, ..., c] = lut[t, c, clip[t, ..., c]]`` for a (T, C, 256) uint8 table."""
    T, H, W, C = clip.shape
    base = (torch.arange(T * C, dtype=torch.int32) * 256).view(T, 1, 1, C)
    idx = clip.to(torch.int32).add_(base)
    return lut.reshape(-1).index_select(0, idx.view(-1)).view(T, H, W, C)


def _histograms(clip: Clip) -> torch.Tensor:
    """Per-frame, per-channel 256-bin histograms, int64 (T, C, 256)."""
    T, H, W, C = clip.shape
    # bincount of a uint8 tensor is fast; one call per frame and channel
    hists = [
        torch.bincount(clip[t, :, :, c].reshape(-1), minlength=256)
        for t in range(T)
        for c in range(C)
    ]
    return torch.stack(hists).view(T, C, 256)


def auto_contrast(clip: Clip) -> Clip:
    """``ImageOps.autocontrast`` (cutoff 0) of each frame and channel: stretch [lo, hi] to
    [0, 255] with Pillow's LUT ``int(i * 255 / (hi - lo) - lo * 255 / (hi - lo))``."""
    check_u8(clip, "auto_contrast")
    lo = clip.amin(dim=(1, 2)).numpy().astype(np.int64)[..., None]  # (T, C, 1)
    hi = clip.amax(dim=(1, 2)).numpy().astype(np.int64)[..., None]
    keep = hi <= lo
    # numpy float64 in Pillow's operation order (torch's scalar / tensor goes via reciprocal)
    scale = 255.0 / np.maximum(hi - lo, 1)
    offset = -lo * scale
    ramp = np.arange(256)
    lut = np.clip(np.trunc(ramp * scale + offset), 0, 255)
    lut = np.where(keep, ramp, lut).astype(np.uint8)
    return _apply_lut(clip, torch.from_numpy(lut))


def equalize(clip: Clip) -> Clip:
    """``ImageOps.equalize`` of each frame and channel (Pillow's integer LUT construction)."""
    check_u8(clip, "equalize")
    hist = _histograms(clip)  # (T, C, 256)
    nonzero = hist > 0
    last = 255 - nonzero.flip(-1).to(torch.uint8).argmax(-1, keepdim=True)  # last used bin
    step = (hist.sum(-1, keepdim=True) - hist.gather(-1, last)) // 255
    cum = hist.cumsum(-1) - hist  # pixels below each value
    lut = ((step // 2 + cum) // step.clamp(min=1)).clamp_(max=255)
    keep = (nonzero.sum(-1, keepdim=True) <= 1) | (step == 0)
    lut = torch.where(keep, torch.arange(256), lut).to(torch.uint8)
    return _apply_lut(clip, lut)


# --------------------------------------------------------------------------------------------
# ImageEnhance


def _blend(degenerate: torch.Tensor | float, image: torch.Tensor, factor: float) -> Clip:
    """Pillow ``Image.blend(degenerate, image, factor)``: float32 ``d + alpha * (x - d)``,
    clipped to [0, 255] and truncated to uint8. ``image`` is float32 and is overwritten."""
    alpha = float(np.float32(factor))  # ImagingBlend takes a C float
    if isinstance(degenerate, float) and degenerate == 0.0:  # 0 + alpha * x == alpha * x
        out = image.mul_(alpha)
    else:
        # a separate multiply and add: the two float32 roundings of Pillow's C expression
        out = image.sub_(degenerate).mul_(alpha).add_(degenerate)
    return out.clamp_(0, 255).to(torch.uint8)


def _grey(clip: Clip) -> torch.Tensor:
    """Pillow's RGB -> L conversion ``(19595 R + 38470 G + 7471 B + 2^15) >> 16`` as float32
    (T, H, W, 1). Exact: every partial sum is an integer below 2^24."""
    x = clip.float()
    if clip.shape[-1] == 1:
        return x
    weights = torch.tensor([[19595.0], [38470.0], [7471.0]])
    return torch.matmul(x, weights).add_(32768.0).div_(65536.0).floor_()


def color(clip: Clip, factor: float) -> Clip:
    """``ImageEnhance.Color``: blend with the grey image (0: grey, 1: unchanged)."""
    T, H, W, C = check_u8(clip, "color")
    check_rgb(C, "color")
    if C == 1 or factor == 1.0:
        return clip
    return _blend(_grey(clip), clip.float(), factor)


def contrast(clip: Clip, factor: float) -> Clip:
    """``ImageEnhance.Contrast``: blend with each frame's mean grey level (rounded)."""
    T, H, W, C = check_u8(clip, "contrast")
    check_rgb(C, "contrast")
    if factor == 1.0:
        return clip
    total = _grey(clip).sum(dim=(1, 2, 3), dtype=torch.float64)  # exact integer sums
    mean = torch.floor(total / (H * W) + 0.5).float().view(T, 1, 1, 1)
    return _blend(mean, clip.float(), factor)


def brightness(clip: Clip, factor: float) -> Clip:
    """``ImageEnhance.Brightness``: blend with black, i.e. scale by ``factor``."""
    check_u8(clip, "brightness")
    if factor == 1.0:
        return clip
    return _blend(0.0, clip.float(), factor)


def sharpness(clip: Clip, factor: float) -> Clip:
    """``ImageEnhance.Sharpness``: blend with the ``SMOOTH``-filtered frame (factor > 1
    sharpens). Pillow leaves the one-pixel border of the filtered image unfiltered."""
    T, H, W, C = check_u8(clip, "sharpness")
    if factor == 1.0:
        return clip
    x = clip.float()
    smooth = x.clone()
    if H >= 3 and W >= 3:
        rows = x[:, :-2] + x[:, 1:-1] + x[:, 2:]
        box = rows[:, :, :-2] + rows[:, :, 1:-1] + rows[:, :, 2:]
        total = box.add_(x[:, 1:-1, 1:-1], alpha=4.0)  # centre weight 5 = 1 + 4
        smooth[:, 1:-1, 1:-1] = total.div_(13.0).add_(0.5).floor_()
    return _blend(smooth, x, factor)


# --------------------------------------------------------------------------------------------
# geometry


def _cubic_weights(d: np.ndarray) -> list[np.ndarray]:
    """Pillow's transform bicubic (Geometry.c ``BICUBIC``: cubic convolution, a = -1) for the
    taps at -1, 0, 1, 2 around the sample point, fraction ``d`` in [0, 1)."""
    d2, d3 = d * d, d * d * d
    return [-d + 2 * d2 - d3, 1 - 2 * d2 + d3, d + d2 - d3, d3 - d2]


def _nearest_source(
    a: float, b: float, c: float, d: float, e: float, f: float, sx: np.ndarray, sy: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Source pixel of Pillow's nearest-neighbour affine transform (``ImagingTransformAffine``):
    16.16 fixed point when a rotation/shear term is present and coordinates stay small, else the
    floor of the float64 position."""
    H, W = sx.shape
    corners_ok = all(
        abs(x * a + y * b + c) < 32768.0 and abs(x * d + y * e + f) < 32768.0
        for x, y in ((0, 0), (W, H), (0, H), (W, 0))
    )
    if (b == 0 and d == 0) or not corners_ok:
        return np.floor(sx), np.floor(sy)

    def fix(v: float) -> int:
        return math.floor(v * 65536.0 + 0.5)

    xs = np.arange(W, dtype=np.int64)[None, :]
    ys = np.arange(H, dtype=np.int64)[:, None]
    xx = fix(c + a * 0.5 + b * 0.5) + xs * fix(a) + ys * fix(b)
    yy = fix(f + d * 0.5 + e * 0.5) + xs * fix(d) + ys * fix(e)
    return (xx >> 16).astype(np.float64), (yy >> 16).astype(np.float64)


def _fill_values(fill: int | Sequence[int], C: int) -> torch.Tensor:
    vals = [int(fill)] * C if isinstance(fill, (int, np.integer)) else [int(v) for v in fill]
    if len(vals) != C or not all(0 <= v <= 255 for v in vals):
        raise ValueError(f"fill must be one 0-255 value or {C} of them, got {fill}")
    return torch.tensor(vals, dtype=torch.uint8)


def _weighted_gather(planes: torch.Tensor, taps: list[tuple[np.ndarray, np.ndarray]]) -> Clip:
    """``sum_k w_k[p] * planes[idx_k[p]]`` per output pixel ``p``, truncated to uint8 like Pillow.

    Runs over blocks of output pixels so that the gathered rows stay in cache (about 40% faster
    than whole-frame passes at 224 x 224 x 16 frames).
    """
    N, TC = planes.shape
    idxs = [torch.from_numpy(i.reshape(-1)) for i, _ in taps]
    wts = [torch.from_numpy(w.reshape(-1, 1).astype(np.float32)) for _, w in taps]
    rows = min(N, max(64, _CHUNK_ELEMS // TC))
    out = torch.empty(N, TC, dtype=torch.uint8)
    acc_buf, u8_buf, f_buf = (
        torch.empty(rows, TC),
        torch.empty(rows, TC, dtype=torch.uint8),
        torch.empty(rows, TC),
    )
    for s in range(0, N, rows):
        e = min(s + rows, N)
        acc, vals8, vals = acc_buf[: e - s], u8_buf[: e - s], f_buf[: e - s]
        for k, (idx, wt) in enumerate(zip(idxs, wts, strict=True)):
            torch.index_select(planes, 0, idx[s:e], out=vals8)
            vals.copy_(vals8)
            if k == 0:
                torch.mul(vals, wt[s:e], out=acc)
            else:
                acc.addcmul_(vals, wt[s:e])
        # Pillow truncates its float64 result; the bias keeps exact integers (flat areas, ramps)
        # from dropping by one through float32 round-off. Float -> uint8 copy truncates.
        out[s:e] = acc.add_(_TRUNC_BIAS).clamp_(0, 255)
    return out


def affine(
    clip: Clip,
    matrix: Sequence[float],
    *,
    interpolation: Interpolation = "bicubic",
    fill: int | Sequence[int] = FILL,
) -> Clip:
    """Pillow ``Image.transform(size, AFFINE, matrix, resample, fillcolor=fill)`` of every frame.

    Output pixel ``(x, y)`` reads the input at ``(a X + b Y + c, d X + e Y + f)`` with ``X = x +
    0.5``, ``Y = y + 0.5``; points outside the frame get ``fill``. Inside, the 1 (nearest), 2x2
    (bilinear) or 4x4 (bicubic) taps are clamped to the frame. All frames share one gather.
    """
    T, H, W, C = check_u8(clip, "affine")
    a, b, c, d, e, f = (float(v) for v in matrix)
    if interpolation not in ("nearest", "bilinear", "bicubic"):
        raise ValueError(
            f"interpolation must be nearest, bilinear or bicubic, got {interpolation!r}"
        )
    fill_px = _fill_values(fill, C)
    if (a, b, c, d, e, f) == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0):
        return clip
    X = np.arange(W, dtype=np.float64)[None, :] + 0.5
    Y = np.arange(H, dtype=np.float64)[:, None] + 0.5
    sx = a * X + b * Y + c  # same operation order as Pillow's affine_transform
    sy = d * X + e * Y + f
    inside = (sx >= 0) & (sx < W) & (sy >= 0) & (sy < H)
    if interpolation == "nearest":
        ix, iy = _nearest_source(a, b, c, d, e, f, sx, sy)
        inside = (ix >= 0) & (ix < W) & (iy >= 0) & (iy < H)
        offsets = [0]
        xs_w: list[np.ndarray] = [np.ones((1, 1))]
        ys_w: list[np.ndarray] = [np.ones((1, 1))]
    else:
        fx, fy = sx - 0.5, sy - 0.5
        ix, iy = np.floor(fx), np.floor(fy)
        dx, dy = fx - ix, fy - iy
        if interpolation == "bilinear":
            offsets = [0, 1]
            xs_w, ys_w = [1 - dx, dx], [1 - dy, dy]
        else:
            offsets = [-1, 0, 1, 2]
            xs_w, ys_w = _cubic_weights(dx), _cubic_weights(dy)
    taps = []  # (flat source index, weight), both (H, W)
    for oy, wy in zip(offsets, ys_w, strict=True):
        for ox, wx in zip(offsets, xs_w, strict=True):
            w = np.broadcast_to(wx * wy, (H, W))
            if not np.any(w[inside]):
                continue  # e.g. shears and translations read one row (or column) of taps
            rows = np.clip(iy + oy, 0, H - 1).astype(np.int64)
            cols = np.clip(ix + ox, 0, W - 1).astype(np.int64)
            taps.append((np.broadcast_to(rows * W + cols, (H, W)).copy(), w))
    if not taps:  # nothing of the frame is visible
        taps.append((np.zeros((H, W), dtype=np.int64), np.ones((H, W))))
    planes = clip.permute(1, 2, 0, 3).reshape(H * W, T * C)  # one row of T*C values per pixel
    if len(taps) == 1 and np.all(taps[0][1][inside] == 1.0):  # whole-pixel reads: no arithmetic
        out = planes.index_select(0, torch.from_numpy(taps[0][0].reshape(-1)))
    else:
        out = _weighted_gather(planes, taps)
    outside = torch.from_numpy(~inside.reshape(-1))
    if bool(outside.any()):
        out[outside] = fill_px.repeat(T)
    return out.view(H, W, T, C).permute(2, 0, 1, 3).contiguous()


def rotate(
    clip: Clip,
    degrees: float,
    *,
    interpolation: Interpolation = "bicubic",
    fill: int | Sequence[int] = FILL,
) -> Clip:
    """Pillow ``Image.rotate(degrees, resample, fillcolor=fill)``: counter-clockwise about the
    frame centre, same size."""
    T, H, W, C = check_u8(clip, "rotate")
    angle = float(degrees) % 360.0
    if angle == 0:
        return clip
    if angle == 180:  # Pillow transposes exactly
        return clip.flip(1, 2)
    if angle in (90, 270) and H == W:
        return torch.rot90(clip, 1 if angle == 90 else 3, dims=(1, 2)).contiguous()
    rad = -math.radians(angle)
    m = [
        round(math.cos(rad), 15),
        round(math.sin(rad), 15),
        0.0,
        round(-math.sin(rad), 15),
        round(math.cos(rad), 15),
        0.0,
    ]
    cx, cy = W / 2, H / 2
    m[2] = m[0] * -cx + m[1] * -cy + m[2] + cx
    m[5] = m[3] * -cx + m[4] * -cy + m[5] + cy
    return affine(clip, m, interpolation=interpolation, fill=fill)


def shear_x(clip: Clip, factor: float, **kw) -> Clip:
    """timm ``shear_x``: affine ``(1, factor, 0, 0, 1, 0)``."""
    return affine(clip, (1, factor, 0, 0, 1, 0), **kw)


def shear_y(clip: Clip, factor: float, **kw) -> Clip:
    """timm ``shear_y``: affine ``(1, 0, 0, factor, 1, 0)``."""
    return affine(clip, (1, 0, 0, factor, 1, 0), **kw)


def translate_x(clip: Clip, pixels: float, **kw) -> Clip:
    """Content moves left by ``pixels`` (timm ``translate_x_abs``)."""
    return affine(clip, (1, 0, pixels, 0, 1, 0), **kw)


def translate_y(clip: Clip, pixels: float, **kw) -> Clip:
    """Content moves up by ``pixels`` (timm ``translate_y_abs``)."""
    return affine(clip, (1, 0, 0, 0, 1, pixels), **kw)


def translate_x_rel(clip: Clip, pct: float, **kw) -> Clip:
    """timm ``translate_x_rel``: ``pct`` of the width."""
    return translate_x(clip, pct * int(clip.shape[2]), **kw)


def translate_y_rel(clip: Clip, pct: float, **kw) -> Clip:
    """timm ``translate_y_rel``: ``pct`` of the height."""
    return translate_y(clip, pct * int(clip.shape[1]), **kw)
