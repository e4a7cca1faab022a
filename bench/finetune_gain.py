"""Does progvid pre-training help? Fine-tune from a pre-trained checkpoint vs from scratch.

On the synthetic motion dataset: pre-train a tiny VideoMAE (baseline recipe), then fine-tune two
classifiers with the same schedule, one initialised from the checkpoint and one at random, and
evaluate both with multi-view testing. Writes bench/finetune_gain.md.

    .venv/bin/python bench/finetune_gain.py [--pretrain-epochs 40] [--finetune-epochs 15]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import torch

from progvid.config import FinetuneConfig, validate
from progvid.data.synthetic import write_dataset
from progvid.demo import PLANS, synthetic_pretrain_config
from progvid.tasks.finetune import run_finetune
from progvid.tasks.pretrain import run_pretrain


def finetune_config(data: Path, init: str | None, epochs: float, seed: int) -> FinetuneConfig:
    raw = {
        "task": "finetune", "seed": seed, "epochs": epochs,
        "data": {"root": str(data), "train": "train.csv", "val": "val.csv", "classes": "classes.txt",
                 "num_frames": 16, "sampling_rate": 1, "input_size": 32, "flip": False, "workers": 1},
        "model": {"name": "vit", "init": init, "size": "tiny", "patch_size": 8, "embed_dim": 96,
                  "depth": 4, "num_heads": 3, "drop_path": 0.1},
        # base lr 1e-2 (x 8/256 = 3.1e-4): VideoMAE's 1e-3 gives 3e-5 at batch 8, too low to
        # move in a few CPU epochs; no mixup, which slows short runs on small data
        "optim": {"base_lr": 1e-2, "warmup_epochs": 1},
        "train": {"batch_size": 8, "device": "cpu", "log_every": 20, "tensorboard": False},
        "mixup": {"prob": 0.0, "label_smoothing": 0.1},
        "eval": {"clips": 2, "crops": 3},
    }
    return validate(FinetuneConfig, raw, "bench")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pretrain-epochs", type=float, default=40)
    ap.add_argument("--finetune-epochs", type=float, default=15)
    ap.add_argument("--train", type=int, default=400)
    ap.add_argument("--val", type=int, default=200)
    ap.add_argument("--out", default="runs/bench_finetune")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--classes", type=int, default=4,
                    help="motion classes (default 4: the four translations)")
    args = ap.parse_args()
    out = Path(args.out)
    data = out / "data"
    write_dataset(data, train=args.train, val=args.val, size=32, frames=16, seed=0, workers=2,
                  classes=args.classes)
    pre = out / "pretrain"
    t0 = time.time()
    cfg = synthetic_pretrain_config(data, PLANS["videomae"], args.pretrain_epochs,
                                    train={"log_every": 20, "tensorboard": False})
    run_pretrain(cfg, out=str(pre), resume="auto", progress=False)
    pre_s = time.time() - t0
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for name, init in (("from progvid pre-training", str(pre)), ("from random init", None)):
            run = out / f"ft_{'pre' if init else 'scratch'}_{seed}"
            t0 = time.time()
            run_finetune(finetune_config(data, init, args.finetune_epochs, seed), out=str(run),
                         resume="auto")
            ev = json.loads((run / "eval.json").read_text())
            rows.append({"init": name, "seed": seed, "top1": ev["top1"], "top5": ev["top5"],
                         "mean_class_accuracy": ev["mean_class_accuracy"], "wall_s": time.time() - t0})
            print(json.dumps(rows[-1]), flush=True)
    lines = ["| initialisation | seed | top-1 | top-5 | mean class acc. | wall s |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['init']} | {r['seed']} | {r['top1']:.3f} | {r['top5']:.3f} | "
                     f"{r['mean_class_accuracy']:.3f} | {r['wall_s']:.0f} |")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    md = ["# Fine-tuning from progvid pre-training vs random initialisation", "",
          f"- date: {time.strftime('%Y-%m-%d')}; commit {commit}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads",
          f"- command: `.venv/bin/python bench/finetune_gain.py --pretrain-epochs {args.pretrain_epochs:g} "
          f"--finetune-epochs {args.finetune_epochs:g} --train {args.train} --val {args.val} --seeds {args.seeds} "
          f"--classes {args.classes}`",
          f"- data: synthetic motion dataset, {args.classes} classes, {args.train} train / {args.val} val clips, 32x32, 16 frames",
          f"- pre-training: tiny VideoMAE baseline recipe, {args.pretrain_epochs:g} epochs ({pre_s:.0f} s)",
          f"- fine-tuning: same schedule for both ({args.finetune_epochs:g} epochs, base lr 1e-2 x 8/256, layer decay 0.75, "
          "drop path 0.1, label smoothing 0.1, no mixup); test 2 clips x 3 crops", "", *lines, ""]
    Path(__file__).with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
