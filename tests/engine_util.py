"""Helpers for engine tests: a tiny pre-training config on the synthetic dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from progvid.config import FinetuneConfig, PretrainConfig, validate


def tiny_pretrain(data_dir: Path, **over: Any) -> PretrainConfig:
    raw: dict[str, Any] = {
        "task": "pretrain",
        "seed": 1,
        "data": {"root": str(data_dir), "train": "train.csv", "num_frames": 4, "sampling_rate": 2,
                 "input_size": 32, "flip": False, "workers": 0},
        "model": {"size": "tiny", "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2,
                  "decoder_dim": 32, "decoder_heads": 2, "decoder_depth": 1},
        "optim": {"base_lr": 1e-2, "warmup_epochs": 0.5},
        "train": {"batch_size": 4, "device": "cpu", "log_every": 1, "ckpt_every": 1000,
                  "tensorboard": False},
        "budget": {"epochs": 1, "ref_frames": 4},
        "plan": {"stages": [{"frames": 4, "share": 1.0}]},
    }
    for key, value in over.items():
        section, _, field = key.partition("__")
        if field:
            raw.setdefault(section, {})[field] = value
        else:
            raw[section] = value
    return validate(PretrainConfig, raw, "test")


def tiny_finetune(data_dir: Path, **over) -> FinetuneConfig:
    raw = {
        "task": "finetune", "seed": 0, "epochs": 1,
        "data": {"root": str(data_dir), "train": "train.csv", "val": "val.csv",
                 "classes": "classes.txt", "num_frames": 4, "sampling_rate": 2, "input_size": 32,
                 "flip": False, "workers": 0},
        "model": {"size": "tiny", "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2},
        "optim": {"warmup_epochs": 0.2},
        "train": {"batch_size": 4, "device": "cpu", "log_every": 1, "tensorboard": False},
        "eval": {"clips": 2, "crops": 3, "batch_size": 4},
    }
    for k, v in over.items():
        sec, _, field = k.partition("__")
        if field:
            raw.setdefault(sec, {})[field] = v
        else:  # a top-level key (epochs)
            raw[sec] = v
    return validate(FinetuneConfig, raw, "test")


def losses(run_dir: Path) -> list[tuple[int, float]]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows]
