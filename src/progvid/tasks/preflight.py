"""Every check a run makes before it touches data or models, in one place: `progvid config
validate` runs them, and every training task runs them first, so a config that validates
starts, and every message names the config field.

The schema (config/schema.py) checks each field alone; these checks need several fields at
once, or the models' size tables, or the files a config points at.
"""

from __future__ import annotations

from typing import Any

from ..config import (
    DataConfig,
    FinetuneConfig,
    HCMLConfig,
    HCMLModelConfig,
    PretrainConfig,
    ViTConfig,
)
from ..data.datasets import build_samples
from ..errors import ConfigError
from ..models.masking import running_cell_kept
from ..models.videomae import DECODER_SIZES
from ..models.vit import ENCODER_SIZES
from ..progressive.plan import validate_plan

# the largest model a config may ask for (parameters); a typo like depth 1200 fails here, not
# after minutes of allocating
MAX_PARAMS = 5e9


def _vit_dims(m: ViTConfig, where: str) -> tuple[int, int, int]:
    dim, depth, heads = ENCODER_SIZES[m.size]
    dim, depth, heads = m.embed_dim or dim, m.depth or depth, m.num_heads or heads
    if dim % heads:
        raise ConfigError(f"{where}.num_heads: {heads} heads do not divide the width "
                          f"{where}.embed_dim = {dim}")
    if 12 * depth * dim * dim > MAX_PARAMS:
        raise ConfigError(f"{where}: depth {depth} x width {dim} is about "
                          f"{12 * depth * dim * dim / 1e9:.0f}G parameters, over the {MAX_PARAMS / 1e9:g}G "
                          "limit; check embed_dim and depth")
    return dim, depth, heads


def _clip_geometry(d: DataConfig, patch: int, tubelet: int, frames: list[int], where: str) -> None:
    if patch > d.input_size or d.input_size % patch:
        raise ConfigError(f"data.input_size: {d.input_size} is not a multiple of "
                          f"{where}.patch_size = {patch}")
    for f in frames:
        if f % tubelet:
            raise ConfigError(f"data.num_frames: {f} frames are not a multiple of "
                              f"{where}.tubelet_size = {tubelet}")


def _pretrain(cfg: PretrainConfig) -> None:
    m = cfg.model
    validate_plan(cfg)
    _vit_dims(m, "model")
    dec_dim, dec_heads = DECODER_SIZES[m.size]
    dec_dim, dec_heads = m.decoder_dim or dec_dim, m.decoder_heads or dec_heads
    if dec_dim % dec_heads:
        raise ConfigError(f"model.decoder_heads: {dec_heads} heads do not divide the decoder "
                          f"width model.decoder_dim = {dec_dim}")
    _clip_geometry(cfg.data, m.patch_size, m.tubelet_size, [], "model")
    if m.decoder_mask != "none":
        side = cfg.data.input_size // m.patch_size
        try:
            running_cell_kept(1, side, side, m.decoder_mask_ratio)
        except ConfigError as exc:
            raise ConfigError(f"model.decoder_mask: {exc}") from None


def _finetune(cfg: FinetuneConfig) -> None:
    m = cfg.model
    if m.name == "vit":
        if not m.init:
            _vit_dims(m, "model")
        _clip_geometry(cfg.data, m.patch_size, m.tubelet_size, [cfg.data.num_frames], "model")
    elif m.name == "hcml" and not m.init:  # with an HCML init the checkpoint's network counts
        _hcml_frames(cfg.hcml, cfg.data.num_frames, "hcml")


def _hcml_frames(m: HCMLModelConfig, frames: int, where: str) -> None:
    """Every HCML level must keep more time steps than the shortest prediction reaches ahead
    (each stage divides T by its temporal stride, rounding up)."""
    if frames < 2:
        raise ConfigError("data.num_frames: HCML needs at least 2 frames (motion between frames)")
    t = frames
    for level, stride in enumerate(m.temporal_strides, start=1):
        t = -(-t // stride)
        if level in m.levels and t <= min(m.deltas):
            raise ConfigError(f"data.num_frames: {frames} frames leave {t} time step(s) at HCML "
                              f"level {level}, too few to predict {min(m.deltas)} step(s) ahead "
                              f"({where}.deltas, {where}.temporal_strides)")


def _hcml(cfg: HCMLConfig) -> None:
    _hcml_frames(cfg.model, cfg.data.num_frames, "model")


CHECKS: dict[type, Any] = {PretrainConfig: _pretrain, FinetuneConfig: _finetune, HCMLConfig: _hcml}


def preflight(cfg: Any, *, data: bool = True) -> None:
    """Raise a one-line ConfigError / DataError for anything a run of `cfg` would reject before
    training; with `data`, also read the training (and validation) split's list."""
    check = CHECKS.get(type(cfg))
    if check is not None:
        check(cfg)
    if hasattr(cfg, "train") and cfg.data.train is None:
        raise ConfigError("data.train: not set; a run needs its training split")
    if data and hasattr(cfg, "train"):
        # a classifier's class count bounds the labels of a list without a class list
        classes = cfg.model.num_classes if isinstance(cfg, FinetuneConfig) else None
        names = build_samples(cfg.data, "train", classes).class_names
        if cfg.data.val is not None:
            build_samples(cfg.data, "val", classes)
        if isinstance(cfg, FinetuneConfig):
            if classes is None and names is None:
                raise ConfigError("model.num_classes: not set and the data has no class names "
                                  "(set data.classes)")
            if classes is not None and names is not None and len(names) != classes:
                raise ConfigError(f"model.num_classes: {classes} but data.classes lists {len(names)}")
