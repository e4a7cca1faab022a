"""Camera-pan clips over real footage: a small motion dataset with natural-image content.

Each clip is a 32x32 window sliding over one still (a frame of real footage, downscaled) in one
of 8 compass directions at a sub-pixel speed; the class is the direction. Training clips take
their stills from the first 70% of each source video, validation clips from the last 30%, so
val content is unseen. Written in the list format (train.csv, val.csv, classes.txt, videos/).

    .venv/bin/python bench/pan_data.py OUT --source a.mp4 --source b.mp4 --train 1600 --val 400
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from progvid.data.synthetic import _encode
from progvid.data.video import decode_all

DIRECTIONS = ("E", "NE", "N", "NW", "W", "SW", "S", "SE")


def load_stills(sources: list[str], short: int = 128) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train stills, val stills) per source: float (N, 3, H, W) in [0, 255], short side `short`."""
    out = []
    for s in sources:
        v = torch.from_numpy(decode_all(s)).permute(0, 3, 1, 2).float()
        h, w = v.shape[2:]
        scale = short / min(h, w)
        v = F.interpolate(v, size=(round(h * scale), round(w * scale)), mode="area")
        cut = int(0.7 * len(v))
        out.append((v[:cut], v[cut:]))
    return out


def render(still: torch.Tensor, direction: int, rng: np.random.Generator, *, size: int,
           frames: int, zoom: float) -> np.ndarray:
    """uint8 (T, size, size, 3): a window moving over `still` (3, H, W)."""
    _, h, w = still.shape
    speed = rng.uniform(1.0, 2.0)  # output pixels per frame
    angle = direction * math.pi / 4
    vx, vy = math.cos(angle) * speed, -math.sin(angle) * speed  # image y grows downwards
    win = size * zoom  # window side in still pixels
    travel_x, travel_y = abs(vx) * (frames - 1) * zoom, abs(vy) * (frames - 1) * zoom
    x0 = rng.uniform(0, w - win - travel_x) + (travel_x if vx < 0 else 0)
    y0 = rng.uniform(0, h - win - travel_y) + (travel_y if vy < 0 else 0)
    t = torch.arange(frames, dtype=torch.float32)
    lin = (torch.arange(size, dtype=torch.float32) + 0.5) * zoom
    xs = x0 + t[:, None] * vx * zoom + lin[None]  # (T, size)
    ys = y0 + t[:, None] * vy * zoom + lin[None]
    gx = xs / w * 2 - 1
    gy = ys / h * 2 - 1
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)
    src = still[None].expand(frames, -1, -1, -1)
    out = F.grid_sample(src, grid, mode="bilinear", align_corners=False)
    return out.clamp(0, 255).round().byte().permute(0, 2, 3, 1).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--source", action="append", required=True)
    ap.add_argument("--train", type=int, default=1600)
    ap.add_argument("--val", type=int, default=400)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    stills = load_stills(args.source)
    (out / "classes.txt").write_text("\n".join(DIRECTIONS) + "\n")
    for split, n, part in (("train", args.train, 0), ("val", args.val, 1)):
        rng = np.random.default_rng([args.seed, part])
        lines = []
        for i in range(n):
            label = i % len(DIRECTIONS)
            pool = stills[rng.integers(len(stills))][part]
            still = pool[rng.integers(len(pool))]
            zoom = rng.uniform(1.0, 1.8)
            clip = render(still, label, rng, size=args.size, frames=args.frames, zoom=zoom)
            name = f"videos/{split}_{i:05d}.mp4"
            _encode(clip, out / name, "mp4")
            lines.append(f"{name} {label}")
        (out / f"{split}.csv").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.train} + {args.val} clips to {out}")


if __name__ == "__main__":
    main()
