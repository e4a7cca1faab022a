"""`progvid pretrain`: VideoMAE pre-training under a temporal plan (one stage = the baseline)."""

from __future__ import annotations

import json
from typing import Any

import torch

from ..config import PretrainConfig
from ..data.datasets import build_samples
from ..data.loader import seconds_per_batch, train_loader
from ..engine.distributed import resolve_device
from ..engine.trainer import StepContext, TrainResult
from ..errors import ConfigError, DataError
from ..models import videomae
from ..models.common import unwrap
from ..models.videomae import VideoMAE
from ..progressive.flops import model_flops
from ..progressive.plan import (
    PlannedStage,
    StageProbe,
    build_plan,
    build_schedule,
    plan_table,
    probe_seconds_per_step,
)
from .base import ClipTask, cpu_threads, run_context, train, write_run_files
from .preflight import preflight


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
        grad_checkpointing=m.grad_checkpointing, decoder_mask=m.decoder_mask,
        decoder_mask_ratio=m.decoder_mask_ratio, **overrides)


class PretrainTask(ClipTask):
    """Masked-autoencoder step on clips of the stage's length (dual masking: the decoder mask
    too), with masks from the step's generator."""

    def step(self, model: torch.nn.Module, batch: dict[str, Any],
             ctx: StepContext) -> dict[str, torch.Tensor]:
        video = self.video(batch, ctx)
        inner: VideoMAE = unwrap(model)  # type: ignore[assignment]
        _, _, t, h, w = video.shape
        # masks for the global batch from the step's generator, each rank takes its rows: the
        # same masks as a single process with the same global batch (loader shards rank::world)
        b = video.shape[0]
        mask = inner.random_mask(b * ctx.world, t, ctx.device, ctx.generator, img_size=(h, w))
        dmask = inner.random_decoder_mask(b * ctx.world, t, ctx.device, ctx.generator,
                                          img_size=(h, w))
        # their counts come from the model's settings: counting them would stall on CUDA
        masked, kept = inner.mask_counts(t, img_size=(h, w))
        if dmask is None:
            return {"loss": model(video, mask[ctx.rank :: ctx.world], num_masked=masked).loss}
        return {"loss": model(video, mask[ctx.rank :: ctx.world], num_masked=masked,
                              decoder_mask=dmask[ctx.rank :: ctx.world], num_kept=kept).loss}


def run_pretrain(cfg: PretrainConfig, *, out: str | None = None, resume: str | None = None,
                 config_path: str | None = None, progress: bool | None = None,
                 allow_changes: bool = False) -> TrainResult:
    """Pre-train as the config says; returns the result (rank 0 writes the run folder)."""
    preflight(cfg)
    with run_context(cfg, out, config_path, resume=resume, allow_changes=allow_changes) as ctx:
        samples = build_samples(cfg.data, "train").samples
        model = build_model(cfg)
        planned = build_plan(cfg, len(samples), ctx.dist.world)
        schedule = build_schedule(cfg, planned, lambda f: model_flops(model, f).train)
        write_run_files(ctx, cfg, schedule, {"plan.json": json.dumps(
            {"stages": [p.to_json() for p in planned], "total_steps": schedule.total_steps,
             "world": ctx.dist.world}, indent=2)})
        meta = {"task": "pretrain", "model_kind": "videomae", "model": model.hparams,
                "data": cfg.data.model_dump(mode="json")}
        task = PretrainTask(cfg, samples, ctx)
        return train(ctx, cfg, model, task, schedule, meta, resume, progress)


def plan_report(cfg: PretrainConfig, *, dataset_size: int | None = None, world: int = 1,
                probe: bool = False) -> dict[str, Any]:
    """`progvid plan`: the plan's budgets (`plan_table`) for the config's model, with the
    comparison of TPL, dual masking and both against the one-stage baseline, and with `probe`
    a measured throughput per stage. The dataset size comes from `data.train` when readable;
    without it the plan counts work per training video."""
    if dataset_size is None:
        try:
            dataset_size = len(build_samples(cfg.data, "train").samples)
        except DataError:
            dataset_size = None
    model = build_model(cfg)
    ratio = cfg.model.decoder_mask_ratio

    def variant(frames: int, dual: bool) -> float | None:
        try:
            return model_flops(model, frames, decoder_mask="running_cell" if dual else "none",
                               decoder_mask_ratio=ratio).train
        except ConfigError:  # running-cell masking needs an even token grid
            return None

    measure, threads = None, torch.get_num_threads()
    if probe:
        device = resolve_device(cfg.train.device)
        if device.type == "cpu":  # as many threads as a run would use beside its workers
            torch.set_num_threads(cpu_threads(cfg.train.threads, cfg.data.workers))
        samples = build_samples(cfg.data, "train").samples if dataset_size else None

        def measure(p: PlannedStage) -> StageProbe:
            compute = probe_seconds_per_step(model, p.frames, p.batch_size, cfg.data.input_size,
                                             device, cfg.train.precision)
            loader = None
            if samples:
                it = train_loader(cfg.data, samples, frames=p.frames, batch_size=p.batch_size,
                                  seed=cfg.seed, rank=0, world=1, device=device,
                                  rate=p.sampling_rate, clips_per_decode=p.clips_per_decode)
                loader = seconds_per_batch(it)
            return StageProbe(compute, loader, cfg.data.workers)

    try:
        table = plan_table(cfg, dataset_size, world, lambda f: model_flops(model, f).train, measure,
                           variant)
    finally:
        torch.set_num_threads(threads)
    table["workers"] = cfg.data.workers
    return table

