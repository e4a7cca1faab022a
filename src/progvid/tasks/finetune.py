"""`progvid finetune`: supervised fine-tuning for action recognition on the one engine.

The classifier is a VideoMAE encoder with mean pooling, LayerNorm and a linear head (or, for
HCML, a 3-D CNN). Recipe defaults follow VideoMAE: layer-wise lr decay 0.75, drop path 0.1,
label smoothing 0.1, mixup 0.8 / cutmix 1.0, 5 warmup epochs then cosine, repeated
augmentation (`data.num_sample`). A fine-tuning checkpoint carries its preprocessing and class
names, so `progvid eval` and `progvid predict` need nothing else.

What differs between model kinds (building, optimizer groups, cost per clip, loss) is one row
of `KINDS`; everything else is shared.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..config import FinetuneConfig
from ..data.datasets import build_samples, listed_at
from ..data.mixup import Mixup, soft_cross_entropy
from ..engine.schedule import Schedule, cosine_stage, total_batch
from ..engine.trainer import StepContext, TrainResult, param_groups
from ..errors import ConfigError
from ..loading import classifier_from_pretrained
from ..models.classifier import classifier, layer_decay_groups
from ..models.common import unwrap
from ..models.vit import ENCODER_SIZES
from ..progressive.flops import TRAIN_FACTOR, encoder_flops
from .base import ClipTask, RunContext, run_context, train, write_run_files
from .evaluate import evaluate_checkpoint, split_probabilities, topk_accuracy
from .hcml import build_cnn_classifier, hcml_joint_loss, measured_macs
from .preflight import preflight

LossFn = Callable[[torch.Tensor], torch.Tensor]


def _build_vit(cfg: FinetuneConfig, num_classes: int) -> torch.nn.Module:
    m, d = cfg.model, cfg.data
    if m.init:
        model, report = classifier_from_pretrained(
            m.init, num_classes=num_classes, drop_path=m.drop_path, head_dropout=m.head_dropout,
            init_scale=m.init_scale, num_frames=d.num_frames, img_size=d.input_size,
            num_heads=m.num_heads, grad_checkpointing=m.grad_checkpointing,
            class_names=build_samples(d, "train").class_names if d.classes else None)
        print(f"[progvid] {report}", file=sys.stderr)
        named = ENCODER_SIZES.get(m.size, (None, None, None))
        want = (m.embed_dim or named[0], m.depth or named[1])
        got = (model.hparams.get("embed_dim"), model.hparams.get("depth"))
        if None not in want and got != want:
            print(f"[progvid] model.size / embed_dim / depth describe a {want[0]}-wide, "
                  f"{want[1]}-deep encoder ({m.size}), but model.init's is {got[0]} wide, "
                  f"{got[1]} deep: its geometry is used; check that the recipe fits it",
                  file=sys.stderr)
        return model
    overrides = {k: v for k, v in {"embed_dim": m.embed_dim, "depth": m.depth,
                                   "num_heads": m.num_heads}.items() if v is not None}
    model = classifier(m.size, num_classes=num_classes, num_frames=d.num_frames,
                       img_size=d.input_size, patch_size=m.patch_size, tubelet_size=m.tubelet_size,
                       drop_path=m.drop_path, head_dropout=m.head_dropout,
                       init_scale=m.init_scale, **overrides)
    model.set_grad_checkpointing(m.grad_checkpointing)
    return model


def _vit_groups(model: torch.nn.Module, cfg: FinetuneConfig) -> list[dict[str, Any]]:
    o = cfg.optim
    return layer_decay_groups(model, base_weight_decay=o.weight_decay, layer_decay=o.layer_decay)


def _plain_groups(model: torch.nn.Module, cfg: FinetuneConfig) -> list[dict[str, Any]]:
    return param_groups(unwrap(model), cfg.optim.weight_decay)


def _vit_macs(model: torch.nn.Module, cfg: FinetuneConfig) -> float:
    h = unwrap(model).hparams
    return encoder_flops(embed_dim=h["embed_dim"], depth=h["depth"], num_frames=cfg.data.num_frames,
                         img_size=cfg.data.input_size, patch_size=h["patch_size"],
                         tubelet_size=h["tubelet_size"])


def _cnn_macs(model: torch.nn.Module, cfg: FinetuneConfig) -> float:
    return measured_macs(model, cfg.data.num_frames, cfg.data.input_size)


def _plain_loss(model: torch.nn.Module, video: torch.Tensor, cls_loss: LossFn,
                generator: torch.Generator) -> dict[str, torch.Tensor]:
    return {"loss": cls_loss(model(video))}


@dataclass(frozen=True)
class ClassifierKind:
    """What differs between classifier kinds."""

    build: Callable[[FinetuneConfig, int], torch.nn.Module]
    param_groups: Callable[[torch.nn.Module, FinetuneConfig], list[dict[str, Any]]]
    forward_macs: Callable[[torch.nn.Module, FinetuneConfig], float]  # per clip
    loss: Callable[[torch.nn.Module, torch.Tensor, LossFn, torch.Generator], dict[str, torch.Tensor]]
    # the part of the trained model that maps a clip to logits (what validation runs)
    predictor: Callable[[torch.nn.Module], torch.nn.Module] = lambda model: model


KINDS: dict[str, ClassifierKind] = {
    "vit": ClassifierKind(_build_vit, _vit_groups, _vit_macs, _plain_loss),
    "resnet3d": ClassifierKind(build_cnn_classifier, _plain_groups, _cnn_macs, _plain_loss),
    # the joint phase: classification + motion losses; the trunk alone classifies
    "hcml": ClassifierKind(build_cnn_classifier, _plain_groups, _cnn_macs, hcml_joint_loss,
                           predictor=lambda model: model.trunk),
}


def build_classifier(cfg: FinetuneConfig, num_classes: int) -> torch.nn.Module:
    """The classifier a config describes, initialised from `model.init` when given."""
    return KINDS[cfg.model.name].build(cfg, num_classes)


class FinetuneTask(ClipTask):
    """Cross-entropy on (mixed) clips with soft targets; with a val split, validation every
    `eval.every_epochs` (top-1, top-5, loss; the best top-1 kept as checkpoints/best)."""

    seed_per_stage = False
    best_metric = "top1"

    def __init__(self, cfg: FinetuneConfig, samples: list, num_classes: int,
                 ctx: RunContext, *, val_samples: list | None = None,
                 steps_per_epoch: float = 0.0) -> None:
        super().__init__(cfg, samples, ctx)
        unlabelled = next((x for x in samples if x.label < 0), None)
        if unlabelled is not None:  # checked once here, not on every batch of the training step
            where = listed_at(unlabelled.source, unlabelled.line)
            raise ConfigError(f"data.train: fine-tuning needs a label on every training video; "
                              f"{where}{unlabelled.path} has none")
        self.kind = KINDS[cfg.model.name]
        self.ctx = ctx
        # validation needs a label on every video (an unlabeled val list is for `predict`)
        self.val_samples = val_samples if val_samples and all(
            x.label >= 0 for x in val_samples) else None
        every = cfg.eval.every_epochs
        self.validate_every = (max(1, round(every * steps_per_epoch))
                               if self.val_samples and every > 0 and steps_per_epoch > 0 else 0)
        mx = cfg.mixup
        self.mixup = None
        if mx.prob > 0 and (mx.mixup_alpha > 0 or mx.cutmix_alpha > 0):
            self.mixup = Mixup(num_classes=num_classes, mixup_alpha=mx.mixup_alpha,
                               cutmix_alpha=mx.cutmix_alpha, switch_prob=mx.switch_prob,
                               prob=mx.prob, label_smoothing=mx.label_smoothing)

    def param_groups(self, model: torch.nn.Module) -> list[dict[str, Any]]:
        return self.kind.param_groups(model, self.cfg)

    def step(self, model: torch.nn.Module, batch: dict[str, Any],
             ctx: StepContext) -> dict[str, torch.Tensor]:
        video = self.video(batch, ctx)
        # every label is in range: the list reader checks it against the classes, and the task
        # refuses unlabelled training videos when it is built
        labels = batch["label"].to(ctx.device, non_blocking=True)
        if self.mixup is not None:
            video, targets = self.mixup(video, labels, ctx.host_generator)

            def cls_loss(logits: torch.Tensor) -> torch.Tensor:
                return soft_cross_entropy(logits, targets)
        else:
            def cls_loss(logits: torch.Tensor) -> torch.Tensor:
                return F.cross_entropy(logits, labels, label_smoothing=self.cfg.mixup.label_smoothing)
        return self.kind.loss(model, video, cls_loss, ctx.generator)

    def validate(self, model: torch.nn.Module) -> dict[str, float]:
        """Top-1, top-5 and loss (negative log of the mean probability of the true class over
        the views: cross-entropy for one view) on the val split, every rank a shard."""
        assert self.val_samples is not None
        e = self.cfg.eval
        _, probs, labels, _ = split_probabilities(
            self.kind.predictor(unwrap(model)), self.cfg.data, self.val_samples, clips=e.val_clips, crops=e.val_crops,
            batch_size=e.batch_size, device=self.ctx.device, dist=self.ctx.dist)
        if not labels.numel():
            return {}
        top1, top5 = topk_accuracy(probs, labels)
        loss = -probs.gather(1, labels[:, None]).clamp_min(1e-12).log().mean().item()
        return {"top1": top1, "top5": top5, "loss": loss}


def finetune_schedule(cfg: FinetuneConfig, dataset_size: int, world: int,
                      flops_per_clip: float = 0.0) -> Schedule:
    """One stage: warmup then cosine, lr = base_lr * total_batch / 256."""
    o = cfg.optim
    return Schedule((cosine_stage(
        epochs=cfg.epochs, dataset_size=dataset_size,
        batch=total_batch(cfg.train.batch_size, world, o.accum_steps), base_lr=o.base_lr,
        min_lr=o.min_lr, warmup_epochs=o.warmup_epochs, num_frames=cfg.data.num_frames,
        batch_size=cfg.train.batch_size, name="finetune", flops_per_clip=flops_per_clip),))


def run_finetune(cfg: FinetuneConfig, *, out: str | None = None, resume: str | None = None,
                 config_path: str | None = None, allow_changes: bool = False) -> TrainResult:
    """Fine-tune as the config says, then (by default) evaluate on the val split."""
    preflight(cfg)
    with run_context(cfg, out, config_path, resume=resume, allow_changes=allow_changes) as ctx:
        ss = build_samples(cfg.data, "train")
        names = ss.class_names
        num_classes = cfg.model.num_classes or (len(names) if names else None)
        if num_classes is None:
            raise ConfigError("model.num_classes: not set and the data has no class names "
                              "(set data.classes)")
        if names is not None and len(names) != num_classes:
            raise ConfigError(f"model.num_classes: {num_classes} but data.classes lists {len(names)}")
        kind = KINDS[cfg.model.name]
        model = kind.build(cfg, num_classes)
        schedule = finetune_schedule(cfg, len(ss.samples), ctx.dist.world,
                                     TRAIN_FACTOR * kind.forward_macs(model, cfg))
        write_run_files(ctx, cfg, schedule)
        meta = {"task": "finetune", "model_kind": cfg.model.name, "model": model.hparams,
                "data": cfg.data.model_dump(mode="json"), "class_names": names,
                "num_classes": num_classes, "eval": cfg.eval.model_dump(mode="json")}
        val = (build_samples(cfg.data, "val", num_classes).samples
               if cfg.data.val is not None and cfg.eval.every_epochs > 0 else None)
        steps_per_epoch = schedule.total_steps / cfg.epochs
        task = FinetuneTask(cfg, ss.samples, num_classes, ctx, val_samples=val,
                            steps_per_epoch=steps_per_epoch)
        result = train(ctx, cfg, model, task, schedule, meta, resume)
        if cfg.eval.at_end and cfg.data.val is not None:
            evaluate_checkpoint(ctx.run_dir, views=(cfg.eval.clips, cfg.eval.crops),
                                device=ctx.device, batch_size=cfg.eval.batch_size)
        return result


__all__ = ["KINDS", "ClassifierKind", "FinetuneTask", "build_classifier", "finetune_schedule",
           "run_finetune"]
