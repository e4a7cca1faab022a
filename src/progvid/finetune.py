"""`progvid finetune`: supervised fine-tuning for action recognition on the one engine.

The classifier is a VideoMAE encoder with mean pooling, LayerNorm and a linear head (or, for
HCML, a 3-D CNN). Recipe defaults follow VideoMAE: layer-wise lr decay 0.75, drop path 0.1,
label smoothing 0.1, mixup 0.8 / cutmix 1.0, 5 warmup epochs then cosine, repeated
augmentation (`data.num_sample`). A fine-tuning checkpoint carries its preprocessing and class
names, so `progvid eval` and `progvid predict` need nothing else.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .config import FinetuneConfig, save_config
from .data.datasets import Sample, build_samples
from .data.loader import SkipLog, train_loader
from .data.mixup import Mixup, soft_cross_entropy
from .engine.checkpoint import CheckpointError, load_meta, load_weights, resolve_resume
from .engine.distributed import DistInfo
from .engine.schedule import Schedule, Stage
from .engine.trainer import StepContext, TrainResult
from .errors import ConfigError
from .models.classifier import (
    VideoClassifier,
    classifier,
    classifier_from_pretrained,
    layer_decay_groups,
)
from .runs import cosine_stage, run_context, train


def build_classifier(cfg: FinetuneConfig, num_classes: int) -> torch.nn.Module:
    """The classifier a config describes, initialised from `model.init` when given."""
    m, d = cfg.model, cfg.data
    if m.name != "vit":
        from .hcml_tasks import build_cnn_classifier

        return build_cnn_classifier(cfg, num_classes)
    if m.init:
        model, report = classifier_from_pretrained(
            m.init, num_classes=num_classes, drop_path=m.drop_path, head_dropout=m.head_dropout,
            init_scale=m.init_scale, num_frames=d.num_frames, img_size=d.input_size,
            num_heads=m.num_heads, grad_checkpointing=m.grad_checkpointing, return_report=True)
        print(f"[progvid] {report}", file=sys.stderr)
        return model
    overrides = {k: v for k, v in {"embed_dim": m.embed_dim, "depth": m.depth,
                                   "num_heads": m.num_heads}.items() if v is not None}
    model = classifier(m.size, num_classes=num_classes, num_frames=d.num_frames,
                       img_size=d.input_size, patch_size=m.patch_size, tubelet_size=m.tubelet_size,
                       drop_path=m.drop_path, head_dropout=m.head_dropout,
                       init_scale=m.init_scale, **overrides)
    model.set_grad_checkpointing(m.grad_checkpointing)
    return model


def load_classifier(checkpoint: str | Path) -> tuple[torch.nn.Module, dict[str, Any], Path]:
    """(model in eval mode, checkpoint meta, resolved checkpoint path) of a fine-tuning run."""
    path = resolve_resume(Path(checkpoint), str(checkpoint))
    assert path is not None
    meta = load_meta(path)
    if meta.get("task") != "finetune" or "model" not in meta:
        raise CheckpointError(f"{path}: not a classifier checkpoint (task {meta.get('task')!r}); "
                              "fine-tune it first with `progvid finetune`")
    kind = meta.get("model_kind", "vit")
    if kind == "vit":
        model: torch.nn.Module = VideoClassifier.from_hparams(meta["model"])
    else:
        from .hcml_tasks import cnn_from_hparams

        model = cnn_from_hparams(kind, meta["model"])
    missing, unexpected = model.load_state_dict(load_weights(path), strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match the saved classifier "
                              f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})")
    if kind == "hcml":  # inference needs neither the flow network nor the predictors
        model = model.deploy()
    return model.eval(), meta, path


class FinetuneTask:
    """Cross-entropy on (mixed) clips with soft targets."""

    def __init__(self, cfg: FinetuneConfig, samples: list[Sample], num_classes: int,
                 run_dir: Path) -> None:
        self.cfg = cfg
        self.samples = samples
        self.num_classes = num_classes
        self.skips = SkipLog(len(samples), cfg.data.max_bad_fraction, run_dir / "skipped.jsonl")
        mx = cfg.mixup
        self.mixup = None
        if mx.prob > 0 and (mx.mixup_alpha > 0 or mx.cutmix_alpha > 0):
            self.mixup = Mixup(num_classes=num_classes, mixup_alpha=mx.mixup_alpha,
                               cutmix_alpha=mx.cutmix_alpha, switch_prob=mx.switch_prob,
                               prob=mx.prob, label_smoothing=mx.label_smoothing)

    def loader(self, stage_index: int, stage: Stage, *, frames: int, dist: DistInfo,
               device: torch.device) -> DataLoader:
        return train_loader(self.cfg.data, self.samples, frames=frames, batch_size=stage.batch_size,
                            seed=self.cfg.seed, rank=dist.rank, world=dist.world, device=device)

    def param_groups(self, model: torch.nn.Module) -> list[dict[str, Any]]:
        o = self.cfg.optim
        inner = getattr(model, "module", model)
        if isinstance(inner, VideoClassifier):
            return layer_decay_groups(inner, base_weight_decay=o.weight_decay, layer_decay=o.layer_decay)
        from .engine.trainer import param_groups

        return param_groups(inner, o.weight_decay)

    def step(self, model: torch.nn.Module, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        self.skips.update(batch["skipped"])
        video = batch["video"].to(ctx.device, non_blocking=True)
        labels = batch["label"].to(ctx.device, non_blocking=True)
        if (labels < 0).any():
            raise ConfigError("data.train: fine-tuning needs a label on every training video")
        if self.mixup is not None:
            video, targets = self.mixup(video, labels, ctx.generator)

            def cls_loss(logits: torch.Tensor) -> torch.Tensor:
                return soft_cross_entropy(logits, targets)
        else:
            def cls_loss(logits: torch.Tensor) -> torch.Tensor:
                return F.cross_entropy(logits, labels, label_smoothing=self.cfg.mixup.label_smoothing)
        if self.cfg.model.name == "hcml":  # the joint phase: classification + motion losses
            from .hcml_tasks import hcml_joint_loss

            return hcml_joint_loss(model, video, cls_loss, ctx.generator)
        return {"loss": cls_loss(model(video))}

    def clips(self, batch: dict[str, Any]) -> int:
        return int(batch["video"].shape[0])


def finetune_schedule(cfg: FinetuneConfig, dataset_size: int, world: int,
                      flops_per_clip: float = 0.0) -> Schedule:
    """One stage: warmup then cosine, lr = base_lr * total_batch / 256."""
    o = cfg.optim
    return Schedule((cosine_stage(
        epochs=cfg.epochs, dataset_size=dataset_size,
        total_batch=cfg.train.batch_size * world * o.accum_steps, base_lr=o.base_lr,
        min_lr=o.min_lr, warmup_epochs=o.warmup_epochs, num_frames=cfg.data.num_frames,
        batch_size=cfg.train.batch_size, name="finetune", flops_per_clip=flops_per_clip),))


def _flops_per_clip(model: torch.nn.Module, cfg: FinetuneConfig) -> float:
    """Training MACs per clip (3 x forward) for the metrics' cumulative FLOPs."""
    if isinstance(model, VideoClassifier):
        from .progressive.flops import encoder_flops

        h = model.hparams
        return 3.0 * encoder_flops(embed_dim=h["embed_dim"], depth=h["depth"],
                                   num_frames=cfg.data.num_frames, img_size=cfg.data.input_size,
                                   patch_size=h["patch_size"], tubelet_size=h["tubelet_size"])
    from .hcml_tasks import measured_macs

    return 3.0 * measured_macs(model, cfg.data.num_frames, cfg.data.input_size)


def run_finetune(cfg: FinetuneConfig, *, out: str | None = None, resume: str | None = None,
                 config_path: str | None = None) -> TrainResult:
    """Fine-tune as the config says, then (by default) evaluate on the val split."""
    with run_context(cfg, out, config_path) as ctx:
        ss = build_samples(cfg.data, "train")
        names = ss.class_names
        num_classes = cfg.model.num_classes or (len(names) if names else None)
        if num_classes is None:
            raise ConfigError("model.num_classes: not set and the data has no class names "
                              "(set data.classes)")
        if names is not None and len(names) != num_classes:
            raise ConfigError(f"model.num_classes: {num_classes} but data.classes lists {len(names)}")
        model = build_classifier(cfg, num_classes)
        schedule = finetune_schedule(cfg, len(ss.samples), ctx.dist.world,
                                     _flops_per_clip(model, cfg))
        if ctx.dist.is_main:
            ctx.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, ctx.run_dir / "config.yaml")
        meta = {"task": "finetune", "model_kind": cfg.model.name, "model": model.hparams,
                "data": cfg.data.model_dump(mode="json"), "class_names": names,
                "num_classes": num_classes, "eval": cfg.eval.model_dump(mode="json")}
        task = FinetuneTask(cfg, ss.samples, num_classes, ctx.run_dir)
        result = train(ctx, cfg, model, task, schedule, meta, resume)
        if cfg.eval.at_end and cfg.data.val is not None:
            from .evaluate import evaluate_checkpoint

            evaluate_checkpoint(ctx.run_dir, views=(cfg.eval.clips, cfg.eval.crops),
                                device=ctx.device, batch_size=cfg.eval.batch_size)
        return result
