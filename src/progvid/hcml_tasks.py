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
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from .config import FinetuneConfig, HCMLConfig, HCMLModelConfig, save_config
from .data.datasets import Sample, build_samples
from .data.loader import SkipLog, train_loader
from .engine.checkpoint import CheckpointError, load_meta, load_weights, resolve_resume
from .engine.distributed import DistInfo
from .engine.schedule import Schedule, Stage
from .engine.trainer import StepContext, TrainResult
from .models.hcml import HCMLNet, count_macs, count_params, deploy_overhead
from .models.motion import FlowNet
from .models.resnet3d import ResNet3D, resnet3d
from .runs import cosine_stage, run_context, train


def hcml_hparams(m: HCMLModelConfig, num_classes: int) -> dict[str, Any]:
    """The JSON-safe description a checkpoint carries to rebuild the network."""
    return {**m.model_dump(mode="json"), "num_classes": num_classes}


def build_hcml(hp: dict[str, Any]) -> HCMLNet:
    backbone = resnet3d(hp["resnet_depth"], num_classes=hp["num_classes"], width=hp["width"],
                        dropout=hp["dropout"], temporal_strides=tuple(hp["temporal_strides"]))
    net = HCMLNet(backbone, levels=tuple(hp["levels"]), flow_net=FlowNet(3), beta=hp["beta"],
                  max_displacement=hp["max_displacement"], stride=hp["stride"],
                  deltas=tuple(hp["deltas"]), num_samples=hp["num_samples"], tau=hp["tau"],
                  zeta=hp["zeta"])
    net.hparams = dict(hp)
    return net


def build_resnet(hp: dict[str, Any]) -> ResNet3D:
    model = resnet3d(hp["resnet_depth"], num_classes=hp["num_classes"], width=hp["width"],
                     dropout=hp["dropout"], temporal_strides=tuple(hp["temporal_strides"]))
    model.hparams = dict(hp)
    return model


def cnn_from_hparams(kind: str, hp: dict[str, Any]) -> torch.nn.Module:
    return build_hcml(hp) if kind == "hcml" else build_resnet(hp)


def measured_macs(model: torch.nn.Module, frames: int, size: int) -> float:
    """Forward MACs per clip, counted on a copy on the meta device (no memory, no compute)."""
    video = torch.empty(1, 3, frames, size, size, device="meta")
    if isinstance(model, HCMLNet):
        trunk = copy.deepcopy(model.trunk).to("meta")
        flow = copy.deepcopy(model.flow_net).to("meta")
        frame = torch.empty(1, 3, size, size, device="meta")
        return float(count_macs(trunk, video) + frames * count_macs(flow, frame, frame))
    return float(count_macs(copy.deepcopy(model).to("meta"), video))


# --------------------------------------------------------------------------------------------
# self-supervised phases


class HCMLPretrainTask:
    """Phase 0: L_recon of the flow network; phase l: L_contrastive^l, lower levels frozen."""

    find_unused_parameters = True

    def __init__(self, cfg: HCMLConfig, samples: list[Sample], run_dir: Path) -> None:
        self.cfg, self.samples = cfg, samples
        self.skips = SkipLog(len(samples), cfg.data.max_bad_fraction, run_dir / "skipped.jsonl")

    def loader(self, stage_index: int, stage: Stage, *, frames: int, dist: DistInfo,
               device: torch.device) -> DataLoader:
        return train_loader(self.cfg.data, self.samples, frames=frames, batch_size=stage.batch_size,
                            seed=self.cfg.seed * 1000 + stage_index, rank=dist.rank,
                            world=dist.world, device=device)

    def on_stage(self, model: torch.nn.Module, stage_index: int, stage: Stage) -> None:
        model.trainable_for(stage.extra["phase"])

    def step(self, model: torch.nn.Module, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        self.skips.update(batch["skipped"])
        video = batch["video"].to(ctx.device, non_blocking=True)
        phase = ctx.stage.extra["phase"]
        if phase == 0:
            out = model(video, mode="flow")
            return {"loss": out.recon, "recon": out.recon.detach()}
        out = model(video, mode="motion", levels=[phase], generator=ctx.generator)
        loss = out.contrastive[phase]
        return {"loss": loss, f"contrastive_{phase}": loss.detach()}

    def clips(self, batch: dict[str, Any]) -> int:
        return int(batch["video"].shape[0])


def hcml_schedule(cfg: HCMLConfig, dataset_size: int, world: int, levels: tuple[int, ...],
                  flops_per_clip: float = 0.0) -> Schedule:
    """Stage 0 trains the flow net; stage k trains level `levels[k-1]`; each warmup + cosine."""
    o = cfg.optim
    phases = [(0, cfg.phases.flow_epochs), *((lv, cfg.phases.level_epochs) for lv in levels)]
    return Schedule(tuple(cosine_stage(
        epochs=epochs, dataset_size=dataset_size,
        total_batch=cfg.train.batch_size * world * o.accum_steps, base_lr=o.base_lr,
        min_lr=o.min_lr, warmup_epochs=o.warmup_epochs, num_frames=cfg.data.num_frames,
        batch_size=cfg.train.batch_size, name="flow" if phase == 0 else f"level{phase}",
        flops_per_clip=flops_per_clip, extra={"phase": phase}) for phase, epochs in phases))


def run_hcml_pretrain(cfg: HCMLConfig, *, out: str | None = None, resume: str | None = None,
                      config_path: str | None = None) -> TrainResult:
    """The self-supervised HCML phases on the config's training videos (labels unused)."""
    with run_context(cfg, out, config_path) as ctx:
        samples = build_samples(cfg.data, "train").samples
        hp = hcml_hparams(cfg.model, num_classes=1)  # the head is trained by `finetune`
        net = build_hcml(hp)
        macs = 3.0 * measured_macs(net, cfg.data.num_frames, cfg.data.input_size)
        schedule = hcml_schedule(cfg, len(samples), ctx.dist.world, net.levels, macs)
        if ctx.dist.is_main:
            ctx.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, ctx.run_dir / "config.yaml")
        meta = {"task": "hcml", "model_kind": "hcml", "model": hp,
                "data": cfg.data.model_dump(mode="json")}
        return train(ctx, cfg, net, HCMLPretrainTask(cfg, samples, ctx.run_dir), schedule, meta,
                     resume)


# --------------------------------------------------------------------------------------------
# fine-tuning (the joint phase) and the plain 3-D CNN baseline


def load_hcml(checkpoint: str | Path) -> tuple[HCMLNet, dict[str, Any], Path]:
    """An HCML network from a pre-training (task hcml) or fine-tuning checkpoint."""
    path = resolve_resume(Path(checkpoint), str(checkpoint))
    assert path is not None
    meta = load_meta(path)
    if meta.get("model_kind") != "hcml":
        raise CheckpointError(f"{path}: not an HCML checkpoint (model kind "
                              f"{meta.get('model_kind', 'vit')!r})")
    net = build_hcml(meta["model"])
    missing, unexpected = net.load_state_dict(load_weights(path), strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match the saved HCML network "
                              f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})")
    return net, meta, path


def build_cnn_classifier(cfg: FinetuneConfig, num_classes: int) -> torch.nn.Module:
    """ResNet3D (baseline) or HCMLNet (joint phase), optionally from an HCML checkpoint."""
    m = cfg.model
    base = cfg.hcml.model_copy(update={"resnet_depth": m.resnet_depth, "width": m.width})
    if m.init and m.name == "hcml":
        pre, meta, path = load_hcml(m.init)
        hp = {**meta["model"], "num_classes": num_classes}
        net = build_hcml(hp)
        state = {k: v for k, v in pre.state_dict().items() if not k.startswith("trunk.backbone.fc.")}
        missing, unexpected = net.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("trunk.backbone.fc.") for k in missing):
            raise CheckpointError(f"{path}: unexpected keys {unexpected[:5]}, missing {missing[:5]}")
        return net
    if m.init:
        raise CheckpointError(f"{m.init}: model.init for a {m.name} classifier must be an HCML "
                              "pre-training run (model.name: hcml)")
    hp = hcml_hparams(base, num_classes)
    return build_hcml(hp) if m.name == "hcml" else build_resnet(hp)


def hcml_joint_loss(model: torch.nn.Module, video: torch.Tensor, cls_loss_fn: Any,
                    generator: torch.Generator) -> dict[str, torch.Tensor]:
    """L = L_cls + lambda L_recon + sum_l gamma_l L_contrastive^l, with each term for logging."""
    out = model(video, mode="joint", generator=generator)
    cls = cls_loss_fn(out.logits)
    inner = getattr(model, "module", model)
    hp = inner.hparams
    loss = out.total(cls, recon_weight=hp["recon_weight"], contrastive_weight=hp["contrastive_weight"])
    terms = {"loss": loss, "cls": cls.detach()}
    if out.recon is not None:
        terms["recon"] = out.recon.detach()
    terms.update({f"contrastive_{lv}": v.detach() for lv, v in out.contrastive.items()})
    return terms


def deploy_report(checkpoint: str | Path, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Parameters and MACs of the deployed HCML model (no flow net, no predictors) against the
    plain backbone; with `out_dir`, also write the deployed weights."""
    net, meta, path = load_hcml(checkpoint)
    d = meta["data"]
    video = torch.zeros(1, 3, d["num_frames"], d["input_size"], d["input_size"])
    report = {"checkpoint": str(path), "input": list(video.shape),
              "params_flow_net": count_params(net.flow_net),
              "params_predictors": count_params(net.predictors), **deploy_overhead(net, video)}
    if out_dir is not None:
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        trunk = net.deploy()
        save_file({k: v.contiguous() for k, v in trunk.state_dict().items()},
                  str(out / "model.safetensors"))
        import json

        (out / "meta.json").write_text(json.dumps({"task": "deployed", "model_kind": "hcml",
                                                   "model": meta["model"], "data": d}, indent=2))
        report["written"] = str(out)
    return report
