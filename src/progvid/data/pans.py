"""Camera-pan clips: a window sliding over a still in one of 8 compass directions.

The class is the direction; everything else (still, start, speed, zoom) is drawn from one law
for every class. Stills are frames of real footage (`--source` videos) or, without footage,
dead-leaves images (occluding discs with a power-law size law: natural images' 1/f spectrum
and occlusion edges, Lee, Mumford & Huang 2001). This is the small setting in which VideoMAE
pre-training measurably learns on 2 CPU cores (bench/mae_small_scale.md): the content is
textured everywhere, the motion is large enough to see at 32 pixels, and reconstructing a
hidden patch from other frames needs the motion.

Training clips take their stills from the first 70% of each source (dead-leaves: its own
stills), validation clips from the rest, so validation content is unseen.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from progvid.errors import DataError

PAN_CLASSES: tuple[str, ...] = ("pan_E", "pan_NE", "pan_N", "pan_NW", "pan_W", "pan_SW",
                                "pan_S", "pan_SE")
STILL_SIDE = 128  # stills' short side in pixels: room for a zoomed window and its travel
TRAIN_SHARE = 0.7  # the first 70% of each source's frames feed training clips
DEAD_LEAVES = 200  # dead-leaves stills per dataset seed (140 train, 60 val)
SPEED = (1.0, 2.0)  # output pixels per frame
ZOOM = (1.0, 1.8)  # still pixels per output pixel


def dead_leaves(rng: np.random.Generator, size: int = STILL_SIDE) -> np.ndarray:
    """A dead-leaves image, float32 (3, size, size) in [0, 255]: discs painted front to back
    (a disc only covers pixels still empty), radius density ~ r^-3 between 4 px and size/3,
    colours scattered around one random base colour, a little shading per disc."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    img = np.zeros((size, size, 3), np.float32)
    filled = np.zeros((size, size), bool)
    rmin, rmax = 4.0, size / 3
    base = rng.uniform(0, 255, 3)
    empty = size * size
    for _ in range(4000):
        u = rng.uniform()
        r = (rmin ** -2 - u * (rmin ** -2 - rmax ** -2)) ** -0.5  # inverse CDF of r^-3
        cx, cy = rng.uniform(-r, size + r, 2)
        # only the disc's bounding box can change: same picture as testing every pixel
        y0, y1 = max(0, int(cy - r)), min(size, int(cy + r) + 2)
        x0, x1 = max(0, int(cx - r)), min(size, int(cx + r) + 2)
        box = (slice(y0, y1), slice(x0, x1))
        disc = ((xx[box] - cx) ** 2 + (yy[box] - cy) ** 2 <= r * r) & ~filled[box]
        if disc.any():
            img[box][disc] = np.clip(base + rng.normal(0, 70, 3), 0, 255) * rng.uniform(0.85, 1.15)
            filled[box] |= disc
            empty -= int(disc.sum())
            if empty == 0:
                break
    img[~filled] = base
    return np.clip(img, 0, 255).transpose(2, 0, 1)


@lru_cache(maxsize=8)
def _source_frames(path: str) -> torch.Tensor:
    """Every frame of a video, float (N, 3, h, w) with short side STILL_SIDE (area filter)."""
    from .video import decode_all

    v = torch.from_numpy(decode_all(path)).permute(0, 3, 1, 2).float()
    h, w = v.shape[2:]
    scale = STILL_SIDE / min(h, w)
    return F.interpolate(v, size=(round(h * scale), round(w * scale)), mode="area")


@lru_cache(maxsize=4 * DEAD_LEAVES)
def _dead_leaves_still(seed: int, index: int) -> torch.Tensor:
    return torch.from_numpy(dead_leaves(np.random.default_rng([seed, 7, index])))


def pick_still(rng: np.random.Generator, split: str, sources: Sequence[str], seed: int
               ) -> torch.Tensor:
    """A still for one clip of `split` ("train" or "val"): float (3, H, W) in [0, 255]."""
    if not sources:
        cut = round(TRAIN_SHARE * DEAD_LEAVES)
        lo, hi = (0, cut) if split == "train" else (cut, DEAD_LEAVES)
        return _dead_leaves_still(seed, int(rng.integers(lo, hi)))
    source = Path(sources[int(rng.integers(len(sources)))])
    frames = _source_frames(str(source))
    if len(frames) < 2:  # `write_dataset` refuses such a source first
        raise DataError(source, "a pan source needs at least 2 frames (train and "
                                          "validation must not share a still)")
    # frames on either side of the cut are neighbours of one shot: measured on the three
    # footage clips, 2 of 151 validation stills are within the usual frame-to-frame difference
    # of a training still
    cut = max(1, min(len(frames) - 1, round(TRAIN_SHARE * len(frames))))
    lo, hi = (0, cut) if split == "train" else (cut, len(frames))
    return frames[int(rng.integers(lo, hi))]


def render_pan(still: torch.Tensor, direction: int, rng: np.random.Generator, *, size: int,
               frames: int) -> np.ndarray:
    """uint8 (T, size, size, 3): a size x size window sliding over `still` (3, H, W) in
    compass direction `direction` (0 = east, counter-clockwise in steps of 45 degrees), with
    speed and zoom drawn from SPEED and ZOOM; bilinear sampling at sub-pixel positions."""
    _, h, w = still.shape
    speed = rng.uniform(*SPEED)
    zoom = rng.uniform(*ZOOM)
    max_zoom = min(h, w) / (size + SPEED[1] * (frames - 1))  # window + travel must fit
    if max_zoom < ZOOM[0]:
        raise ValueError(f"still of {w}x{h} is too small for a {size}-pixel pan over "
                         f"{frames} frames")
    zoom = min(zoom, max_zoom)  # large clips over small stills: less zoom
    angle = direction * math.pi / 4
    vx, vy = math.cos(angle) * speed * zoom, -math.sin(angle) * speed * zoom  # y grows down
    win = size * zoom
    travel_x, travel_y = abs(vx) * (frames - 1), abs(vy) * (frames - 1)
    x0 = rng.uniform(0, w - win - travel_x) + (travel_x if vx < 0 else 0)
    y0 = rng.uniform(0, h - win - travel_y) + (travel_y if vy < 0 else 0)
    t = torch.arange(frames, dtype=torch.float32)[:, None]
    offsets = (torch.arange(size, dtype=torch.float32) + 0.5) * zoom
    xs = (x0 + t * vx + offsets) / w * 2 - 1  # (T, size) in grid_sample's [-1, 1]
    ys = (y0 + t * vy + offsets) / h * 2 - 1
    grid = torch.stack(torch.broadcast_tensors(xs[:, None, :], ys[:, :, None]), dim=-1)
    out = F.grid_sample(still[None].expand(frames, -1, -1, -1), grid, mode="bilinear",
                        align_corners=False)
    return out.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


__all__ = ["PAN_CLASSES", "dead_leaves", "pick_still", "render_pan"]
