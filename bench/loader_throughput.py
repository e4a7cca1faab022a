"""Decode + augment throughput (clips/s): progvid's loader vs a VideoMAE-style decord/PIL loader.

Both sides produce the same thing: 16-frame clips (stride 4, random start) of 320p h264 videos,
multi-scale-cropped to 224x224, randomly flipped, normalised, float (B, 3, 16, 224, 224), through
a torch DataLoader with the same workers / batch size / prefetch. The two loaders are measured
side by side in ONE run, alternating rounds (A B, B A, A B, ...), and the ratio ours / reference
is the figure to read: absolute clips/s move with whatever else runs on the machine.

    .venv/bin/python bench/loader_throughput.py [--videos 12 --rounds 6 --clips 48 --workers 2]

The reference side needs decord (`pip install decord`); it is NOT a progvid dependency.
Test videos are generated once with PyAV into /tmp/progvid_bench_videos (reused when the
settings match). See bench/loader_throughput.md for recorded results.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import random
import statistics
import sys
import time
from pathlib import Path

import av
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

import progvid
from progvid.data.datasets import Sample, VideoDataset
from progvid.data.loader import build_loader, collate
from progvid.data.sampling import TemporalSampler
from progvid.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize_clips, train_transform
from progvid.data.video import VideoReader
from progvid.tasks.base import cpu_threads

try:
    import decord
except ImportError:  # checked in main(): the message says how to get it
    decord = None

try:
    from PIL import Image
except ImportError:
    Image = None

FRAMES, STRIDE, SIZE = 16, 4, 224
SCALES = (1, 0.875, 0.75, 0.66)


# --------------------------------------------------------------------------------------------
# Test videos
# --------------------------------------------------------------------------------------------
def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth-ish colour noise (sum of octaves) in [0, 255], float32 (h, w, 3)."""
    out = np.zeros((h, w, 3), np.float32)
    for cell, amp in ((64, 1.0), (16, 0.5), (4, 0.35), (1, 0.2)):
        small = rng.random((h // cell + 2, w // cell + 2, 3), dtype=np.float32)
        big = np.repeat(np.repeat(small, cell, 0), cell, 1)[:h, :w]
        out += amp * big
    out -= out.min()
    return out * (255.0 / out.max())


def _render(rng: np.random.Generator, t: int, h: int, w: int, tex: np.ndarray,
            blobs: list[tuple[float, float, float, float, float, np.ndarray]]) -> np.ndarray:
    """Frame t: a panning textured background, a drifting gradient, moving discs, film grain."""
    th, tw = tex.shape[:2]
    y0 = int((th - h) / 2 + (th - h) / 2.2 * np.sin(t / 97.0))
    x0 = int((tw - w) / 2 + (tw - w) / 2.2 * np.sin(t / 71.0 + 1.0))
    frame = tex[y0 : y0 + h, x0 : x0 + w].copy()
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    frame += (40.0 * np.sin(xx / w * 6.28 + t / 20.0) * np.cos(yy / h * 3.14 - t / 33.0))[..., None]
    for cy, cx, vy, vx, r, col in blobs:
        py = (cy + vy * t) % h
        px = (cx + vx * t) % w
        mask = (yy - py) ** 2 + (xx - px) ** 2 < r * r
        frame[mask] = 0.35 * frame[mask] + 0.65 * col
    frame += rng.normal(0.0, 3.0, frame.shape).astype(np.float32)  # grain: keeps bitrate honest
    return np.clip(frame, 0, 255).astype(np.uint8)


def _encode(job: tuple[int, Path, int, int, int, int, int, str, int]) -> str:
    """Video number i: render and encode it (a function of its settings and i only)."""
    i, path, width, height, n, fps, gop, preset, crf = job
    rng = np.random.default_rng([1234, i])
    tex = _texture(rng, height + 160, width + 240)
    blobs = [(rng.uniform(0, height), rng.uniform(0, width), rng.uniform(-3, 3),
              rng.uniform(-4, 4), rng.uniform(15, 45), rng.uniform(0, 255, 3).astype(np.float32))
             for _ in range(5)]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(
            "libx264", rate=fps,
            options={"preset": preset, "crf": str(crf), "g": str(gop), "keyint_min": str(gop),
                     "sc_threshold": "0"},
        )
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for t in range(n):
            img = av.VideoFrame.from_ndarray(_render(rng, t, height, width, tex, blobs), format="rgb24")
            container.mux(stream.encode(img))
        container.mux(stream.encode())
    return f"  encoded {path.name} ({path.stat().st_size / 1e6:.2f} MB)"


def make_videos(folder: Path, count: int, *, width: int, height: int, seconds: float, fps: int,
                gop: int, preset: str, crf: int, jobs: int = 1) -> list[Path]:
    """`count` h264 mp4 files (yuv420p, libx264); reused when the settings file matches.
    `jobs` > 1 encodes that many videos at a time (processes); the files are the same."""
    settings = dict(count=count, width=width, height=height, seconds=seconds, fps=fps, gop=gop,
                    preset=preset, crf=crf, version=1)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"v{i:03d}.mp4" for i in range(count)]
    stamp = folder / "settings.json"
    if stamp.exists() and json.loads(stamp.read_text()) == settings and all(p.exists() for p in paths):
        return paths
    stamp.unlink(missing_ok=True)
    n = int(round(seconds * fps))
    t0 = time.perf_counter()
    todo = [(i, path, width, height, n, fps, gop, preset, crf) for i, path in enumerate(paths)]
    if jobs > 1:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(min(jobs, count)) as pool:
            for line in pool.imap(_encode, todo):
                print(line, flush=True)
    else:
        for job in todo:
            print(_encode(job), flush=True)
    print(f"  {count} videos in {time.perf_counter() - t0:.1f} s", flush=True)
    stamp.write_text(json.dumps(settings))
    return paths


# --------------------------------------------------------------------------------------------
# Reference: VideoMAE-style pre-training pipeline (decord + per-frame PIL), written for this bench
# --------------------------------------------------------------------------------------------
# 4 corners + centre, then centre-left/right/top/bottom and the 4 quarter points, in quarter
# steps of the free room (TSN's "more fix crop" grid).
_GRID = [(0, 0), (4, 0), (0, 4), (4, 4), (2, 2), (0, 2), (4, 2), (2, 4), (2, 0),
         (1, 1), (3, 1), (1, 3), (3, 3)]


def multiscale_box(w: int, h: int, rnd: random.Random) -> tuple[int, int, int, int]:
    """PIL box (left, upper, right, lower) of a TSN/VideoMAE multi-scale crop."""
    base = min(w, h)
    sides = [int(base * s) for s in SCALES]
    sides = [SIZE if abs(s - SIZE) < 3 else s for s in sides]
    pairs = [(sides[i], sides[j]) for i in range(len(sides)) for j in range(len(sides))
             if abs(i - j) <= 1]
    cw, ch = rnd.choice(pairs)
    gx, gy = rnd.choice(_GRID)
    left, top = gx * ((w - cw) // 4), gy * ((h - ch) // 4)
    return left, top, left + cw, top + ch


class DecordClips(Dataset):
    """What VideoMAE's pre-training dataset does per item: open a decord reader, `get_batch`
    the whole index set, one PIL image per frame, per-frame crop/resize/flip/ToTensor/Normalize."""

    def __init__(self, paths: list[Path], seed: int = 0) -> None:
        self.paths = [str(p) for p in paths]
        self.seed = seed
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int, rnd: random.Random, times: dict[str, float] | None = None) -> torch.Tensor:
        tick = _Ticker(times)
        vr = decord.VideoReader(self.paths[i], num_threads=1, ctx=decord.cpu(0))
        n = len(vr)
        tick("open")
        span = FRAMES * STRIDE
        start = rnd.randrange(max(n - span + 1, 1))
        idx = [min(start + k * STRIDE, n - 1) for k in range(FRAMES)]
        frames = vr.get_batch(idx).asnumpy()
        tick("decode+rgb (get_batch)")
        imgs = [Image.fromarray(frames[k]).convert("RGB") for k in range(len(idx))]
        tick("to PIL")
        w, h = imgs[0].size
        box = multiscale_box(w, h, rnd)
        imgs = [im.crop(box).resize((SIZE, SIZE), Image.BILINEAR) for im in imgs]
        tick("crop+resize")
        if rnd.random() < 0.5:
            imgs = [im.transpose(Image.FLIP_LEFT_RIGHT) for im in imgs]
        tick("flip")
        out = []
        for im in imgs:  # torchvision ToTensor + Normalize, per frame
            x = torch.from_numpy(np.array(im, copy=True)).permute(2, 0, 1).contiguous()
            x = x.float().div(255.0)
            out.append(x.sub_(self.mean).div_(self.std))
        tick("to tensor+normalize")
        video = torch.stack(out, dim=1)  # (C, T, H, W)
        tick("stack")
        del vr
        return video

    def __getitem__(self, i: int) -> dict:
        return {"video": self.load(i, random), "index": i}


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
class _Ticker:
    """Accumulates process CPU time (all threads of this process) into `times[name]`: CPU time
    is far less disturbed than wall time by other jobs on a shared machine."""

    def __init__(self, times: dict[str, float] | None) -> None:
        self.times = times
        self.t = time.process_time()

    def __call__(self, name: str) -> None:
        if self.times is not None:
            now = time.process_time()
            self.times[name] = self.times.get(name, 0.0) + now - self.t
            self.t = now


def ours_dataset(videos: list[Path], n: int, seed: int = 0, transfer: str = "uint8") -> VideoDataset:
    """progvid's training clips; `transfer` as `data.transfer` (its default for pre-training:
    uint8 clips, normalised by the consumer, which `run_epoch` does in the main process)."""
    samples = [Sample(videos[i % len(videos)]) for i in range(n)]
    return VideoDataset(samples, sampler=TemporalSampler("stride", FRAMES, STRIDE),
                        transform=train_transform(SIZE, crop="multiscale", flip=True,
                                                  normalize=transfer == "float32"),
                        train=True, seed=seed)


def reference_loader(videos: list[Path], n: int, *, batch: int, workers: int, seed: int) -> DataLoader:
    ds = DecordClips([videos[i % len(videos)] for i in range(n)], seed=seed)
    return DataLoader(ds, batch_size=batch, sampler=RandomSampler(ds, generator=torch.Generator().manual_seed(seed)),
                      num_workers=workers, drop_last=True, persistent_workers=workers > 0,
                      prefetch_factor=4 if workers > 0 else None, pin_memory=False)


_TICK = os.sysconf("SC_CLK_TCK")


def _worker_pids(loader: DataLoader) -> list[int]:
    """PIDs of a persistent-worker loader's processes (private torch attribute; [] if absent)."""
    it = getattr(loader, "_iterator", None)
    return [w.pid for w in getattr(it, "_workers", [])]


def _cpu_seconds(pids: list[int]) -> tuple[float, float]:
    """(this process, this process + `pids`) user + system CPU seconds (/proc/<pid>/stat)."""
    t = os.times()
    main = total = t.user + t.system
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
    return main, total


def run_epoch(loader: DataLoader, epoch: int | None) -> tuple[int, float]:
    """Consume one whole epoch (so no worker keeps decoding into the other side's round)."""
    if epoch is not None:
        loader.sampler.set_epoch(epoch)
    clips = 0
    t0 = time.perf_counter()
    for batch in loader:
        v = batch["video"]
        if v.dtype == torch.uint8:  # what the training side does with data.transfer uint8
            v = normalize_clips(v, IMAGENET_MEAN, IMAGENET_STD)
        assert v.shape[1:] == (3, FRAMES, SIZE, SIZE) and v.dtype == torch.float32, v.shape
        clips += v.shape[0]
    return clips, time.perf_counter() - t0


def _fmt_ms(times: dict[str, float], n: int) -> list[str]:
    total = sum(times.values())
    rows = [f"    {k:<28} {1e3 * v / n:8.1f} ms  ({100 * v / total:4.1f} %)" for k, v in times.items()]
    rows.append(f"    {'total':<28} {1e3 * total / n:8.1f} ms")
    return rows


def _ours_stages(tf, sampler: TemporalSampler, video: Path, rng: np.random.Generator,
                 times: dict[str, float]) -> int:
    """One clip, the same work as VideoDataset._load + train_transform, timed per stage."""
    crop_tf, flip_tf, norm_tf = tf.transforms
    tick = _Ticker(times)
    with VideoReader(video) as reader:
        tick("open (+demux index)")
        clip = reader.read(sampler(reader.info.frames, train=True, rng=rng))
        tick("seek+decode+rgb (read)")
        decoded = reader.frames_decoded
    clip = crop_tf(clip, rng)
    tick("crop+resize")
    clip = flip_tf(clip, rng)
    tick("flip")
    norm_tf(clip, rng)
    tick("normalize")
    return decoded


def _replay_stages(sampler: TemporalSampler, video: Path, rng: np.random.Generator,
                   times: dict[str, float]) -> None:
    """Replays one VideoReader.read with bare PyAV to split decoding from rgb conversion: seek
    to the keyframe before the first wanted frame, decode forward to the last one, then convert
    the 16 wanted frames with to_ndarray (what read() calls per frame)."""
    with VideoReader(video) as reader:
        idx = sampler(reader.info.frames, train=True, rng=rng)
        order = sorted(reader._index_of)  # pts of frame k (private, bench-only peek)
    want = {order[int(k)] for k in idx}
    first, last = order[int(idx[0])], order[int(idx[-1])]
    with av.open(str(video)) as c:
        s = c.streams.video[0]
        s.codec_context.thread_count = 1
        tick = _Ticker(times)
        c.seek(first, stream=s, backward=True, any_frame=False)
        kept = []
        for f in c.decode(s):
            if f.pts in want:
                kept.append(f)
            if f.pts >= last:
                break
        tick("seek+decode, no conversion")
        for f in kept:
            f.to_ndarray(format="rgb24")
        tick("16 x frame.to_ndarray(rgb24)")


def breakdown(videos: list[Path], clips: int, repeats: int = 2) -> tuple[dict, dict, dict, float]:
    """Per-stage CPU time of both paths, one process, interleaved clip by clip (so a burst of
    load elsewhere hits both). Each clip is decoded `repeats` times per path."""
    tf = train_transform(SIZE, crop="multiscale", flip=True)
    sampler = TemporalSampler("stride", FRAMES, STRIDE)
    ref = DecordClips(videos)
    ours_t: dict[str, float] = {}
    replay_t: dict[str, float] = {}
    ref_t: dict[str, float] = {}
    decoded = 0
    for rep in range(repeats):
        for i in range(clips):
            video = videos[i % len(videos)]
            rngs = [np.random.default_rng([0, 99, i]) for _ in range(2)]
            jobs = [
                (_ours_stages, (tf, sampler, video, rngs[0], ours_t)),
                (_replay_stages, (sampler, video, rngs[1], replay_t)),
                (ref.load, (i % len(videos), random.Random(i), ref_t)),
            ]
            for fn, fn_args in jobs if (i + rep) % 2 == 0 else jobs[::-1]:
                out = fn(*fn_args)
                if isinstance(out, int):
                    decoded += out
    n = clips * repeats
    return ({k: v / repeats for k, v in ours_t.items()}, {k: v / repeats for k, v in replay_t.items()},
            {k: v / repeats for k, v in ref_t.items()}, decoded / n)


def handoff(batch: int, repeats: int = 6) -> tuple[float, float]:
    """CPU ms per clip to hand a collated batch from a worker to the main process.

    A worker's batch is pickled onto a queue; a tensor not already in shared memory is copied
    into a fresh shared segment then. progvid's `collate` builds the batch with plain
    `torch.cat` (so it is copied again); torch's `default_collate` (the reference side) stacks
    straight into a shared segment when it runs in a worker."""
    items = [{"video": torch.randn(1, 3, FRAMES, SIZE, SIZE), "label": -1, "index": k,
              "skipped": []} for k in range(batch)]
    clips = [it["video"][0] for it in items]

    def ours() -> None:
        collate(items)["video"].share_memory_()

    def reference() -> None:
        numel = sum(c.numel() for c in clips)
        shared = clips[0].untyped_storage()._new_shared(numel * clips[0].element_size())
        out = clips[0].new(shared).resize_(len(clips), *clips[0].shape)
        torch.stack(clips, 0, out=out)

    res = {ours: 0.0, reference: 0.0}
    for fn in (ours, reference):
        fn()
    for _ in range(repeats):
        for fn in (ours, reference):
            t = time.process_time()
            fn()
            res[fn] += time.process_time() - t
    return 1e3 * res[ours] / repeats / batch, 1e3 * res[reference] / repeats / batch


def profile_ours(videos: list[Path], clips: int, top: int) -> str:
    ds = ours_dataset(videos, clips)
    prof = cProfile.Profile()
    prof.enable()
    for i in range(clips):
        ds[(5, i)]
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    return buf.getvalue()


def sanity(videos: list[Path]) -> str:
    """Same frames from both decoders? (Both are FFmpeg + swscale underneath.)"""
    idx = list(range(100, 164, STRIDE))
    with VideoReader(videos[0]) as r:
        ours = r.read(idx).numpy().astype(np.int16)
    ref = decord.VideoReader(str(videos[0]), num_threads=1, ctx=decord.cpu(0)).get_batch(idx).asnumpy()
    d = np.abs(ours - ref.astype(np.int16))
    return f"max |ours - decord| = {d.max()}, mean = {d.mean():.3f} (uint8 levels, frames {idx[0]}..{idx[-1]})"


def machine() -> str:
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), platform.processor())
    mem = next((ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines()
                if ln.startswith("MemTotal")), "0")
    return f"{os.cpu_count()} CPUs ({model}), {int(mem) / 2**20:.1f} GiB RAM, {platform.platform()}"


def throughput(videos: list[Path], args: argparse.Namespace) -> None:
    """Both loaders side by side: warm-up epoch each, then alternating measured rounds."""
    ours = build_loader(ours_dataset(videos, args.clips, args.seed, args.transfer), batch_size=args.batch, train=True,
                        workers=args.workers, seed=args.seed)
    ref = reference_loader(videos, args.clips, batch=args.batch, workers=args.workers, seed=args.seed)
    sides = {"ours": (ours, True), "reference": (ref, False)}

    # warm-up: worker start + first touches, one epoch each, excluded
    for name, (loader, epochs) in sides.items():
        n, dt = run_epoch(loader, 0 if epochs else None)
        print(f"warm-up {name:<9}: {n} clips in {dt:.2f} s (excluded)", flush=True)

    pids = {name: _worker_pids(loader) for name, (loader, _) in sides.items()}
    rates: dict[str, list[float]] = {"ours": [], "reference": []}
    cpu: dict[str, list[float]] = {"ours": [], "reference": []}  # CPU ms per clip
    cpu_main: dict[str, list[float]] = {"ours": [], "reference": []}  # of which main process
    for r in range(args.rounds):
        order = ["ours", "reference"] if r % 2 == 0 else ["reference", "ours"]
        line = [f"round {r + 1}:"]
        for name in order:
            loader, epochs = sides[name]
            m0, c0 = _cpu_seconds(pids[name])
            n, dt = run_epoch(loader, r + 1 if epochs else None)
            m1, c1 = _cpu_seconds(pids[name])
            cpu[name].append(1e3 * (c1 - c0) / n)
            cpu_main[name].append(1e3 * (m1 - m0) / n)
            rates[name].append(n / dt)
            line.append(f"{name} {n / dt:6.2f} clips/s ({dt:5.2f} s, {cpu[name][-1]:5.1f} CPU ms/clip)")
        line.append(f"ratio {rates['ours'][-1] / rates['reference'][-1]:.2f}  load {os.getloadavg()[0]:.2f}")
        print("  ".join(line), flush=True)
    del ours, ref, sides  # stop the workers before single-process timing

    mo, mr = statistics.median(rates["ours"]), statistics.median(rates["reference"])
    paired = [a / b for a, b in zip(rates["ours"], rates["reference"], strict=True)]
    print(f"median  : ours {mo:.2f} clips/s, reference {mr:.2f} clips/s")
    print(f"RATIO ours/reference = {mo / mr:.2f} (median of rates); per-round ratios "
          f"{', '.join(f'{x:.2f}' for x in paired)} (median {statistics.median(paired):.2f}, "
          f"min {min(paired):.2f}, max {max(paired):.2f}); goal >= 2.00")
    if all(pids.values()):
        co, cr = statistics.median(cpu["ours"]), statistics.median(cpu["reference"])
        mo_, mr_ = statistics.median(cpu_main["ours"]), statistics.median(cpu_main["reference"])
        print(f"CPU cost (workers + main process, median per round): ours {co:.1f} ms/clip "
              f"(main process {mo_:.1f}), reference {cr:.1f} ms/clip (main process {mr_:.1f}) -> "
              f"reference/ours {cr / co:.2f} (the throughput ratio on an otherwise idle machine, "
              f"when the CPUs are the bottleneck)")


# --------------------------------------------------------------------------------------------
def _auto_or_positive(text: str) -> int | str:
    """`auto` or a whole number >= 1 (argparse turns the error into one line and exit 2)."""
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected auto or a whole number >= 1, got {text!r}")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=12)
    p.add_argument("--rounds", type=int, default=6, help="measured rounds per side (alternating)")
    p.add_argument("--clips", type=int, default=48, help="clips per round (multiple of --batch)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=568)
    p.add_argument("--height", type=int, default=320)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--gop", type=int, default=60, help="keyframe interval in frames")
    p.add_argument("--preset", default="medium")
    p.add_argument("--crf", type=int, default=23)
    p.add_argument("--cache", type=Path, default=Path("/tmp/progvid_bench_videos"))
    p.add_argument("--breakdown-clips", type=int, default=24,
                   help="clips for the single-process per-stage breakdown (0: skip)")
    p.add_argument("--profile", type=int, default=0, metavar="TOP",
                   help="also cProfile our __getitem__ in one process and print the TOP functions")
    p.add_argument("--transfer", choices=("uint8", "float32"), default="uint8",
                   help="how our clips leave the workers (data.transfer; uint8 is then normalised "
                        "in the main process, counted in its CPU time)")
    p.add_argument("--main-threads", default="auto", type=_auto_or_positive,
                   help="torch threads of the main process, which normalises our uint8 batches "
                        "(auto: as `train.threads: auto` sets a training process, the cores the "
                        "loader workers leave, at least 1)")
    p.add_argument("--prepare", action="store_true",
                   help="measure both loaders on the videos after `progvid data prepare` (its "
                        "defaults: short side 320, a keyframe every 16 frames, fastdecode)")
    args = p.parse_args(argv)

    if decord is None:
        print("decord is not installed; the reference side needs it: pip install decord\n"
              "(bench-only; not a progvid dependency; see bench/loader_throughput.md)", file=sys.stderr)
        return 2
    if Image is None:
        print("Pillow is not installed: pip install pillow", file=sys.stderr)
        return 2
    if args.clips % args.batch or args.clips < args.batch:
        p.error("--clips must be a positive multiple of --batch")

    torch.set_num_threads(cpu_threads(args.main_threads, args.workers))
    print("machine :", machine())
    print(f"versions: python {platform.python_version()}, torch {torch.__version__}, av {av.__version__} "
          f"(libavcodec {'.'.join(map(str, av.library_versions['libavcodec']))}), "
          f"decord {decord.__version__}, numpy {np.__version__}, pillow {Image.__version__}")
    print("progvid :", Path(progvid.__file__).parent)
    print(f"settings: {args.videos} videos {args.width}x{args.height} {args.seconds:g}s @{args.fps}fps "
          f"h264 yuv420p gop {args.gop} preset {args.preset} crf {args.crf}; clips {FRAMES}x stride "
          f"{STRIDE} -> {SIZE}; batch {args.batch}, workers {args.workers}, prefetch 4, our clips handed over as {args.transfer}; "
          f"{args.rounds} rounds x {args.clips} clips per side; main-process torch threads {torch.get_num_threads()}")

    videos = make_videos(args.cache, args.videos, width=args.width, height=args.height,
                         seconds=args.seconds, fps=args.fps, gop=args.gop, preset=args.preset,
                         crf=args.crf)
    if args.prepare:
        from progvid.data.prepare import prepare_dataset

        out = args.cache.with_name(args.cache.name + "_prepared")
        report = prepare_dataset(args.cache, out, fmt="unlabeled", workers=2)
        videos = sorted(p for p in (out / "videos").rglob("*.mp4"))
        print(f"prepared: {len(videos)} videos -> {out} (progvid data prepare defaults; "
              f"{report.encoded} encoded, {report.reused} reused)")
    size_mb = sum(v.stat().st_size for v in videos) / 1e6
    print(f"videos  : {args.cache if not args.prepare else out} ({size_mb / len(videos):.2f} MB each, "
          f"~{8 * size_mb / len(videos) / args.seconds:.2f} Mbit/s)")
    print("sanity  :", sanity(videos))

    if args.rounds > 0:
        throughput(videos, args)

    if args.breakdown_clips:
        torch.set_num_threads(1)  # what a DataLoader worker runs with
        k = args.breakdown_clips
        ours_t, replay_t, ref_t, decoded = breakdown(videos, k)
        print(f"\nsingle process (workers=0, 1 torch thread), CPU time per clip, mean over {k} clips "
              f"x 2, both paths interleaved:")
        print(f"  ours ({decoded:.1f} frames decoded per clip on average):")
        print("\n".join(_fmt_ms(ours_t, k)))
        print("  ours, read() split by a bare-PyAV replay of the same reads:")
        print("\n".join(_fmt_ms(replay_t, k)))
        print("  reference:")
        print("\n".join(_fmt_ms(ref_t, k)))
        o, r = handoff(args.batch)
        print(f"  worker -> main hand-off of a batch of {args.batch}, CPU per clip: progvid collate "
              f"then copy to shared memory (what pickling does to a batch built outside shared "
              f"memory) {o:.1f} ms; default_collate straight into shared memory {r:.1f} ms")
    if args.profile:
        torch.set_num_threads(1)
        print(f"\ncProfile of ours, {max(args.breakdown_clips, 12)} x VideoDataset.__getitem__ (1 process):")
        print(profile_ours(videos, max(args.breakdown_clips, 12), args.profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
