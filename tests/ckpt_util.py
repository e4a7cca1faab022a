"""Small checkpoints written directly (no training): a fine-tuned ViT classifier, a VideoMAE
pre-training run, an HCML run, and transformers folders, for interop / predict / error tests.

Every weight is drawn N(0, 0.1) so biases and norms matter in parity checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from progvid.engine.checkpoint import plain_state_dict, save_checkpoint
from progvid.models import VideoMAE, videomae
from progvid.models.classifier import VideoClassifier, classifier

NAMES = ["move right", "move_left", "grow", "fade out"]  # a space: names are free text
DATA = {"num_frames": 4, "sampling_rate": 2, "input_size": 32, "workers": 0,
        "mean": [0.5, 0.45, 0.4], "std": [0.25, 0.22, 0.2]}


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()


def tiny_classifier(num_classes: int = 4, seed: int = 0) -> VideoClassifier:
    model = classifier("tiny", num_classes=num_classes, num_frames=4, img_size=32, patch_size=8,
                       embed_dim=32, depth=2, num_heads=2, mean=tuple(DATA["mean"]),
                       std=tuple(DATA["std"]))
    return randomize(model, seed)


def tiny_videomae(seed: int = 0) -> VideoMAE:
    model = videomae("tiny", num_frames=4, img_size=32, patch_size=8, embed_dim=32, depth=2,
                     num_heads=2, decoder_embed_dim=32, decoder_num_heads=2, decoder_depth=1)
    return randomize(model, seed)


def finetune_checkpoint(run: Path, model: VideoClassifier | None = None,
                        names: list[str] | None = NAMES, **meta: Any) -> Path:
    """A fine-tuning run folder holding one checkpoint of `model`."""
    model = model or tiny_classifier()
    record = {"task": "finetune", "model_kind": "vit", "model": model.hparams, "data": DATA,
              "class_names": names, "num_classes": model.num_classes,
              "eval": {"clips": 1, "crops": 1}, **meta}
    save_checkpoint(run, 1, plain_state_dict(model), {"step": 1}, record)
    return run


def pretrain_checkpoint(run: Path, model: VideoMAE | None = None) -> Path:
    model = model or tiny_videomae()
    data = {**DATA, "mean": list(model.hparams["mean"]), "std": list(model.hparams["std"])}
    save_checkpoint(run, 1, plain_state_dict(model), {"step": 1},
                    {"task": "pretrain", "model_kind": "videomae", "model": model.hparams,
                     "data": data})
    return run


def video_input(model: torch.nn.Module, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, 4, 32, 32, generator=torch.Generator().manual_seed(seed))


def hub_cache(cache: Path, repo: str, folder: Path, revision: str = "a" * 40) -> Path:
    """Put `folder`'s files into a Hugging Face cache layout as `repo` at `revision` (what a
    download leaves behind: models--org--name/snapshots/<rev>/ and refs/main)."""
    root = cache / f"models--{repo.replace('/', '--')}"
    snap = root / "snapshots" / revision
    snap.mkdir(parents=True)
    for f in folder.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(revision)
    return snap
