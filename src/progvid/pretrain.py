"""`progvid pretrain`: VideoMAE pre-training under a temporal plan (one stage = the baseline)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from .config import PretrainConfig, save_config
from .data.datasets import Sample, build_samples
from .data.loader import SkipLog, train_loader
from .engine.checkpoint import resolve_resume
from .engine.distributed import DistInfo
from .engine.schedule import Stage
from .engine.trainer import StepContext, TrainResult
from .models import videomae
from .models.videomae import VideoMAE
from .progressive.flops import model_flops
from .progressive.plan import build_plan, build_schedule
from .runs import run_context, train


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


class PretrainTask:
    """Masked-autoencoder step on clips of the stage's length."""

    def __init__(self, cfg: PretrainConfig, samples: list[Sample], run_dir: Path) -> None:
        self.cfg = cfg
        self.samples = samples
        self.skips = SkipLog(len(samples), cfg.data.max_bad_fraction, run_dir / "skipped.jsonl")

    def loader(self, stage_index: int, stage: Stage, *, frames: int, dist: DistInfo,
               device: torch.device) -> DataLoader:
        rate = stage.extra.get("rates", {}).get(frames, stage.extra.get("sampling_rate"))
        return train_loader(self.cfg.data, self.samples, frames=frames, batch_size=stage.batch_size,
                            seed=self.cfg.seed * 1000 + stage_index, rank=dist.rank,
                            world=dist.world, device=device, rate=rate)

    def step(self, model: torch.nn.Module, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        self.skips.update(batch["skipped"])
        video = batch["video"].to(ctx.device, non_blocking=True)
        inner: VideoMAE = getattr(model, "module", model)
        inner = getattr(inner, "_orig_mod", inner)
        _, _, t, h, w = video.shape
        # masks for the global batch from the step's generator, each rank takes its rows: the
        # same masks as a single process with the same global batch (loader shards rank::world)
        b = video.shape[0]
        mask = inner.random_mask(b * ctx.world, t, ctx.device, ctx.generator, img_size=(h, w))
        mask = mask[ctx.rank :: ctx.world]
        out = model(video, mask)
        return {"loss": out.loss}

    def clips(self, batch: dict[str, Any]) -> int:
        return int(batch["video"].shape[0])


def run_pretrain(cfg: PretrainConfig, *, out: str | None = None, resume: str | None = None,
                 config_path: str | None = None, progress: bool | None = None) -> TrainResult:
    """Pre-train as the config says; returns the result (rank 0 writes the run folder)."""
    with run_context(cfg, out, config_path) as ctx:
        samples = build_samples(cfg.data, "train").samples
        model = build_model(cfg)
        planned = build_plan(cfg, len(samples), ctx.dist.world)
        schedule = build_schedule(cfg, planned, lambda f: model_flops(model, f).train)
        if ctx.dist.is_main:
            ctx.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, ctx.run_dir / "config.yaml")
            (ctx.run_dir / "plan.json").write_text(json.dumps(
                {"stages": [p.to_json() for p in planned], "total_steps": schedule.total_steps,
                 "world": ctx.dist.world}, indent=2))
        meta = {"task": "pretrain", "model": model.hparams, "data": cfg.data.model_dump(mode="json")}
        task = PretrainTask(cfg, samples, ctx.run_dir)
        return train(ctx, cfg, model, task, schedule, meta, resume, progress)


def load_videomae(checkpoint: str | Path) -> VideoMAE:
    """Rebuild a pre-trained VideoMAE from a checkpoint folder (or a run folder: its newest)."""
    from .engine.checkpoint import CheckpointError, load_meta, load_weights

    path = resolve_resume(Path(checkpoint), str(checkpoint))
    assert path is not None
    meta = load_meta(path)
    if meta.get("task") != "pretrain" or "model" not in meta:
        raise CheckpointError(f"{path}: not a VideoMAE pre-training checkpoint "
                              f"(task {meta.get('task')!r})")
    model = VideoMAE.from_hparams(meta["model"])
    missing, unexpected = model.load_state_dict(load_weights(path), strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match the saved model "
                              f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})")
    return model.eval()


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, fmt: str = "hf") -> Path:
    """Write a pre-training checkpoint in another format (`hf`: a transformers folder)."""
    from .errors import ProgvidError

    if fmt != "hf":
        raise ProgvidError(f"--format: unknown export format {fmt!r} (supported: hf)")
    from .interop.hf import export_hf

    return export_hf(load_videomae(checkpoint), out_dir)
