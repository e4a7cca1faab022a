"""`progvid pretrain`: VideoMAE pre-training under a temporal plan (one stage = the baseline)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..config import PretrainConfig
from ..data.datasets import build_samples
from ..engine.trainer import StepContext, TrainResult
from ..errors import ProgvidError
from ..interop.hf import export_hf
from ..loading import load_videomae
from ..models import videomae
from ..models.common import unwrap
from ..models.videomae import VideoMAE
from ..progressive.flops import model_flops
from ..progressive.plan import build_plan, build_schedule
from .base import ClipTask, run_context, train, write_run_files


def build_model(cfg: PretrainConfig) -> VideoMAE:
    """The VideoMAE a config describes, sized for its longest stage."""
    m = cfg.model
    overrides = {k: v for k, v in {
        "embed_dim": m.embed_dim, "depth": m.depth, "num_heads": m.num_heads,
        "decoder_embed_dim": m.decoder_dim, "decoder_num_heads": m.decoder_heads,
    }.items() if v is not None}
    return videomae(
        m.size, num_frames=max(s.frames for s in cfg.plan.stages), img_size=cfg.data.input_size,
        patch_size=m.patch_size, tubelet_size=m.tubelet_size, mask_ratio=m.mask_ratio,
        mask_type=m.mask_type, decoder_depth=m.decoder_depth, drop_path=m.drop_path,
        norm_pix_loss=m.norm_pix_loss, mean=cfg.data.mean, std=cfg.data.std,
        grad_checkpointing=m.grad_checkpointing, **overrides)


class PretrainTask(ClipTask):
    """Masked-autoencoder step on clips of the stage's length."""

    def step(self, model: torch.nn.Module, batch: dict[str, Any],
             ctx: StepContext) -> dict[str, torch.Tensor]:
        video = self.video(batch, ctx)
        inner: VideoMAE = unwrap(model)  # type: ignore[assignment]
        _, _, t, h, w = video.shape
        # masks for the global batch from the step's generator, each rank takes its rows: the
        # same masks as a single process with the same global batch (loader shards rank::world)
        b = video.shape[0]
        mask = inner.random_mask(b * ctx.world, t, ctx.device, ctx.generator, img_size=(h, w))
        mask = mask[ctx.rank :: ctx.world]
        return {"loss": model(video, mask).loss}


def run_pretrain(cfg: PretrainConfig, *, out: str | None = None, resume: str | None = None,
                 config_path: str | None = None, progress: bool | None = None) -> TrainResult:
    """Pre-train as the config says; returns the result (rank 0 writes the run folder)."""
    with run_context(cfg, out, config_path) as ctx:
        samples = build_samples(cfg.data, "train").samples
        model = build_model(cfg)
        planned = build_plan(cfg, len(samples), ctx.dist.world)
        schedule = build_schedule(cfg, planned, lambda f: model_flops(model, f).train)
        write_run_files(ctx, cfg, {"plan.json": json.dumps(
            {"stages": [p.to_json() for p in planned], "total_steps": schedule.total_steps,
             "world": ctx.dist.world}, indent=2)})
        meta = {"task": "pretrain", "model_kind": "videomae", "model": model.hparams,
                "data": cfg.data.model_dump(mode="json")}
        task = PretrainTask(cfg, samples, ctx.run_dir)
        return train(ctx, cfg, model, task, schedule, meta, resume, progress)


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, fmt: str = "hf") -> Path:
    """Write a pre-training checkpoint in another format (`hf`: a transformers folder)."""
    if fmt != "hf":
        raise ProgvidError(f"--format: unknown export format {fmt!r} (supported: hf)")
    return export_hf(load_videomae(checkpoint), out_dir)
