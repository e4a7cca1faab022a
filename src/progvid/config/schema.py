"""The config models: every section and task config, frozen and strict about unknown keys.

Task configs share their bases: every task has `task`, `seed` and `data`; every training task
adds `out` and `train`; every optimizer section is an `AdamWConfig` with its task's defaults.
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ..constants import IMAGENET_MEAN, IMAGENET_STD

Size = Literal["tiny", "small", "base", "large", "huge"]


def _leaf_types(annotation: Any) -> set[Any]:
    """The plain types (and literal values) an annotation admits."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return {type(a) for a in args}
    if not args:
        return {annotation}
    return set().union(*(_leaf_types(a) for a in args))


def _auto_or_positive(value: int | str) -> int | str:
    if isinstance(value, int) and value < 1:
        raise ValueError("must be `auto` or at least 1")
    return value


AutoOrPositive = Annotated[int | Literal["auto"], AfterValidator(_auto_or_positive)]


class Section(BaseModel):
    """Base of every config section: immutable, strict about unknown keys, no true/false where a
    number belongs, no infinite or NaN numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True,
                              allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name is not None:
            if bool not in _leaf_types(cls.model_fields[info.field_name].annotation):
                raise ValueError(f"expected a number, not {str(value).lower()}")
        return value


class DataConfig(Section):
    """Where the videos are and how clips are sampled and augmented."""

    format: Literal["list", "ssv2", "folder", "unlabeled"] = "list"  # dataset layout (see README, Data)
    root: str = "."  # relative paths in lists and configs resolve against this folder
    train: str | None = None  # list file, SSv2 split json, or sub-folder (folder/unlabeled)
    val: str | None = None  # the validation split, same kind as `train`
    classes: str | None = None  # classes.txt (one name per line) or the SSv2 labels json
    num_frames: int = Field(16, ge=1)  # frames per clip (TPL stages override it)
    sampler: Literal["stride", "segments", "random"] = "stride"  # Kinetics-style stride, TSN segments, or random sorted frames
    sampling_rate: int = Field(4, ge=1)  # frame stride for the `stride` sampler
    clip_mode: Literal["clamp", "loop"] = "clamp"  # clips longer than the video
    input_size: int = Field(224, ge=8)  # crop size in pixels (square)
    short_side: int | None = Field(None, ge=8)  # resize at decode time (saves memory)
    crop: Literal["multiscale", "rrc"] = "multiscale"  # VideoMAE multi-scale crop or random resized crop
    crop_scales: tuple[float, ...] = Field((1.0, 0.875, 0.75, 0.66), min_length=1)  # multi-scale crop sizes, fractions of the short side
    rrc_scale: tuple[float, float] = (0.08, 1.0)  # random resized crop: area range
    flip: bool = True  # turn off for direction-sensitive data (SSv2)
    randaug: str | None = None  # timm RandAugment spec on training clips, e.g. rand-m7-n4-mstd0.5-inc1 (VideoMAE fine-tuning)
    erase_prob: float = Field(0.0, ge=0.0, le=1.0)  # random erasing (pixel mode, one box per clip); VideoMAE fine-tuning: 0.25
    mean: tuple[float, float, float] = IMAGENET_MEAN  # normalization, 0-1 pixel units
    std: tuple[float, float, float] = IMAGENET_STD  # normalization, 0-1 pixel units
    num_sample: int = Field(1, ge=1)  # repeated augmentation: views per decode
    test_clips: int = Field(1, ge=1)  # clips per video when testing (`eval.clips` for fine-tuning)
    test_crops: Literal[1, 3] = 1  # crops per clip when testing
    workers: int = Field(2, ge=0)  # data-loader processes per training process
    decode_threads: int = Field(1, ge=1)  # decoder threads per worker
    transfer: Literal["auto", "uint8", "float32"] = "auto"  # training clips from the workers: uint8, normalised on the training device (a quarter of the bytes), or float32; auto: uint8 unless random erasing is on
    transfer_batches: AutoOrPositive = "auto"  # training batches a worker hands over at once; auto: about 4 MiB of clips, at most 8
    on_error: Literal["raise", "skip"] = "raise"  # bad videos: stop with the reason, or replace and log them
    max_bad_fraction: float = Field(0.01, ge=0.0, le=1.0)  # `skip` fails the run above this share of unreadable videos

    def worker_normalizes(self) -> bool:
        """Whether training clips leave the loader workers normalised (float32)."""
        return self.transfer == "float32" or (self.transfer == "auto" and self.erase_prob > 0)

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.transfer == "uint8" and self.erase_prob > 0:
            raise ValueError("transfer uint8 cannot go with erase_prob > 0 (random erasing works on "
                             "normalised clips): use float32 or auto")
        if self.rrc_scale[0] > self.rrc_scale[1] or not 0 < self.rrc_scale[0] <= 1:
            raise ValueError("rrc_scale must be (low, high) with 0 < low <= high <= 1")
        if any(not 0 < s <= 1 for s in self.crop_scales):
            raise ValueError("crop_scales must lie in (0, 1]")
        if any(s <= 0 for s in self.std):
            raise ValueError("std must be positive")
        return self


class TrainConfig(Section):
    """How the loop runs: batch per process, precision, device, logging and checkpoints."""

    batch_size: int = Field(32, ge=1)  # per process
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast dtype; fp16 uses a gradient scaler
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when available
    threads: AutoOrPositive = "auto"  # torch threads on CPU; auto: the cores the loader workers leave free

    compile: bool = False  # torch.compile the model
    prefetch: bool = True  # fetch the next batch while a step runs (CUDA: copied on a side stream)
    log_every: int = Field(10, ge=1)  # steps per metrics record
    ckpt_every: int = Field(1000, ge=1)  # steps
    keep_last: int = Field(3, ge=1)  # checkpoints kept
    max_nonfinite: int = Field(5, ge=1)  # non-finite losses in a row before the run stops
    tensorboard: bool = True  # write TensorBoard scalars to <run>/tb
    max_steps: int | None = Field(None, ge=1)  # cap for smoke runs; the schedule is unchanged


class AdamWConfig(Section):
    """AdamW and the learning-rate rule: lr = base_lr * total_batch / 256, warmup then cosine."""

    base_lr: float = Field(1.5e-4, gt=0.0)  # lr = base_lr * total_batch / 256
    min_lr: float = Field(1e-5, ge=0.0)  # scaled by total_batch / 256 as well
    warmup_epochs: float = Field(40.0, ge=0.0)  # linear warmup
    weight_decay: float = Field(0.05, ge=0.0)  # AdamW; none on norms, biases, tokens
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW betas
    eps: float = Field(1e-8, gt=0.0)  # AdamW epsilon
    clip_grad: float | None = Field(None, gt=0.0)  # max gradient norm (null: no clipping)
    accum_steps: int = Field(1, ge=1)  # micro-batches per optimizer step


class TaskConfig(Section):
    """What every config has: its task, the seed and the data."""

    task: str = "data"  # which command the config is for
    seed: int = Field(0, ge=0, lt=2**63)  # seeds data order, augmentation, masks and init
    data: DataConfig = DataConfig()


class RunConfig(TaskConfig):
    """What every training task adds: the run folder and how the loop runs."""

    out: str | None = None  # run folder (the CLI's --out wins)
    train: TrainConfig = TrainConfig()


class DataOnlyConfig(TaskConfig):
    """A config that only describes data (`task: data`, or no `task`): a `base:` that run configs
    share; `progvid config validate` checks it."""

    task: Literal["data"] = "data"


# --------------------------------------------------------------------------------------------
# pre-training (VideoMAE under a TPL plan)


class ViTConfig(Section):
    """A video ViT's size and geometry (width/depth/heads from VideoMAE unless overridden)."""

    name: str = "vit"  # model kind
    size: Size = "base"  # ViT size (width/depth/heads from VideoMAE)
    patch_size: int = Field(16, ge=1)  # spatial patch in pixels
    tubelet_size: int = Field(2, ge=1)  # frames per token
    drop_path: float = Field(0.0, ge=0.0, lt=1.0)  # stochastic depth, rising linearly over blocks
    grad_checkpointing: bool = False  # activation checkpointing: less memory, ~30% more compute
    embed_dim: int | None = Field(None, ge=8)  # width override for custom (e.g. CPU-sized) models
    depth: int | None = Field(None, ge=1)  # depth override
    num_heads: int | None = Field(None, ge=1)  # heads override


class ModelConfig(ViTConfig):
    """VideoMAE geometry and size; the builder `progvid.models.videomae` takes these keywords."""

    name: Literal["videomae"] = "videomae"  # model kind
    mask_ratio: float = Field(0.9, gt=0.0, lt=1.0)  # share of tokens masked
    mask_type: Literal["tube", "random"] = "tube"  # tube: same spatial mask in every time slice
    decoder_depth: int = Field(4, ge=1)  # decoder blocks
    norm_pix_loss: bool = True  # per-token normalized pixel target
    decoder_dim: int | None = Field(None, ge=8)  # decoder width override
    decoder_heads: int | None = Field(None, ge=1)  # decoder heads override
    decoder_mask: Literal["none", "running_cell"] = "none"  # VideoMAE V2 dual masking: the decoder sees only part of the tokens
    decoder_mask_ratio: float = Field(0.5, gt=0.0, lt=1.0)  # share of positions the decoder drops (0.25, 0.5 or 0.75)


class OptimConfig(AdamWConfig):
    """AdamW and the learning-rate rule. lr = base_lr * total_batch / 256 (VideoMAE)."""

    warmup_epochs: float = Field(40.0, ge=0.0)  # linear warmup (per stage: scaled by its share of N_e)
    lr_rule: Literal["per_stage", "global", "step"] = "per_stage"  # TPL mechanism 1, 2, ablation
    reset_between_stages: bool = False  # optimizer moments carry across stages by default


class StageConfig(Section):
    """One TPL stage: clip length, share of the budget and its recipe (None: the defaults)."""

    frames: int = Field(ge=1)  # clip length f_i (a multiple of the tubelet)
    share: float = Field(ge=0.0, le=1.0)  # p_i: share of the budget (frames processed)
    batch_size: int | None = Field(None, ge=1)  # per process; null: train.batch_size (or the plan's batch_rule)
    warmup_epochs: float | None = Field(None, ge=0.0)  # null: the baseline's warmup fraction
    clips_per_decode: int | None = Field(None, ge=1)  # null: the plan's clips_per_decode


class BudgetConfig(Section):
    """N_e: the budget in epochs at the reference clip length (frames processed)."""

    epochs: float = Field(800.0, gt=0.0)  # N_e
    ref_frames: int = Field(16, ge=1)  # the reference clip length f_ref
    scale: float = Field(1.0, gt=0.0)  # budget.scale=2 doubles every stage


class PlanConfig(Section):
    """The temporal plan. The VideoMAE baseline is the one-stage plan [16 frames, share 1]."""

    stages: tuple[StageConfig, ...] = Field((StageConfig(frames=16, share=1.0),), min_length=1)  # the stages, short clips first
    temporal: Literal["stride", "span"] = "stride"  # keep frame stride, or keep the time span
    multigrid: bool = False  # random clip length per iteration among the stages' (baseline)
    multigrid_mix: Literal["plan", "uniform"] = "plan"  # plan: lengths drawn in proportion to the plan's steps (TPL's mix and FLOPs in random order); uniform: equally often
    multigrid_stages: Literal["plan", "one"] = "plan"  # plan: the plan's stages, steps and lr schedule, each drawing its lengths at random (seed FIG. 12: the rest of the setting as TPL's); one: a single stage with one warm-up + cosine over the run (progvid's baseline before 2026-12-06)
    clips_per_decode: AutoOrPositive = "auto"  # training clips cut from one decoded video; auto: about f_max / f_i (1 at the longest length)
    batch_rule: Literal["fixed", "scale"] = "fixed"  # scale: stage batch = train.batch_size x f_max / f_i, capped by max_batch: faster, less accurate (seed FIG. 10; bench/tpl_claims.md)
    max_batch: int | None = Field(None, ge=1)  # per-process batch cap of batch_rule scale (memory)


def _fraction(value: Any) -> Any:
    """`"1/16"` -> 0.0625 (shares may be written as fractions); anything else unchanged."""
    if isinstance(value, str) and "/" in value:
        num, _, den = value.partition("/")
        try:
            return float(num) / float(den)
        except (ValueError, ZeroDivisionError):
            return value
    return value


class SearchConfig(Section):
    """The greedy TPL configuration search (seed 000): its space, proxy budget and ranking."""

    stages: tuple[typing.Annotated[int, Field(ge=1, le=4)], ...] = Field((1, 2, 3, 4), min_length=1)  # stage counts the search tries (phase 1)
    frames: tuple[typing.Annotated[int, Field(ge=1)], ...] = Field((2, 4, 8, 12, 16), min_length=1)  # clip lengths the stages choose from (phase 2)
    shares: tuple[typing.Annotated[float, Field(ge=0.0, le=1.0)], ...] = Field(
        (0.0, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0), min_length=1)  # budget shares a stage may take (phase 3); numbers or quoted fractions ("1/4")
    max_share_trials: int = Field(12, ge=1)  # phase 3 tries at most this many share tuples
    batch_exponents: tuple[typing.Annotated[int, Field(ge=0, le=12)], ...] = Field(
        (3, 4, 5, 6), min_length=1)  # batch candidates min(2^j, bz_max)
    bz_max: int | None = Field(None, ge=1)  # None: measured from memory at the longest clip
    metric: Literal["linear", "knn"] = "linear"  # cheap evaluation ranking phases 1-3 (knn: raw cosine, which marks down features that share one direction: bench/frozen_features.md)
    probe_frames: int | None = Field(None, ge=1)  # clip length of the probe (None: max frames)
    proxy_epochs: float = Field(50.0, gt=0.0)  # budget N_e of one trial, epochs at ref_frames
    workers: int = Field(1, ge=1)  # trials run in parallel (the CLI's --workers wins)
    end_frames: int | Literal["any"] | None = None  # plans end here (None: the longest of frames)
    noise_seeds: int = Field(0, ge=0, le=16)  # the best trial again with this many seeds: the metric's noise

    @model_validator(mode="before")
    @classmethod
    def _fractions(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and isinstance(raw.get("shares"), list | tuple):
            raw = {**raw, "shares": [_fraction(v) for v in raw["shares"]]}
        return raw

    @model_validator(mode="after")
    def _check(self) -> SearchConfig:
        for name in ("stages", "frames", "shares", "batch_exponents"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"`{name}` lists a value twice ({list(values)})")
        if max(self.stages) > len(self.frames):
            raise ValueError(f"`stages`: {max(self.stages)} stages need at least as many "
                             f"frame counts in `frames` (it has {len(self.frames)})")
        if isinstance(self.end_frames, int):
            if self.end_frames not in self.frames:
                raise ValueError(f"`end_frames`: {self.end_frames} is not one of `frames` "
                                 f"({list(self.frames)})")
            usable = sum(f <= self.end_frames for f in self.frames)
            if max(self.stages) > usable:
                raise ValueError(f"`stages`: {max(self.stages)} stages ending at {self.end_frames} "
                                 f"frames need as many lengths up to it in `frames` ({usable})")
        return self

    def end_length(self) -> int | None:
        """The clip length every plan ends at (None: any)."""
        if self.end_frames == "any":
            return None
        return self.end_frames if isinstance(self.end_frames, int) else max(self.frames)


class PretrainConfig(RunConfig):
    """`progvid pretrain` with task: pretrain: VideoMAE under a temporal plan."""

    task: Literal["pretrain"] = "pretrain"  # which command the config is for
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    budget: BudgetConfig = BudgetConfig()
    plan: PlanConfig = PlanConfig()
    search: SearchConfig = SearchConfig()


# --------------------------------------------------------------------------------------------
# HCML


class CNNConfig(Section):
    """A 3-D ResNet's depth and width."""

    resnet_depth: Literal[18, 50] = 18  # ResNet3D-18 or -50
    width: float = Field(1.0, gt=0.0)  # channel multiplier (0.25 for CPU-sized runs)


class HCMLModelConfig(CNNConfig):
    """HCML: a 3-D ResNet with prime motion blocks. Numbers the seed leaves open come from the
    closest public practice; each default says where from."""

    temporal_strides: tuple[int, int, int, int] = (1, 1, 1, 1)  # keep T for motion pairs
    levels: tuple[typing.Annotated[int, Field(ge=1, le=4)], ...] = (1, 2, 3)  # res5 is ~ the 13x13 window
    beta: int = Field(4, ge=1)  # channel reduction: the 4x of a ResNet bottleneck
    max_displacement: int = Field(6, ge=1)  # seed [0036]
    stride: int = Field(2, ge=1)  # seed [0036]: 49 cost-volume channels
    deltas: tuple[typing.Annotated[int, Field(ge=1)], ...] = (1, 2, 3)  # DPC predicts 3 steps
    num_samples: int = Field(16, ge=1)  # N locations per video: DPC's 4x4 grid
    tau: float = Field(0.07, gt=0.0)  # MoCo/CMC temperature for cosine similarity
    zeta: float = Field(0.1, ge=0.0)  # smoothness weight; at 1 the flow net stays a near-constant field (bench/flow_smoothness.md); tune per dataset
    recon_weight: float = Field(1.0, ge=0.0)  # lambda: the seed gives none; L_recon is O(0.1-1) like L_cls
    contrastive_weight: float = Field(0.1, ge=0.0)  # gamma_l: each InfoNCE term is 4-7 nats; 1 crowds out L_cls (bench/hcml_pan.md)
    dropout: float = Field(0.5, ge=0.0, lt=1.0)  # before the classification head


class HCMLPhasesConfig(Section):
    """Progressive self-supervised training: the flow network, then each level in turn."""

    flow_epochs: float = Field(10.0, gt=0.0)  # the flow network (level 0)
    level_epochs: float = Field(10.0, gt=0.0)  # per level, everything below frozen


class HCMLOptimConfig(AdamWConfig):
    """AdamW for the HCML phases: lr = base_lr * total_batch / 256, per phase warmup + cosine."""

    base_lr: float = Field(1e-3, gt=0.0)  # x total_batch / 256, per phase: warmup + cosine
    min_lr: float = Field(1e-5, ge=0.0)  # scaled like base_lr
    warmup_epochs: float = Field(1.0, ge=0.0)  # linear warmup per phase
    weight_decay: float = Field(1e-4, ge=0.0)  # AdamW; none on norms, biases
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas


class HCMLConfig(RunConfig):
    """`progvid pretrain` with task: hcml runs the self-supervised phases."""

    task: Literal["hcml"] = "hcml"  # which command the config is for
    model: HCMLModelConfig = HCMLModelConfig()
    optim: HCMLOptimConfig = HCMLOptimConfig()
    phases: HCMLPhasesConfig = HCMLPhasesConfig()


# --------------------------------------------------------------------------------------------
# fine-tuning


class ClassifierConfig(CNNConfig, ViTConfig):
    """The classifier to fine-tune: a ViT encoder (VideoMAE) or, for HCML, a 3-D CNN."""

    name: Literal["vit", "resnet3d", "hcml"] = "vit"  # model kind
    init: str | None = None  # progvid pre-training run/checkpoint, transformers folder, or .pth
    drop_path: float = Field(0.1, ge=0.0, lt=1.0)  # stochastic depth, rising linearly over blocks
    head_dropout: float = Field(0.0, ge=0.0, lt=1.0)  # dropout before the head
    init_scale: float = Field(0.001, gt=0.0)  # the head's initial weights are scaled by this
    num_classes: int | None = Field(None, ge=1)  # default: the number of class names


class FinetuneOptimConfig(AdamWConfig):
    """VideoMAE fine-tuning: AdamW (0.9, 0.999), layer decay 0.75, lr = base_lr * batch / 256."""

    base_lr: float = Field(1e-3, gt=0.0)  # lr = base_lr * total_batch / 256
    min_lr: float = Field(1e-6, ge=0.0)  # scaled like base_lr
    warmup_epochs: float = Field(5.0, ge=0.0)  # linear warmup
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas
    layer_decay: float = Field(0.75, gt=0.0, le=1.0)  # lr x layer_decay^(depth + 1 - layer)


class MixupConfig(Section):
    """Mixup / CutMix on whole clips (one box for every frame) and label smoothing."""

    mixup_alpha: float = Field(0.8, ge=0.0)  # Beta(alpha, alpha) mixing weight; 0: off
    cutmix_alpha: float = Field(1.0, ge=0.0)  # Beta(alpha, alpha) box area; 0: off
    switch_prob: float = Field(0.5, ge=0.0, le=1.0)  # CutMix instead of Mixup
    prob: float = Field(1.0, ge=0.0, le=1.0)  # share of batches mixed
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)  # also without mixing


class EvalConfig(Section):
    """Multi-view testing: clips x crops per video, mean of softmax."""

    clips: int = Field(5, ge=1)  # temporal clips per video
    crops: Literal[1, 3] = 3  # spatial crops per clip
    batch_size: int = Field(4, ge=1)  # videos per process (each with clips x crops views)
    at_end: bool = True  # evaluate the final model on the val split when training ends
    # Validation during fine-tuning (top-1, top-5, loss into metrics.jsonl and TensorBoard; the
    # best top-1 kept as checkpoints/best): every this many epochs (0: never), with these views.
    every_epochs: float = Field(1.0, ge=0.0)
    val_clips: int = Field(1, ge=1)  # temporal clips per video for the per-epoch validation
    val_crops: Literal[1, 3] = 1  # spatial crops per clip for the per-epoch validation


class FinetuneConfig(RunConfig):
    """`progvid finetune`: supervised fine-tuning for action recognition."""

    task: Literal["finetune"] = "finetune"  # which command the config is for
    epochs: float = Field(100.0, gt=0.0)  # training epochs
    model: ClassifierConfig = ClassifierConfig()
    optim: FinetuneOptimConfig = FinetuneOptimConfig()
    mixup: MixupConfig = MixupConfig()
    eval: EvalConfig = EvalConfig()
    hcml: HCMLModelConfig = HCMLModelConfig()  # model.name: hcml; with an HCML `init` only recon_weight, contrastive_weight, dropout apply


TASKS: dict[str, type[TaskConfig]] = {
    "data": DataOnlyConfig, "pretrain": PretrainConfig, "finetune": FinetuneConfig,
    "hcml": HCMLConfig,
}
