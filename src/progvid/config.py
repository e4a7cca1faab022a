"""Typed run configs: YAML files loaded into frozen pydantic models that reject unknown keys.

A config is validated completely before anything runs. Mistakes come back as one-line
`ConfigError`s that name the file and the dotted field ("unknown key `optim.lrr` (did you mean
`optim.lr`?)"). Dotted overrides (`--set optim.lr=3e-4`) are applied to the raw mapping before
validation, so they are checked exactly like the file.
"""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Section(BaseModel):
    """Base of every config section: immutable, strict about unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


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
    crop_scales: tuple[float, ...] = (1.0, 0.875, 0.75, 0.66)  # multi-scale crop sizes, fractions of the short side
    rrc_scale: tuple[float, float] = (0.08, 1.0)  # random resized crop: area range
    flip: bool = True  # turn off for direction-sensitive data (SSv2)
    mean: tuple[float, float, float] = IMAGENET_MEAN  # normalization, 0-1 pixel units
    std: tuple[float, float, float] = IMAGENET_STD  # normalization, 0-1 pixel units
    num_sample: int = Field(1, ge=1)  # repeated augmentation: views per decode
    test_clips: int = Field(1, ge=1)  # clips per video when testing (`eval.clips` for fine-tuning)
    test_crops: Literal[1, 3] = 1  # crops per clip when testing
    workers: int = Field(2, ge=0)  # data-loader processes per training process
    decode_threads: int = Field(1, ge=1)  # decoder threads per worker
    on_error: Literal["raise", "skip"] = "raise"  # bad videos: stop with the reason, or replace and log them
    max_bad_fraction: float = Field(0.01, ge=0.0, le=1.0)  # `skip` fails the run above this share of unreadable videos

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.rrc_scale[0] > self.rrc_scale[1] or not 0 < self.rrc_scale[0] <= 1:
            raise ValueError("rrc_scale must be (low, high) with 0 < low <= high <= 1")
        if any(not 0 < s <= 1 for s in self.crop_scales):
            raise ValueError("crop_scales must lie in (0, 1]")
        if any(s <= 0 for s in self.std):
            raise ValueError("std must be positive")
        return self


class DataOnlyConfig(Section):
    """A config that only describes data (`task: data`), e.g. for `data check` recipes."""

    task: Literal["data"] = "data"
    seed: int = 0  # seeds data order, augmentation, masks and init
    data: DataConfig = DataConfig()


RunConfig = DataOnlyConfig


class ModelConfig(Section):
    """VideoMAE geometry and size; the builder `progvid.models.videomae` takes these keywords."""

    name: Literal["videomae"] = "videomae"
    size: Literal["tiny", "small", "base", "large", "huge"] = "base"  # ViT size (width/depth/heads from VideoMAE)
    patch_size: int = Field(16, ge=1)  # spatial patch in pixels
    tubelet_size: int = Field(2, ge=1)  # frames per token
    mask_ratio: float = Field(0.9, gt=0.0, lt=1.0)  # share of tokens masked
    mask_type: Literal["tube", "random"] = "tube"  # tube: same spatial mask in every time slice
    decoder_depth: int = Field(4, ge=1)  # decoder blocks
    drop_path: float = Field(0.0, ge=0.0, lt=1.0)  # stochastic depth, rising linearly over blocks
    norm_pix_loss: bool = True  # per-token normalized pixel target
    grad_checkpointing: bool = False  # activation checkpointing: less memory, ~30% more compute
    # width/depth/heads overrides for custom (e.g. CPU-sized) models
    embed_dim: int | None = Field(None, ge=8)
    depth: int | None = Field(None, ge=1)
    num_heads: int | None = Field(None, ge=1)
    decoder_dim: int | None = Field(None, ge=8)
    decoder_heads: int | None = Field(None, ge=1)


class OptimConfig(Section):
    """AdamW and the learning-rate rule. lr = base_lr * total_batch / 256 (VideoMAE)."""

    base_lr: float = Field(1.5e-4, gt=0.0)  # lr = base_lr * total_batch / 256
    min_lr: float = Field(1e-5, ge=0.0)  # scaled by total_batch / 256 as well
    warmup_epochs: float = Field(40.0, ge=0.0)  # linear warmup (per stage: scaled by its share of N_e)
    weight_decay: float = Field(0.05, ge=0.0)  # AdamW; none on norms, biases, tokens
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW betas
    eps: float = Field(1e-8, gt=0.0)  # AdamW epsilon
    clip_grad: float | None = Field(None, gt=0.0)  # max gradient norm (null: no clipping)
    accum_steps: int = Field(1, ge=1)  # micro-batches per optimizer step
    lr_rule: Literal["per_stage", "global", "step"] = "per_stage"  # TPL mechanism 1, 2, ablation
    reset_between_stages: bool = False  # optimizer moments carry across stages by default


class TrainConfig(Section):
    """How the loop runs: batch per process, precision, device, logging and checkpoints."""

    batch_size: int = Field(32, ge=1)  # per process
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast dtype; fp16 uses a gradient scaler
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when available
    compile: bool = False  # torch.compile the model
    log_every: int = Field(10, ge=1)  # steps per metrics record
    ckpt_every: int = Field(1000, ge=1)  # steps
    keep_last: int = Field(3, ge=1)  # checkpoints kept
    max_nonfinite: int = Field(5, ge=1)  # non-finite losses in a row before the run stops
    tensorboard: bool = True  # write TensorBoard scalars to <run>/tb
    max_steps: int | None = Field(None, ge=1)  # cap for smoke runs; the schedule is unchanged


class StageConfig(Section):
    """One TPL stage: clip length, share of the budget and its recipe (None: the defaults)."""

    frames: int = Field(ge=1)  # clip length f_i (a multiple of the tubelet)
    share: float = Field(ge=0.0, le=1.0)  # p_i: share of the budget (frames processed)
    batch_size: int | None = Field(None, ge=1)  # per process; null: train.batch_size
    warmup_epochs: float | None = Field(None, ge=0.0)  # null: the baseline's warmup fraction


class BudgetConfig(Section):
    """N_e: the budget in epochs at the reference clip length (frames processed)."""

    epochs: float = Field(800.0, gt=0.0)  # N_e
    ref_frames: int = Field(16, ge=1)  # the reference clip length f_ref
    scale: float = Field(1.0, gt=0.0)  # budget.scale=2 doubles every stage


class PlanConfig(Section):
    """The temporal plan. The VideoMAE baseline is the one-stage plan [16 frames, share 1]."""

    stages: tuple[StageConfig, ...] = (StageConfig(frames=16, share=1.0),)
    temporal: Literal["stride", "span"] = "stride"  # keep frame stride, or keep the time span
    multigrid: bool = False  # random clip length per iteration among the stages' (baseline)


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

    stages: tuple[typing.Annotated[int, Field(ge=1, le=4)], ...] = Field((1, 2, 3, 4), min_length=1)
    frames: tuple[typing.Annotated[int, Field(ge=1)], ...] = Field((2, 4, 8, 12, 16), min_length=1)
    shares: tuple[typing.Annotated[float, Field(ge=0.0, le=1.0)], ...] = Field(
        (0.0, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0), min_length=1)
    max_share_trials: int = Field(12, ge=1)  # phase 3 tries at most this many share tuples
    batch_exponents: tuple[typing.Annotated[int, Field(ge=0, le=12)], ...] = Field(
        (3, 4, 5, 6), min_length=1)  # batch candidates min(2^j, bz_max)
    bz_max: int | None = Field(None, ge=1)  # None: measured from memory at the longest clip
    metric: Literal["linear", "knn"] = "linear"  # cheap evaluation ranking phases 1-3
    probe_frames: int | None = Field(None, ge=1)  # clip length of the probe (None: max frames)
    proxy_epochs: float = Field(50.0, gt=0.0)  # budget N_e of one trial, epochs at ref_frames
    workers: int = Field(1, ge=1)  # trials run in parallel (the CLI's --workers wins)

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
        return self


class PretrainConfig(Section):
    task: Literal["pretrain"] = "pretrain"
    seed: int = 0  # seeds data order, augmentation, masks and init
    out: str | None = None  # run folder (the CLI's --out wins)
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    budget: BudgetConfig = BudgetConfig()
    plan: PlanConfig = PlanConfig()
    search: SearchConfig = SearchConfig()


class ClassifierConfig(Section):
    """The classifier to fine-tune: a ViT encoder (VideoMAE) or, for HCML, a 3-D CNN."""

    name: Literal["vit", "resnet3d", "hcml"] = "vit"
    init: str | None = None  # progvid pre-training run/checkpoint, transformers folder, or .pth
    size: Literal["tiny", "small", "base", "large", "huge"] = "base"  # ViT size (width/depth/heads from VideoMAE)
    patch_size: int = Field(16, ge=1)  # spatial patch in pixels
    tubelet_size: int = Field(2, ge=1)  # frames per token
    embed_dim: int | None = Field(None, ge=8)
    depth: int | None = Field(None, ge=1)
    num_heads: int | None = Field(None, ge=1)
    drop_path: float = Field(0.1, ge=0.0, lt=1.0)
    head_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    init_scale: float = Field(0.001, gt=0.0)
    grad_checkpointing: bool = False  # activation checkpointing: less memory, ~30% more compute
    num_classes: int | None = Field(None, ge=1)  # default: the number of class names
    # 3-D CNN options (resnet3d / hcml)
    resnet_depth: Literal[18, 50] = 18
    width: float = Field(1.0, gt=0.0)


class FinetuneOptimConfig(Section):
    """VideoMAE fine-tuning: AdamW (0.9, 0.999), layer decay 0.75, lr = base_lr * batch / 256."""

    base_lr: float = Field(1e-3, gt=0.0)
    min_lr: float = Field(1e-6, ge=0.0)  # scaled like base_lr
    warmup_epochs: float = Field(5.0, ge=0.0)
    weight_decay: float = Field(0.05, ge=0.0)  # AdamW; none on norms, biases, tokens
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0.0)  # AdamW epsilon
    layer_decay: float = Field(0.75, gt=0.0, le=1.0)
    clip_grad: float | None = Field(None, gt=0.0)  # max gradient norm (null: no clipping)
    accum_steps: int = Field(1, ge=1)  # micro-batches per optimizer step


class MixupConfig(Section):
    """Mixup / CutMix on whole clips (one box for every frame) and label smoothing."""

    mixup_alpha: float = Field(0.8, ge=0.0)
    cutmix_alpha: float = Field(1.0, ge=0.0)
    switch_prob: float = Field(0.5, ge=0.0, le=1.0)
    prob: float = Field(1.0, ge=0.0, le=1.0)
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)


class EvalConfig(Section):
    """Multi-view testing: clips x crops per video, mean of softmax."""

    clips: int = Field(5, ge=1)
    crops: Literal[1, 3] = 3
    batch_size: int = Field(4, ge=1)  # videos per process (each with clips x crops views)
    at_end: bool = True  # evaluate the final model on the val split when training ends


class HCMLModelConfig(Section):
    """HCML: a 3-D ResNet with prime motion blocks. Numbers the seed leaves open come from the
    closest public practice; each default says where from."""

    resnet_depth: Literal[18, 50] = 18
    width: float = Field(1.0, gt=0.0)  # channel multiplier (0.25 for CPU-sized runs)
    temporal_strides: tuple[int, int, int, int] = (1, 1, 1, 1)  # keep T for motion pairs
    levels: tuple[typing.Annotated[int, Field(ge=1, le=4)], ...] = (1, 2, 3)  # res5 is ~ the 13x13 window
    beta: int = Field(4, ge=1)  # channel reduction: the 4x of a ResNet bottleneck
    max_displacement: int = Field(6, ge=1)  # seed [0036]
    stride: int = Field(2, ge=1)  # seed [0036]: 49 cost-volume channels
    deltas: tuple[typing.Annotated[int, Field(ge=1)], ...] = (1, 2, 3)  # DPC predicts 3 steps
    num_samples: int = Field(16, ge=1)  # N locations per video: DPC's 4x4 grid
    tau: float = Field(0.07, gt=0.0)  # MoCo/CMC temperature for cosine similarity
    zeta: float = Field(1.0, ge=0.0)  # smoothness weight; UnFlow-style, tune per dataset
    recon_weight: float = Field(1.0, ge=0.0)  # lambda: the seed gives none; terms are O(1) means
    contrastive_weight: float = Field(1.0, ge=0.0)  # gamma_l, same reasoning
    dropout: float = Field(0.5, ge=0.0, lt=1.0)


class HCMLPhasesConfig(Section):
    """Progressive self-supervised training: the flow network, then each level in turn."""

    flow_epochs: float = Field(10.0, gt=0.0)
    level_epochs: float = Field(10.0, gt=0.0)  # per level, everything below frozen


class HCMLOptimConfig(Section):
    base_lr: float = Field(1e-3, gt=0.0)  # x total_batch / 256, per phase: warmup + cosine
    min_lr: float = Field(1e-5, ge=0.0)
    warmup_epochs: float = Field(1.0, ge=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0.0)  # AdamW epsilon
    clip_grad: float | None = Field(None, gt=0.0)  # max gradient norm (null: no clipping)
    accum_steps: int = Field(1, ge=1)  # micro-batches per optimizer step


class HCMLConfig(Section):
    """`progvid pretrain` with task: hcml runs the self-supervised phases."""

    task: Literal["hcml"] = "hcml"
    seed: int = 0  # seeds data order, augmentation, masks and init
    out: str | None = None
    data: DataConfig = DataConfig()
    model: HCMLModelConfig = HCMLModelConfig()
    optim: HCMLOptimConfig = HCMLOptimConfig()
    train: TrainConfig = TrainConfig()
    phases: HCMLPhasesConfig = HCMLPhasesConfig()


class FinetuneConfig(Section):
    task: Literal["finetune"] = "finetune"
    seed: int = 0  # seeds data order, augmentation, masks and init
    out: str | None = None
    epochs: float = Field(100.0, gt=0.0)
    data: DataConfig = DataConfig()
    model: ClassifierConfig = ClassifierConfig()
    optim: FinetuneOptimConfig = FinetuneOptimConfig()
    train: TrainConfig = TrainConfig()
    mixup: MixupConfig = MixupConfig()
    eval: EvalConfig = EvalConfig()
    hcml: HCMLModelConfig = HCMLModelConfig()  # model.name: hcml without an HCML `init`


# --------------------------------------------------------------------------------------------
# Loading, overrides, errors


def _dotted(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc)


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The section class that owns the last element of `loc` (for "did you mean")."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(str(part))
        if field is None:
            return None
        current = _unwrap(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """The BaseModel inside Optional[...] / list[...] / tuple[...], if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _unwrap(arg)
        if found is not None:
            return found
    return None


def _format_error(cls: type[BaseModel], err: dict[str, Any]) -> str:
    loc = tuple(p for p in err["loc"] if p not in ("function-after",))
    # pydantic puts tagged-union / validator names into loc; keep only plain names and indices
    name = _dotted(loc)
    if err["type"] == "extra_forbidden":
        owner = _model_at(cls, loc)
        hint = ""
        if owner is not None:
            close = difflib.get_close_matches(str(loc[-1]), list(owner.model_fields), n=1)
            if close:
                hint = f" (did you mean `{_dotted(loc[:-1] + (close[0],))}`?)"
        return f"unknown key `{name}`{hint}"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if not name:
        return msg
    got = err.get("input")
    shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
    return f"`{name}`: {msg}{shown}"


def validate(cls: type[BaseModel], raw: Any, source: str) -> Any:
    """Validate a raw mapping into `cls`; the first problem becomes a one-line ConfigError."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping of keys to values")
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(f"{source}: {_format_error(cls, errors[0])}{more}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override `{text}`: expected KEY=VALUE, e.g. optim.lr=3e-4")
    key, value = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override `{text}`: empty key")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    # YAML reads "3e-4" as a string (it wants a dot); numbers are what users mean
    if isinstance(parsed, str):
        try:
            parsed = float(parsed) if any(c in parsed for c in ".eE") else int(parsed)
        except ValueError:
            pass
    return parts, parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `raw` with dotted overrides applied (list items by integer index)."""
    import copy

    out = copy.deepcopy(raw)
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = out
        for i, part in enumerate(parts[:-1]):
            key: Any = int(part) if isinstance(node, list) and part.isdigit() else part
            if isinstance(node, list):
                if not isinstance(key, int) or not -len(node) <= key < len(node):
                    raise ConfigError(f"override `{text}`: no item {part} in `{'.'.join(parts[:i])}`")
                node = node[key]
            else:
                if key not in node or node[key] is None:
                    if parts[i + 1].isdigit():  # an index into a list the file does not set
                        raise ConfigError(
                            f"override `{text}`: `{'.'.join(parts[: i + 1])}` is not set in the "
                            f"config; set the whole list, e.g. {'.'.join(parts[: i + 1])}=[...]")
                    node[key] = {}
                node = node[key]
            if not isinstance(node, dict | list):
                raise ConfigError(f"override `{text}`: `{'.'.join(parts[: i + 1])}` is not a section")
        last: Any = parts[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise ConfigError(f"override `{text}`: no item {last} in `{'.'.join(parts[:-1])}`")
            node[int(last)] = value
        else:
            node[last] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        reason = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}{where}: {reason}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys to values")
    return raw


def load_config(
    path: str | Path, overrides: list[str] | None = None, cls: type[BaseModel] | None = None
) -> Any:
    """Load, override and validate a config file. `cls` defaults to the model named by `task`."""
    raw = apply_overrides(read_yaml(path), overrides or [])
    if cls is None:
        cls = config_class(raw.get("task", "data"), str(path))
    return validate(cls, raw, str(path))


_TASKS: dict[str, type[BaseModel]] = {
    "data": DataOnlyConfig, "pretrain": PretrainConfig, "finetune": FinetuneConfig,
    "hcml": HCMLConfig,
}


def config_class(task: Any, source: str) -> type[BaseModel]:
    if task not in _TASKS:
        known = ", ".join(sorted(_TASKS))
        raise ConfigError(f"{source}: `task`: unknown task {task!r} (known: {known})")
    return _TASKS[task]


def to_plain(cfg: BaseModel) -> dict[str, Any]:
    """The config as plain YAML-able data (tuples as lists)."""
    return cfg.model_dump(mode="json")


def save_config(cfg: BaseModel, path: str | Path) -> None:
    """Write the fully resolved config (every default spelled out) next to a run."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(to_plain(cfg), sort_keys=False))
    tmp.replace(path)
