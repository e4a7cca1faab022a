"""HCML against its plain 3-D ResNet backbone, on the synthetic motion dataset or `--data DIR`.

Same backbone, same fine-tuning epochs: (a) the plain ResNet3D trained for classification;
(b) HCML: the self-supervised phases (flow network, then each level, lower levels frozen), then
joint fine-tuning (L_cls + lambda L_recon + sum gamma L_contrastive). Records both accuracies
(multi-view testing) and the deployed model's parameter and FLOP overhead against the backbone.
Writes bench/hcml_vs_backbone.md (`--md` elsewhere). With `--data DIR` (a list-format folder,
e.g. `progvid synth --kind pan`) it runs `--seeds` seeds, optionally on a stratified
`--label-fraction` of the training labels (HCML's self-supervised phases still see every
training clip), and reports mean +- standard deviation, the paired differences and chance.
A finished step leaves bench_seconds.json / bench_row.json in its folder and a rerun reuses it
without comparing settings: after changing epochs or data, delete the --out folder.

    .venv/bin/python bench/hcml_vs_backbone.py [--finetune-epochs 15] [--flow-epochs 10] [--level-epochs 5]
    .venv/bin/python bench/hcml_vs_backbone.py --data /tmp/pan16 --seeds 3 --label-fraction 0.1 --md /tmp/hcml_pan.md
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from evidence import write_report  # bench/ is sys.path[0]

from progvid.config import FinetuneConfig, HCMLConfig, validate
from progvid.data.datasets import build_samples, stratified_subset, write_list
from progvid.data.synthetic import write_dataset
from progvid.figures import pyplot, save_figure
from progvid.models.hcml import GAMMA
from progvid.tasks.finetune import run_finetune
from progvid.tasks.hcml import deploy_report, run_hcml_pretrain

DATA = {"train": "train.csv", "val": "val.csv", "classes": "classes.txt", "num_frames": 8,
        "sampling_rate": 2, "input_size": 32, "flip": False, "workers": 1}
MODEL = {"resnet_depth": 18, "width": 0.25}


def spread(vals: list[float]) -> str:
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{statistics.fmean(vals):.3f} +- {sd:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--finetune-epochs", type=float, default=15)
    ap.add_argument("--flow-epochs", type=float, default=10)
    ap.add_argument("--level-epochs", type=float, default=5)
    ap.add_argument("--train", type=int, default=400)
    ap.add_argument("--val", type=int, default=200)
    ap.add_argument("--out", default="runs/bench_hcml")
    ap.add_argument("--classes", type=int, default=4,
                    help="motion classes (default 4: the four translations)")
    ap.add_argument("--data", default=None, help="an existing list-format dataset (default: write motion data)")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--label-fraction", type=float, default=1.0)
    ap.add_argument("--contrastive-weight", type=float, action="append", default=None, metavar="GAMMA",
                    help="gamma of HCML's joint fine-tuning loss (L_cls + lambda L_recon + gamma sum_l "
                         "L_contrastive^l), repeatable: one pre-trained HCML model per value (default: "
                         "the library's, 0.1); a value other than 1 fine-tunes into ft_hcml_g<gamma>")
    ap.add_argument("--hcml-scratch", type=float, action="append", default=[], metavar="GAMMA",
                    help="also fine-tune HCML from random init (no self-supervised phases) with this "
                         "gamma, repeatable: separates the architecture from its pre-training")
    ap.add_argument("--md", default=str(Path(__file__).with_suffix(".md")))
    ap.add_argument("--only-seed", type=int, default=None, metavar="K",
                    help="run seed K's models only (of --seeds) and write no report: start one "
                         "process per seed, then rerun without it to report (finished runs are reused)")
    args = ap.parse_args()
    if args.only_seed is not None and not 0 <= args.only_seed < args.seeds:
        ap.error(f"--only-seed {args.only_seed}: not one of the {args.seeds} seeds")
    gammas = args.contrastive_weight or [GAMMA]
    out = Path(args.out)
    if args.data:
        data = Path(args.data).resolve()
    else:
        data = out / "data"
        write_dataset(data, train=args.train, val=args.val, size=32, frames=16, seed=0, workers=2,
                      classes=args.classes)
    d = {**DATA, "root": str(data)}
    rows, pre_s = [], []
    for seed in range(args.seeds) if args.only_seed is None else [args.only_seed]:
        sub = out / f"s{seed}" if args.seeds > 1 or args.data else out
        pre = validate(HCMLConfig, {
            "task": "hcml", "seed": seed, "data": d, "model": MODEL,
            "optim": {"base_lr": 2e-2, "warmup_epochs": 0.5},
            "train": {"batch_size": 8, "device": "cpu", "log_every": 20, "tensorboard": False},
            "phases": {"flow_epochs": args.flow_epochs, "level_epochs": args.level_epochs}}, "bench")
        # a finished step leaves a small JSON beside its run, so a rerun reuses it (and its
        # recorded wall time) instead of timing a resume that does nothing
        pre_file = sub / "hcml_pretrain" / "bench_seconds.json"
        if not pre_file.is_file():
            t0 = time.time()
            run_hcml_pretrain(pre, out=str(sub / "hcml_pretrain"), resume="auto")
            pre_file.write_text(json.dumps({"seconds": time.time() - t0}))
        pre_s.append(json.loads(pre_file.read_text())["seconds"])
        labels = {}
        if args.label_fraction < 1.0:
            chosen = stratified_subset(build_samples(pre.data, "train").samples, args.label_fraction, seed)
            labels = {"train": str(write_list(chosen, sub / "labels.csv"))}
        models = [("resnet3d", "resnet3d", None, 1.0),
                  *((f"hcml{suffix(g)}", "hcml", str(sub / "hcml_pretrain"), g) for g in gammas),
                  *((f"hcml_scratch{suffix(g)}", "hcml", None, g) for g in args.hcml_scratch)]
        for key, name, init, gamma in models:
            run = sub / f"ft_{key}"
            row_file = run / "bench_row.json"
            if row_file.is_file():
                rows.append(json.loads(row_file.read_text()))
                continue
            cfg = validate(FinetuneConfig, {
                "task": "finetune", "seed": seed, "epochs": args.finetune_epochs, "data": {**d, **labels},
                "model": {"name": name, "init": init, **MODEL},
                "optim": {"base_lr": 2e-2, "warmup_epochs": 1, "weight_decay": 1e-4, "layer_decay": 1.0},
                "train": {"batch_size": 8, "device": "cpu", "log_every": 20, "tensorboard": False},
                "mixup": {"prob": 0.0}, "eval": {"clips": 2, "crops": 1},
                "hcml": {**MODEL, "contrastive_weight": gamma}}, "bench")
            t1 = time.time()
            run_finetune(cfg, out=str(run), resume="auto")
            ev = json.loads((run / "eval.json").read_text())
            rows.append({"model": key, "seed": seed, "top1": ev["top1"], "top5": ev["top5"],
                         "mean_class_accuracy": ev["mean_class_accuracy"], "wall_s": time.time() - t1})
            row_file.write_text(json.dumps(rows[-1]))
            print(json.dumps(rows[-1]), flush=True)
    if args.only_seed is not None:
        return
    chance = 1 / len(build_samples(pre.data, "train").class_names or [0])
    lines = ["| model | top-1 | top-5 | mean class acc. | fine-tune wall s | seeds |", "|---|---|---|---|---|---|"]
    names = [m[0] for m in models]
    for name in names:
        mine = [r for r in rows if r["model"] == name]
        lines.append(f"| {tick(name).replace(chr(10), ', ')} | {spread([r['top1'] for r in mine])} | {spread([r['top5'] for r in mine])} | "
                     f"{spread([r['mean_class_accuracy'] for r in mine])} | "
                     f"{statistics.fmean(r['wall_s'] for r in mine):.0f} | {len(mine)} |")
    top1 = {(r["model"], r["seed"]): r["top1"] for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    pairs = [(f"hcml{suffix(g)}", "resnet3d", f"HCML (gamma {g:g}) - plain") for g in gammas]
    for g in args.hcml_scratch:
        pairs.append((f"hcml_scratch{suffix(g)}", "resnet3d", f"HCML from random init (gamma {g:g}) - plain"))
        if g in gammas:
            pairs.append((f"hcml{suffix(g)}", f"hcml_scratch{suffix(g)}",
                          f"HCML - HCML from random init (gamma {g:g}: what the self-supervised phases add)"))
    lines += ["", f"Chance {chance:.3f}. Paired top-1 differences per seed:", ""]
    for a, b, what in pairs:
        diffs = [top1[a, sd] - top1[b, sd] for sd in seeds]
        lines.append(f"- {what}: " + ", ".join(f"{x:+.3f}" for x in diffs)
                     + f" (mean {statistics.fmean(diffs):+.3f}; {sum(x > 0 for x in diffs)} of {len(diffs)} positive)")
    sub = out / "s0" if args.seeds > 1 or args.data else out
    dep = deploy_report(sub / f"ft_{names[1]}")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    md = ["# HCML vs the plain 3-D ResNet backbone" + ("" if args.data else " (synthetic motion dataset)"), "",
          f"- date: {time.strftime('%Y-%m-%d')}; commit {commit}; torch {torch.__version__}, {torch.get_num_threads()} threads",
          "- command: `.venv/bin/python bench/hcml_vs_backbone.py " + shlex.join(sys.argv[1:]) + "`",
          (f"- data: {data}, {args.label_fraction:.0%} of the training labels for fine-tuning; 8 frames (stride 2) at 32x32"
           if args.data else
           f"- data: {args.train} train / {args.val} val synthetic clips, 8 frames (stride 2) at 32x32, {args.classes} motion classes"),
          "- backbone: ResNet3D-18 at width 0.25; HCML levels 1-3, beta 4, d 6, s 2",
          f"- HCML self-supervised phases: flow {args.flow_epochs:g} epochs, {args.level_epochs:g} epochs per level "
          f"({statistics.fmean(pre_s):.0f} s per seed)",
          f"- fine-tuning: {args.finetune_epochs:g} epochs for every model (HCML's joint loss with lambda 1, "
          f"gamma as in each row), AdamW lr 2e-2 x batch/256, no mixup; test 2 clips",
          "", *lines, "",
          "Deployed HCML (flow network and predictors dropped) against the plain backbone, "
          f"input {dep['input']}:", "",
          f"- parameters: {dep['params_deploy']:,} vs {dep['params_backbone']:,} ({100 * dep['params_overhead']:+.1f}%)",
          f"- MACs: {dep['macs_deploy'] / 1e9:.4g} G vs {dep['macs_backbone'] / 1e9:.4g} G ({100 * dep['macs_overhead']:+.1f}%)",
          ""]
    write_report(Path(args.md), "\n".join(md) + "\n")  # keeps a hand-written reading
    plot(rows, names, chance, Path(args.md).with_suffix(".png"),
         f"{args.label_fraction:.0%} of the labels, {args.seeds} seed(s), {args.finetune_epochs:g} fine-tuning epochs")
    print("\n".join(lines))


def suffix(gamma: float) -> str:
    return "" if gamma == 1.0 else f"_g{gamma:g}"


def tick(name: str) -> str:
    base, _, g = name.partition("_g")
    text = {"resnet3d": "plain ResNet3D-18", "hcml": "HCML (same backbone)",
            "hcml_scratch": "HCML, random init"}[base]
    return text + f"\ngamma {g or 1}" * (base != "resnet3d")


def plot(rows: list[dict], names: list[str], chance: float, png: Path, subtitle: str) -> None:
    """Top-1 of each model: one point per seed, a line joining each seed's runs, the mean with
    its standard deviation, and chance."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(2 + 1.5 * len(names), 4))
    xs = list(range(len(names)))
    for seed in sorted({r["seed"] for r in rows}):
        ys = [next(r["top1"] for r in rows if r["model"] == n and r["seed"] == seed) for n in names]
        ax.plot(xs, ys, color="0.7", marker="o", lw=1, zorder=1)
    for i, n in enumerate(names):
        vals = [r["top1"] for r in rows if r["model"] == n]
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        ax.errorbar([i + 0.08], [statistics.fmean(vals)], yerr=[sd], fmt="s", color=f"C{i}",
                    capsize=4, zorder=2, label="mean +- sd" if i == 0 else None)
    ax.axhline(chance, ls="--", color="k", lw=1, label=f"chance {chance:.3f}")
    ax.set_xticks(xs, [tick(n) for n in names], fontsize=8)
    ax.set_xlim(-0.5, len(names) - 0.5)
    ax.set_ylabel("top-1 on the validation clips")
    ax.set_title(f"HCML vs its backbone\n{subtitle}", fontsize=9)
    ax.legend(fontsize=8)
    save_figure(fig, png)


if __name__ == "__main__":
    main()
