"""HCML on the one engine: the self-supervised phases (`progvid pretrain` with task: hcml), the
3-D CNN classifiers for `progvid finetune` (plain ResNet3D baseline or HCML joint training),
and deployment.

Phases (seed 004 [0055]-[0057]): the flow network first (L_recon), then each level l in turn
with everything below frozen (L_contrastive^l), then joint training for classification
(L = L_cls + lambda L_recon + sum_l gamma_l L_contrastive^l). Each phase is a stage of one
schedule; which levels are frozen is a function of the stage, so resume is exact.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..config import FinetuneConfig, HCMLConfig, HCMLModelConfig
from ..data.datasets import build_samples
from ..engine.schedule import Schedule, cosine_stage, total_batch
from ..engine.trainer import StepContext, TrainResult
from ..errors import CheckpointError
from ..loading import HCML, load_model
from ..models.common import unwrap
from ..models.hcml import HCMLNet, count_macs, count_params, deploy_overhead
from ..models.resnet3d import resnet3d_from_hparams
from .base import ClipTask, run_context, train, write_run_files
from .preflight import preflight


def hcml_hparams(m: HCMLModelConfig, num_classes: int) -> dict[str, Any]:
    """The JSON-safe description a checkpoint carries to rebuild the network."""
    return {**m.model_dump(mode="json"), "num_classes": num_classes}


def measured_macs(model: torch.nn.Module, frames: int, size: int) -> float:
    """Forward MACs per clip, counted on a copy on the meta device (no memory, no compute)."""
    video = torch.empty(1, 3, frames, size, size, device="meta")
    if isinstance(model, HCMLNet):
        trunk = copy.deepcopy(model.trunk).to("meta")
        return float(count_macs(trunk, video) + _flow_macs(model, frames, size))
    return float(count_macs(copy.deepcopy(model).to("meta"), video))


def _flow_macs(net: HCMLNet, frames: int, size: int) -> int:
    """Forward MACs of the flow network over a clip's `frames` frame pairs (meta device)."""
    frame = torch.empty(1, 3, size, size, device="meta")
    return frames * count_macs(copy.deepcopy(net.flow_net).to("meta"), frame, frame)


class _UpTo(torch.nn.Module):
    """The trunk run as a self-supervised phase runs it: stem and stages up to `level`."""

    def __init__(self, trunk: torch.nn.Module, level: int) -> None:
        super().__init__()
        self.trunk, self.level = trunk, level

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.trunk.forward_levels(video, upto=self.level)[1][self.level]


def phase_macs(net: HCMLNet, frames: int, size: int) -> dict[int, float]:
    """Forward MACs per clip of what each self-supervised phase runs (meta device): phase 0 the
    flow network on every frame pair; level l the trunk up to level l, and the flow network too
    when level 0 is l's lower level (its flow is the prediction target). The contrastive
    predictors are left out (a few small linear maps)."""
    video = torch.empty(1, 3, frames, size, size, device="meta")
    trunk = copy.deepcopy(net.trunk).to("meta")
    flow = _flow_macs(net, frames, size)
    out = {0: float(flow)}
    for level in net.levels:
        out[level] = float(count_macs(_UpTo(trunk, level), video)
                           + (flow if net.lower_level(level) == 0 else 0))
    return out


# --------------------------------------------------------------------------------------------
# self-supervised phases


class HCMLPretrainTask(ClipTask):
    """Phase 0: L_recon of the flow network; phase l: L_contrastive^l, lower levels frozen."""

    find_unused_parameters = True

    def on_stage(self, model: torch.nn.Module, stage_index: int, stage: Any) -> None:
        model.trainable_for(stage.phase)

    def step(self, model: torch.nn.Module, batch: dict[str, Any],
             ctx: StepContext) -> dict[str, torch.Tensor]:
        video = self.video(batch, ctx)
        phase = ctx.stage.phase
        if phase == 0:
            out = model(video, mode="flow")
            return {"loss": out.recon, "recon": out.recon.detach()}
        out = model(video, mode="motion", levels=[phase], generator=ctx.generator)
        loss = out.contrastive[phase]
        return {"loss": loss, f"contrastive_{phase}": loss.detach()}


def hcml_schedule(cfg: HCMLConfig, dataset_size: int, world: int, levels: tuple[int, ...],
                  flops_per_clip: dict[int, float] | None = None) -> Schedule:
    """Stage 0 trains the flow net; stage k trains level `levels[k-1]`; each warmup + cosine.
    `flops_per_clip`: training MACs per clip of each phase (0 for none given)."""
    flops_per_clip = flops_per_clip or {}
    o = cfg.optim
    phases = [(0, cfg.phases.flow_epochs), *((lv, cfg.phases.level_epochs) for lv in levels)]
    return Schedule(tuple(cosine_stage(
        epochs=epochs, dataset_size=dataset_size,
        batch=total_batch(cfg.train.batch_size, world, o.accum_steps), base_lr=o.base_lr,
        min_lr=o.min_lr, warmup_epochs=o.warmup_epochs, num_frames=cfg.data.num_frames,
        batch_size=cfg.train.batch_size, name="flow" if phase == 0 else f"level{phase}",
        flops_per_clip=flops_per_clip.get(phase, 0.0), phase=phase) for phase, epochs in phases))


def run_hcml_pretrain(cfg: HCMLConfig, *, out: str | None = None, resume: str | None = None,
                      config_path: str | None = None, allow_changes: bool = False) -> TrainResult:
    """The self-supervised HCML phases on the config's training videos (labels unused)."""
    preflight(cfg)
    with run_context(cfg, out, config_path, resume=resume, allow_changes=allow_changes) as ctx:
        samples = build_samples(cfg.data, "train").samples
        hp = hcml_hparams(cfg.model, num_classes=1)  # the head is trained by `finetune`
        net = HCMLNet.from_hparams(hp)
        # training = 3 x the forward of what each phase runs (the convention; frozen parts
        # below a phase's level need no weight gradients, so this is an upper bound)
        macs = {k: 3.0 * v for k, v in
                phase_macs(net, cfg.data.num_frames, cfg.data.input_size).items()}
        schedule = hcml_schedule(cfg, len(samples), ctx.dist.world, net.levels, macs)
        write_run_files(ctx, cfg, schedule)
        meta = {"task": "hcml", "model_kind": "hcml", "model": hp,
                "data": cfg.data.model_dump(mode="json")}
        return train(ctx, cfg, net, HCMLPretrainTask(cfg, samples, ctx), schedule, meta,
                     resume)


# --------------------------------------------------------------------------------------------
# fine-tuning (the joint phase) and the plain 3-D CNN baseline


# what the fine-tuning config sets even over an HCML checkpoint: the joint loss's weights and the
# head's dropout are training choices; everything else describes the checkpoint's network
JOINT_TRAINING_KEYS = ("recon_weight", "contrastive_weight", "dropout")


def build_cnn_classifier(cfg: FinetuneConfig, num_classes: int) -> torch.nn.Module:
    """ResNet3D (baseline) or HCMLNet (joint phase), optionally from an HCML checkpoint."""
    m = cfg.model
    if m.init and m.name == "hcml":
        pre, ckpt = load_model(m.init, HCML)
        joint = {k: getattr(cfg.hcml, k) for k in JOINT_TRAINING_KEYS}
        net = HCMLNet.from_hparams({**ckpt.hparams, **joint, "num_classes": num_classes})
        state = {k: v for k, v in pre.state_dict().items() if not k.startswith("trunk.backbone.fc.")}
        missing, unexpected = net.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("trunk.backbone.fc.") for k in missing):
            raise CheckpointError(f"{ckpt.path}: unexpected keys {unexpected[:5]}, missing {missing[:5]}")
        return net
    if m.init:
        raise CheckpointError(f"{m.init}: model.init for a {m.name} classifier must be an HCML "
                              "pre-training run (model.name: hcml)")
    base = cfg.hcml.model_copy(update={"resnet_depth": m.resnet_depth, "width": m.width})
    hp = hcml_hparams(base, num_classes)
    return HCMLNet.from_hparams(hp) if m.name == "hcml" else resnet3d_from_hparams(hp)


def hcml_joint_loss(model: torch.nn.Module, video: torch.Tensor,
                    cls_loss_fn: Callable[[torch.Tensor], torch.Tensor],
                    generator: torch.Generator) -> dict[str, torch.Tensor]:
    """L = L_cls + lambda L_recon + sum_l gamma_l L_contrastive^l, with each term for logging."""
    out = model(video, mode="joint", generator=generator)
    cls = cls_loss_fn(out.logits)
    hp = unwrap(model).hparams
    loss = out.total(cls, recon_weight=hp["recon_weight"], contrastive_weight=hp["contrastive_weight"])
    terms = {"loss": loss, "cls": cls.detach()}
    if out.recon is not None:
        terms["recon"] = out.recon.detach()
    terms.update({f"contrastive_{lv}": v.detach() for lv, v in out.contrastive.items()})
    return terms


def deploy_report(checkpoint: str | Path, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Parameters and MACs of the deployed HCML model (no flow net, no predictors) against the
    plain backbone; with `out_dir`, also write the deployed weights."""
    net, ckpt = load_model(checkpoint, HCML)
    d = ckpt.data
    video = torch.zeros(1, 3, d.num_frames, d.input_size, d.input_size)
    report = {"checkpoint": str(ckpt.path), "input": list(video.shape),
              "params_flow_net": count_params(net.flow_net),
              "params_predictors": count_params(net.predictors), **deploy_overhead(net, video)}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        trunk = net.deploy()
        save_file({k: v.contiguous() for k, v in trunk.state_dict().items()},
                  str(out / "model.safetensors"))
        (out / "meta.json").write_text(json.dumps(
            {"task": "deployed", "model_kind": "hcml", "model": ckpt.hparams,
             "data": d.model_dump(mode="json")}, indent=2))
        report["written"] = str(out)
    return report
