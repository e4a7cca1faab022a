"""Frozen features of pre-trained VideoMAE runs, looked at several ways: why does a run's kNN
differ from another's?

bench/tpl_claims.py scores a pre-trained encoder by a linear probe (on standardised features)
and a weighted kNN on the cosine of the raw features. A feature set whose vectors all lean the
same way (a large shared component) crowds the cosine kNN while the probe standardises it away.
This script scores each run's encoder by kNN on raw, train-mean-centred and standardised
features, by the probe, and by the mean cosine of a feature to the train mean (how much they
share), at several clip lengths, and pairs the groups by seed against the first group:

    .venv/bin/python bench/frozen_features.py --group videomae='RUNS/videomae_15_*/pretrain' \\
        --group tpl='RUNS/tpl_15_*/pretrain' --frames 8,4,2 --md bench/frozen_features.md

Runs are pre-training run folders (their config.yaml names the data and the seed); every run
is evaluated on its config's train / val splits with centre views, temporal pooling, one torch
thread, no loader workers, as in tpl_claims.py. Results: bench/frozen_features.md.
"""

from __future__ import annotations

import argparse
import glob
import json
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from evidence import write_report  # bench/ is sys.path[0]

from progvid.config import load_config
from progvid.errors import ProgvidError
from progvid.loading import load_videomae
from progvid.tasks.evaluate import knn, linear_probe, probe_features
from progvid.tasks.pretrain import build_model

MEASURES = [("knn_raw", "kNN, raw (as tpl_claims)"), ("knn_centred", "kNN, centred"),
            ("knn_std", "kNN, standardised"), ("probe", "linear probe"),
            ("cos_to_mean", "mean cosine to the train mean")]


def score(run: Path, frames: list[int], untrained: bool = False) -> tuple[int, dict[int, dict[str, float]]]:
    """(seed, {frames: {measure: value}}) of one pre-training run's encoder, or with `untrained`
    of the same architecture at random init (seeded by the run's seed, as tpl_claims.py does)."""
    cfg = load_config(str(run / "config.yaml"))
    data = cfg.data.model_copy(update={"workers": 0})
    if untrained:
        torch.manual_seed(cfg.seed)
        encoder = build_model(cfg).encoder
    else:
        encoder = load_videomae(run).encoder
    out = {}
    for f in frames:
        # what bench/tpl_claims.py's probe and kNN see (its probe_encoder calls), one split each
        (tx, ty), (vx, vy), classes = probe_features(encoder, data, num_frames=f, seed=cfg.seed)
        classes = classes or int(max(ty.max(), vy.max())) + 1
        mu, sd = tx.mean(0), tx.std(0) + 1e-6
        out[f] = {"classes": classes, "knn_raw": knn(tx, ty, vx, vy, num_classes=classes).top1,
                  "knn_centred": knn(tx - mu, ty, vx - mu, vy, num_classes=classes).top1,
                  "knn_std": knn((tx - mu) / sd, ty, (vx - mu) / sd, vy, num_classes=classes).top1,
                  "probe": linear_probe(tx, ty, vx, vy, num_classes=classes, seed=cfg.seed).top1,
                  "cos_to_mean": float(torch.nn.functional.cosine_similarity(tx, mu[None]).mean())}
    return int(cfg.seed), out


def report(groups: dict[str, dict[int, dict]], frames: list[int], command: str) -> str:
    names = list(groups)
    ref = names[0]
    lines = ["# Frozen features of pre-trained runs, several ways (bench/frozen_features.py)", "",
             f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; machine: {platform.machine()}, "
             f"torch {torch.__version__}, 1 thread",
             f"- command: `{command}`",
             "- each cell: mean +- sd over the group's seeds; paired rows: the group minus "
             f"`{ref}` on the same seed, in points (the cosine row in hundredths)",
             f"- chance {1 / next(iter(groups[ref].values()))[frames[0]]['classes']:.3f}"
             + ("; `random init`: the first group's architecture untrained, one per seed" if "random init" in groups else ""),
             ""]
    for f in frames:
        lines += [f"## {f}-frame clips", "",
                  "| group | seeds | " + " | ".join(h for _, h in MEASURES) + " |",
                  "|---|---|" + "---|" * len(MEASURES)]
        for name in names:
            runs = groups[name]
            cells = []
            for m, _ in MEASURES:
                xs = [r[f][m] for r in runs.values()]
                cells.append(f"{statistics.fmean(xs):.3f} +- {statistics.stdev(xs) if len(xs) > 1 else 0:.3f}")
            lines.append(f"| {name} | {', '.join(map(str, sorted(runs)))} | " + " | ".join(cells) + " |")
        for name in names[1:]:
            seeds = sorted(set(groups[name]) & set(groups[ref]))
            if not seeds:
                continue
            cells = []
            for m, _ in MEASURES:
                d = [100 * (groups[name][s][f][m] - groups[ref][s][f][m]) for s in seeds]
                cells.append(f"{statistics.fmean(d):+.1f} +- {statistics.stdev(d) if len(d) > 1 else 0:.1f}")
            lines.append(f"| {name} - {ref} | {', '.join(map(str, seeds))} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--group", action="append", required=True, metavar="NAME=GLOB",
                   help="a group of pre-training run folders (repeatable; the first is the reference)")
    p.add_argument("--frames", default="8,4,2", help="clip lengths to evaluate at")
    p.add_argument("--md", type=Path, default=None, help="write the report here (keeps its ## Reading)")
    p.add_argument("--random-init", action="store_true",
                   help="also score the first group's architecture untrained (one per seed)")
    p.add_argument("--json", type=Path, default=None, help="also write every score here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    frames = [int(x) for x in args.frames.split(",")]
    groups: dict[str, dict[int, dict]] = {}
    for spec in args.group:
        name, sep, pattern = spec.partition("=")
        runs = sorted(Path(x) for x in glob.glob(pattern))
        if not sep or not runs:
            p.error(f"--group {spec!r}: expected NAME=GLOB matching at least one run folder")
        groups[name] = {}
        for run in runs:
            try:
                seed, scores = score(run, frames)
            except ProgvidError as e:
                print(f"frozen_features: {run}: {e}", file=sys.stderr)
                return 2
            groups[name][seed] = scores
            print(f"{name} seed {seed}: {json.dumps(scores)}", flush=True)
    if args.random_init:
        first = sorted(Path(x) for x in glob.glob(args.group[0].partition("=")[2]))
        groups["random init"] = dict(score(run, frames, untrained=True) for run in first)
    command = "python bench/frozen_features.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    text = report(groups, frames, command)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(groups, indent=1))
    if args.md:
        write_report(args.md, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
