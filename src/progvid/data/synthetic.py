"""Synthetic datasets written as real video files: `motion` (below) and `pan` (data/pans.py).

`motion`: short clips whose class is defined only by how an object moves.

Every clip shows one textured object (disc, square, triangle, ring or cross) on a static
background, sometimes with a small randomly-walking distractor. Appearance (shape, colours,
pattern, background, position, angle, size, opacity, speeds) is drawn from the same law for
every class; the class only picks which quantity changes over time and in which direction.

Leak control, per quantity, for a frame picked at a uniformly random time:
* position and angle live on a circle (the image wraps like a torus), so every frame's marginal
  is uniform whatever the motion;
* size and opacity follow a trajectory drawn from a shared law; classes where they do not move
  freeze them at the value of a uniformly random frame of such a trajectory, and shrinking /
  fading out are the time reverses of growing / fading in. A random frame therefore has the same
  law in every class. (For a *fixed* frame index this is impossible for any bounded monotonic
  quantity: frame 0 of "grow" is smaller on average than its last frame.)
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from progvid.errors import DataError, ProgvidError

MOTION_CLASSES: tuple[str, ...] = (
    "move_right",
    "move_left",
    "move_up",
    "move_down",
    "rotate_cw",
    "rotate_ccw",
    "grow",
    "shrink",
    "fade_in",
    "fade_out",
)
SHAPES = ("disc", "square", "triangle", "ring", "cross")
KINDS = ("motion", "pan")  # motion: moving shapes (MOTION_CLASSES); pan: data/pans.py
FPS = 8
FORMAT_VERSION = 1
_SPLITS = {"train": 0, "val": 1}
_CODECS = {
    # Small frames: one encoder thread avoids thread start-up costs dominating.
    "mp4": ("libx264", {"preset": "ultrafast", "crf": "20", "threads": "1"}),
    "webm": ("libvpx-vp9", {"deadline": "realtime", "cpu-used": "8", "crf": "28", "b": "0",
                            "threads": "1"}),
}


@dataclass(frozen=True)
class SynthSummary:
    """What `write_dataset` produced (``seconds`` is 0-ish when the cache was hit)."""

    out: Path
    train: int
    val: int
    classes: int
    seconds: float


def _trajectory(rng: np.random.Generator, lo: tuple[float, float], span: tuple[float, float],
                frames: int, direction: int) -> np.ndarray:
    """Per-frame values of a bounded quantity: rising (1), falling (-1) or frozen (0).

    A frozen value is the value of a random frame of a rising trajectory; with the falling
    trajectory being a time-reversed rising one, a random frame has the same law in all three.
    """
    start = rng.uniform(*lo)
    ramp = start + rng.uniform(*span) * np.linspace(0.0, 1.0, frames)
    if direction == 0:
        return np.full(frames, ramp[rng.integers(frames)])
    return ramp if direction > 0 else ramp[::-1].copy()


def _colour(rng: np.random.Generator, *away: np.ndarray, min_dist: float = 100.0) -> np.ndarray:
    """A random RGB colour at least `min_dist` from each of `away` (keeps the object visible)."""
    c = rng.uniform(0, 255, 3)
    for _ in range(30):
        if all(np.linalg.norm(c - a) >= min_dist for a in away):
            break
        c = rng.uniform(0, 255, 3)
    return c


def _background(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, size: int) -> np.ndarray:
    """Static (H, W, 3) float background: flat, gradient or smooth waves, plus fixed grain."""
    base = rng.uniform(0, 255, 3)
    kind = rng.integers(3)
    if kind == 1:  # linear gradient towards a second colour along a random direction
        a = rng.uniform(0, 2 * np.pi)
        ramp = (np.cos(a) * xx + np.sin(a) * yy) / size + 0.5
        bg = base + (rng.uniform(0, 255, 3) - base) * np.clip(ramp, 0, 1)[..., None] * 0.6
    elif kind == 2:  # a few random plane waves
        field = np.zeros_like(xx)
        for _ in range(3):
            f = rng.uniform(1, 4, 2) * 2 * np.pi / size
            field += np.sin(f[0] * xx + f[1] * yy + rng.uniform(0, 2 * np.pi))
        bg = base + rng.uniform(-40, 40, 3) * field[..., None] / 3
    else:
        bg = np.broadcast_to(base, (*xx.shape, 3))
    bg = bg + rng.normal(0, 5, (*xx.shape, 3))
    return np.clip(bg, 0, 255)


def _shape_sdf(kind: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Approximate signed distance (object-radius units, < 0 inside) of a unit-size shape."""
    if kind == "disc":
        return np.hypot(u, v) - 1.0
    if kind == "ring":
        return np.abs(np.hypot(u, v) - 0.7) - 0.3
    if kind == "square":
        return np.maximum(np.abs(u), np.abs(v)) - 0.85
    if kind == "triangle":  # equilateral, in-radius 0.6; edge normals every 120 degrees
        ang = np.pi / 2 + np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3])
        d = [np.cos(a) * u + np.sin(a) * v for a in ang]
        return np.maximum(np.maximum(d[0], d[1]), d[2]) - 0.6
    # cross: union of two bars
    au, av_ = np.abs(u), np.abs(v)
    return np.minimum(np.maximum(au - 1.0, av_ - 0.35), np.maximum(av_ - 1.0, au - 0.35))


def render_clip(label: int, rng: np.random.Generator, *, size: int = 64,
                frames: int = 16) -> np.ndarray:
    """Render one clip of class `label` as uint8 (T, H, W, 3); all randomness comes from `rng`."""
    if not 0 <= label < len(MOTION_CLASSES):
        raise ProgvidError(f"label {label} out of range 0..{len(MOTION_CLASSES) - 1}")
    if size < 8 or frames < 1:
        raise ProgvidError(f"size must be >= 8 and frames >= 1, got size={size} frames={frames}")
    name = MOTION_CLASSES[label]
    sign = -1 if name in ("move_left", "move_up", "rotate_ccw", "shrink", "fade_out") else 1
    # float32 throughout the per-pixel work: it halves the rendering time.
    step = np.linspace(0.0, 1.0, frames, dtype=np.float32)[:, None, None]  # speeds per clip
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    bg = _background(rng, yy, xx, size).astype(np.float32)
    # Wrapped offsets are separable: compute them on (T, 1, W) and (T, H, 1), broadcast later.
    xs, ys = xx[None, :1, :], yy[None, :, :1]

    # Shared appearance law.
    shape = SHAPES[rng.integers(len(SHAPES))]
    pattern = rng.integers(3)
    freq = np.float32(rng.uniform(1.5, 3.0))
    bg_mean = bg.mean((0, 1), dtype=np.float64)
    c1 = _colour(rng, bg_mean, min_dist=130)
    c2 = _colour(rng, bg_mean, c1, min_dist=90)
    f32 = np.float32
    pos = rng.uniform(0, size, 2).astype(f32)
    angle = f32(rng.uniform(0, 2 * np.pi))
    travel = f32(rng.uniform(0.2, 0.45) * size) * step
    turn = f32(rng.uniform(0.6, 1.4)) * step
    dirs = {"move_right": (1, 0), "move_left": (-1, 0), "move_up": (0, -1), "move_down": (0, 1)}
    dx, dy = dirs.get(name, (0, 0))
    cx, cy = pos[0] + dx * travel, pos[1] + dy * travel
    theta = angle + (sign if name.startswith("rotate") else 0) * turn
    radius = size * np.exp(_trajectory(rng, (np.log(0.09), np.log(0.15)), (0.5, 0.8), frames,
                                       sign if name in ("grow", "shrink") else 0))
    alpha = _trajectory(rng, (0.2, 0.35), (0.55, 0.65), frames,
                        sign if name.startswith("fade") else 0)
    radius = radius.astype(f32)[:, None, None]
    alpha = np.minimum(alpha, 1.0).astype(f32)[:, None, None]

    # Object-frame coordinates; wrapping keeps the position marginal uniform at every frame.
    ox = (xs - cx + size / 2) % size - size / 2
    oy = (ys - cy + size / 2) % size - size / 2
    cos, sin = np.cos(theta), np.sin(theta)
    u = (cos * ox + sin * oy) / radius
    v = (-sin * ox + cos * oy) / radius
    cover = np.clip(0.5 - _shape_sdf(shape, u, v) * radius, 0.0, 1.0)  # ~1px anti-aliased edge
    # Oriented patterns, so rotation and scaling are visible for every shape.
    if pattern == 0:
        mix = np.clip(0.5 + u * radius, 0, 1)  # two halves
    elif pattern == 1:
        mix = np.clip(0.5 + 1.5 * np.sin(np.pi * freq * u), 0, 1)  # stripes
    else:
        mix = np.clip(0.5 + 1.5 * np.sin(np.pi * freq * u) * np.sin(np.pi * freq * v), 0, 1)
    a = alpha * cover  # straight alpha compositing of a two-colour object over bg
    video = bg * (1 - a)[..., None]
    video += np.stack([a - a * mix, a * mix], -1) @ np.stack([c1, c2]).astype(f32)

    if rng.random() < 0.5:  # distractor: small disc on a zero-mean random walk
        walk = np.cumsum(rng.normal(0, 0.15 * size / np.sqrt(frames), (frames, 2)), axis=0)
        walk = (walk + rng.uniform(0, size, 2)).astype(f32)
        ddx = (xs - walk[:, 0, None, None] + size / 2) % size - size / 2
        ddy = (ys - walk[:, 1, None, None] + size / 2) % size - size / 2
        r = f32(rng.uniform(0.04, 0.07) * size)
        d_cover = np.clip(0.5 - (np.hypot(ddx, ddy) - r), 0, 1)[..., None]
        video += (_colour(rng, bg_mean, min_dist=60).astype(f32) - video) * d_cover
    # Light sensor noise, new every frame: uniform on [-3.5, 3.5) (std 2; 5x cheaper than
    # Gaussian), shifted by +0.5 so that the uint8 cast rounds instead of truncating.
    noise = rng.random(video.shape, dtype=f32)
    noise *= 7.0
    video += noise
    video -= 3.0
    return np.clip(video, 0, 255, out=video).astype(np.uint8)


def _clip_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Each clip owns a stream seeded by (seed, split, index): output ignores worker count."""
    return np.random.default_rng([seed, _SPLITS[split], index])


def _encode(video: np.ndarray, path: Path, fmt: str) -> None:
    """Encode uint8 (T, H, W, 3) RGB frames as a real video file (yuv420p)."""
    import av  # deferred: importing PyAV is only needed by whoever encodes

    codec, options = _CODECS[fmt]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=FPS, options=dict(options))
        stream.width, stream.height = video.shape[2], video.shape[1]
        stream.pix_fmt = "yuv420p"
        for frame in video:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def _write_clips(job: tuple[str, str, list[int], int, int, int, int, str, str, tuple[str, ...]]
                 ) -> int:
    """Worker: render and encode a batch of clips of one split; returns how many it wrote."""
    videos, split, indices, classes, size, frames, seed, fmt, kind, sources = job
    for i in indices:
        rng = _clip_rng(seed, split, i)
        if kind == "pan":
            from .pans import pick_still, render_pan

            still = pick_still(rng, split, sources, seed)
            clip = render_pan(still, i % classes, rng, size=size, frames=frames)
        else:
            clip = render_clip(i % classes, rng, size=size, frames=frames)
        _encode(clip, Path(videos) / f"{split}_{i:05d}.{fmt}", fmt)
    return len(indices)


def class_names(kind: str) -> tuple[str, ...]:
    """The class names of a synthetic dataset kind, label order."""
    if kind == "pan":
        from .pans import PAN_CLASSES

        return PAN_CLASSES
    return MOTION_CLASSES


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # readers never see a half-written file


def _check_params(train: int, val: int, size: int, frames: int, classes: int, seed: int,
                  fmt: str, workers: int, kind: str, sources: tuple[str, ...]) -> None:
    if kind not in KINDS:
        raise ProgvidError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if sources and kind != "pan":
        raise ProgvidError("source videos are only used by kind 'pan'")
    for src in sources:
        if not Path(src).is_file():
            raise DataError(Path(src), "source video not found")
    if fmt not in _CODECS:
        raise ProgvidError(f"format must be one of {sorted(_CODECS)}, got {fmt!r}")
    if size < 16 or size % 2:
        raise ProgvidError(f"size must be even and >= 16 (yuv420p needs even sides), got {size}")
    if frames < 2:
        raise ProgvidError(f"frames must be >= 2 (motion needs two frames), got {frames}")
    if not 2 <= classes <= len(class_names(kind)):
        raise ProgvidError(f"classes must be in 2..{len(class_names(kind))} for kind {kind!r}, "
                           f"got {classes}")
    if train < 0 or val < 0 or train + val == 0:
        raise ProgvidError(f"train/val must be >= 0 and not both 0, got {train}/{val}")
    if seed < 0:
        raise ProgvidError(f"seed must be >= 0, got {seed}")
    if workers < 1:
        raise ProgvidError(f"workers must be >= 1, got {workers}")
    if kind == "pan":
        from .pans import SPEED, STILL_SIDE, TRAIN_SHARE, ZOOM
        from .video import probe

        travel = size + SPEED[1] * (frames - 1)  # the window and its path at the top speed
        if travel > STILL_SIDE / ZOOM[0]:
            raise ProgvidError(f"size {size} with {frames} frames does not fit a pan: window and "
                               f"travel take {travel:g} pixels of a {STILL_SIDE}-pixel still "
                               f"(size + {SPEED[1]:g} x (frames - 1) must be <= {STILL_SIDE / ZOOM[0]:g})")
        for src in sources:
            if probe(src).frames < 2:  # probe: a DataError naming the file if it is no video
                raise DataError(Path(src), f"one frame only: pans need at least 2, the first "
                                           f"{TRAIN_SHARE:.0%} for training clips and the rest "
                                           "for validation clips, which must not share a still")


def _pool_context() -> mp.context.BaseContext:
    """forkserver where available: no fork of a possibly threaded (torch) parent, and the
    preloaded server makes worker start-up cheap; spawn elsewhere."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload([__name__, "av"])
        return ctx
    return mp.get_context("spawn")


def write_dataset(out: str | Path, *, train: int = 200, val: int = 50, size: int = 64,
                  frames: int = 16, classes: int | None = None, seed: int = 0,
                  fmt: str = "mp4", workers: int = 1, progress: bool = False,
                  kind: str = "motion", sources: Sequence[str | Path] = ()) -> SynthSummary:
    """Write `OUT/videos/{split}_{i:05d}.{fmt}`, `OUT/{train,val}.csv` ("path label" lines),
    `OUT/classes.txt` and `OUT/synth.json`. Label of clip i is ``i % classes`` (default: all
    of the kind's classes). `kind="pan"` writes camera pans over frames of the `sources`
    videos, or over dead-leaves images without sources (data/pans.py).

    A complete dataset with the same parameters is reused as is; a non-empty folder holding
    anything else raises `ProgvidError` rather than being overwritten.
    """
    src = tuple(str(Path(p).resolve()) for p in sources)
    if classes is None:
        classes = len(class_names(kind))  # an unknown kind is reported by _check_params
    _check_params(train, val, size, frames, classes, seed, fmt, workers, kind, src)
    out = Path(out)
    params: dict = {"version": FORMAT_VERSION, "train": train, "val": val, "size": size,
                    "frames": frames, "classes": classes, "seed": seed, "format": fmt, "fps": FPS}
    if kind != "motion":  # only when used: motion datasets written before stay reusable
        params.update(kind=kind, sources=list(src))
    meta_path = out / "synth.json"
    if out.exists() and not out.is_dir():
        raise ProgvidError(f"{out}: exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            meta = None
        if not isinstance(meta, dict) or meta.get("params") != params:
            if isinstance(meta, dict) and isinstance(meta.get("params"), dict):
                old = meta["params"]
                why = "it holds a synthetic dataset with other parameters: " + ", ".join(
                    f"{k}={old.get(k)!r} (asked {v!r})" for k, v in params.items()
                    if old.get(k) != v)
            else:
                why = "it is not empty and has no valid synth.json"
            raise ProgvidError(f"{out}: {why}; choose another folder or delete this one")
        if meta.get("complete") and all((out / f"{s}.csv").is_file() for s in _SPLITS):
            return SynthSummary(out, train, val, classes, 0.0)
        # Same parameters but interrupted: our own partial output, safe to redo.

    start = time.perf_counter()
    videos = out / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    _atomic_write(meta_path, json.dumps({"params": params, "complete": False}, indent=1))
    batch = 8  # clips per task: amortises inter-process overhead, still balances 2+ workers
    jobs = [(str(videos), split, list(range(lo, min(lo + batch, n))), classes, size, frames,
             seed, fmt, kind, src)
            for split, n in (("train", train), ("val", val)) for lo in range(0, n, batch)]
    with ExitStack() as stack:
        if workers == 1:
            done: Iterator[int] = map(_write_clips, jobs)
        else:
            pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=_pool_context()))
            done = pool.map(_write_clips, jobs)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = stack.enter_context(tqdm(total=train + val, unit="clip", file=sys.stderr,
                                           desc=f"synth {out}"))
        for n in done:
            if bar is not None:
                bar.update(n)

    _atomic_write(out / "classes.txt", "".join(c + "\n" for c in class_names(kind)[:classes]))
    for split, n in (("train", train), ("val", val)):  # list files last: they mean "complete"
        lines = "".join(f"videos/{split}_{i:05d}.{fmt} {i % classes}\n" for i in range(n))
        _atomic_write(out / f"{split}.csv", lines)
    seconds = time.perf_counter() - start
    _atomic_write(meta_path, json.dumps({"params": params, "complete": True,
                                         "seconds": round(seconds, 3)}, indent=1))
    return SynthSummary(out, train, val, classes, seconds)

