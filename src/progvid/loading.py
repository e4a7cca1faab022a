"""Checkpoint -> model: the one place that turns a file into a model, for every kind.

A progvid checkpoint folder holds `meta.json` with the task that wrote it, the model kind and
its JSON-safe hyper-parameters (`model`), and the data settings (`data`). `open_checkpoint`
reads and validates those (the data settings come back as a typed `DataConfig`); `load_model`
rebuilds the model through one table of builders (`BUILDERS`) and loads the weights exactly.
Every command that takes a checkpoint goes through here, so each accepts the same sources
(a checkpoint folder, a run folder meaning its newest checkpoint, and where a VideoMAE is
wanted also a transformers `VideoMAEForPreTraining` folder or an official `.pth` file) and
fails with the same one-line `CheckpointError`s.

`classifier_from_pretrained` builds a fine-tuning classifier whose encoder comes from any
pre-trained source: a progvid pre-training checkpoint, a transformers VideoMAE folder
(`VideoMAEForPreTraining`, `VideoMAEModel` or `VideoMAEForVideoClassification`), or an official
VideoMAE checkpoint file. Loading is strict about which keys may be missing (`fc_norm.*`,
`head.*`) or left over (decoder, mask token, encoder-to-decoder map, the encoder's final norm).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from torch import Tensor, nn

from .config import DataConfig, EvalConfig
from .engine.checkpoint import META, load_exact, load_meta, load_weights, resolve_resume
from .errors import CheckpointError, ConfigError, ProgvidError
from .interop.hf import (
    from_transformers,
    read_official,
    read_transformers_folder,
    require_transformers,
)
from .models.classifier import VideoClassifier
from .models.hcml import HCMLNet
from .models.resnet3d import resnet3d_from_hparams
from .models.videomae import VideoMAE

# model kind -> rebuild from the `model` hyper-parameters of meta.json
BUILDERS: dict[str, Callable[[Mapping[str, Any]], nn.Module]] = {
    "videomae": VideoMAE.from_hparams,
    "vit": VideoClassifier.from_hparams,
    "resnet3d": resnet3d_from_hparams,
    "hcml": HCMLNet.from_hparams,
}
# model kind -> the model that inference runs (HCML drops its flow net and predictors)
INFERENCE: dict[str, Callable[[nn.Module], nn.Module]] = {"hcml": lambda net: net.deploy()}


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint says about itself, typed."""

    path: Path  # the checkpoint folder (or a foreign file / folder)
    task: str  # pretrain | finetune | hcml | deployed | transformers | official
    kind: str  # a key of BUILDERS
    hparams: dict[str, Any]
    data: DataConfig
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def class_names(self) -> list[str] | None:
        names = self.meta.get("class_names")
        return list(names) if isinstance(names, list) else None

    @property
    def num_classes(self) -> int | None:
        n = self.meta.get("num_classes")
        return int(n) if isinstance(n, int) else None

    @property
    def eval(self) -> EvalConfig:
        """The run's multi-view test settings (defaults for runs that recorded none)."""
        raw = self.meta.get("eval") if isinstance(self.meta.get("eval"), dict) else {}
        try:
            return EvalConfig.model_validate(raw)
        except ValidationError:
            raise CheckpointError(f"{self.path / META}: bad `eval` settings") from None


@dataclass(frozen=True)
class Want:
    """Which checkpoints a command accepts: model kinds and (optionally) writing tasks."""

    kinds: frozenset[str]
    tasks: frozenset[str] | None
    what: str  # "a VideoMAE pre-training checkpoint"
    hint: str = ""

    def check(self, ckpt: Checkpoint) -> None:
        if ckpt.kind in self.kinds and (self.tasks is None or ckpt.task in self.tasks):
            return
        raise CheckpointError(f"{ckpt.path}: not {self.what} (task {ckpt.task!r}, model kind "
                              f"{ckpt.kind!r}){self.hint}")


VIDEOMAE = Want(frozenset({"videomae"}), frozenset({"pretrain", "transformers", "official"}),
                "a VideoMAE pre-training checkpoint")
CLASSIFIER = Want(frozenset({"vit", "resnet3d", "hcml"}), frozenset({"finetune"}),
                  "a classifier checkpoint", "; fine-tune it first with `progvid finetune`")
HCML = Want(frozenset({"hcml"}), None, "an HCML checkpoint")


def model_kind(meta: Mapping[str, Any]) -> str:
    """The model kind a meta.json records (runs before `model_kind` existed: by task)."""
    kind = meta.get("model_kind")
    if isinstance(kind, str):
        return kind
    return "videomae" if meta.get("task") == "pretrain" else "vit"


def open_checkpoint(source: str | Path) -> Checkpoint:
    """The checkpoint at `source` (a checkpoint folder, or a run folder: its newest)."""
    path = resolve_resume(Path(source), str(source))
    assert path is not None
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a checkpoint folder")
    meta = load_meta(path)
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path / META}: expected a JSON object")
    hparams = meta.get("model")
    if not isinstance(hparams, dict):
        raise CheckpointError(f"{path / META}: no `model` hyper-parameters")
    kind = model_kind(meta)
    if kind not in BUILDERS:
        raise CheckpointError(f"{path / META}: unknown model kind {kind!r} "
                              f"(known: {', '.join(BUILDERS)})")
    raw_data = meta.get("data") if isinstance(meta.get("data"), dict) else {}
    try:
        data = DataConfig.model_validate(raw_data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise CheckpointError(f"{path / META}: bad `data.{where}` ({first['msg']})") from None
    return Checkpoint(path, str(meta.get("task")), kind, hparams, data, meta)


def build_model(ckpt: Checkpoint) -> nn.Module:
    """The (randomly initialised) model a checkpoint describes."""
    try:
        return BUILDERS[ckpt.kind]({**ckpt.hparams, **_NO_CHECKPOINTING.get(ckpt.kind, {})})
    except (TypeError, ValueError, KeyError, ProgvidError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{ckpt.path / META}: cannot build the {ckpt.kind} model from "
                              f"`model` ({first})") from None


# inference never needs activation checkpointing; training code sets it from its own config
_NO_CHECKPOINTING = {"videomae": {"grad_checkpointing": False}, "vit": {"grad_checkpointing": False}}


def load_model(source: str | Path, want: Want) -> tuple[nn.Module, Checkpoint]:
    """(model in eval mode with the checkpoint's weights, its Checkpoint) for `want`."""
    foreign = _foreign_videomae(Path(source)) if want is VIDEOMAE else None
    if foreign is not None:
        return foreign
    ckpt = open_checkpoint(source)
    want.check(ckpt)
    model = build_model(ckpt)
    load_exact(model, load_weights(ckpt.path),
               f"{ckpt.path}: weights do not fit the {ckpt.kind} model in {META}")
    if want is CLASSIFIER and ckpt.kind in INFERENCE:
        model = INFERENCE[ckpt.kind](model)
    return model.eval(), ckpt


def load_videomae(source: str | Path) -> VideoMAE:
    """A pre-trained VideoMAE (eval mode) from any source `load_model` accepts."""
    model, _ = load_model(source, VIDEOMAE)
    assert isinstance(model, VideoMAE)
    return model


def load_classifier(source: str | Path) -> tuple[nn.Module, Checkpoint]:
    """A fine-tuned classifier (eval mode, ready for inference) and its Checkpoint."""
    return load_model(source, CLASSIFIER)


def _data_for(model: VideoMAE) -> DataConfig:
    """Data settings for a foreign VideoMAE: its input geometry and normalization."""
    hp = model.hparams
    return DataConfig(num_frames=hp["num_frames"], input_size=hp["img_size"],
                      mean=tuple(hp["mean"]), std=tuple(hp["std"]))


def _foreign_videomae(path: Path) -> tuple[nn.Module, Checkpoint] | None:
    """A transformers `VideoMAEForPreTraining` folder or an official pre-training `.pth` file
    as a progvid VideoMAE; None for anything else (progvid folders included)."""
    if path.is_dir() and (path / "config.json").is_file() and not (path / META).is_file():
        transformers = require_transformers()
        arch = (getattr(transformers.VideoMAEConfig.from_pretrained(str(path)),
                        "architectures", None) or ["VideoMAEModel"])[0]
        if arch != "VideoMAEForPreTraining":
            raise CheckpointError(f"{path}: not a VideoMAE pre-training checkpoint (a transformers "
                                  f"{arch} folder has no decoder)")
        model = from_transformers(transformers.VideoMAEForPreTraining.from_pretrained(str(path)))
        return model.eval(), Checkpoint(path, "transformers", "videomae", dict(model.hparams),
                                        _data_for(model))
    if path.is_file():
        geometry, sd = read_official(load_weights(path), path, decoder=True)
        if "decoder_embed_dim" not in geometry:
            raise CheckpointError(f"{path}: not a VideoMAE pre-training checkpoint (no decoder: "
                                  "an official fine-tuned or encoder-only file)")
        model = VideoMAE(**geometry)
        load_exact(model, sd, f"{path}: weights do not fit the inferred VideoMAE")
        return model.eval(), Checkpoint(path, "official", "videomae", dict(model.hparams),
                                        _data_for(model))
    return None


# -- fine-tuning classifiers from pre-trained encoders ------------------------------------------

_NEW = re.compile(r"^(fc_norm|head)\.")  # may be missing: the fine-tuning head is new
_LEFTOVER = re.compile(r"^(decoder\.|encoder_to_decoder\.|mask_token$|encoder\.norm\.|head\.)")
_ENCODER_GEOMETRY = ("img_size", "patch_size", "tubelet_size", "num_frames", "in_chans",
                     "embed_dim", "depth", "num_heads", "mlp_ratio", "norm_eps", "mean", "std")


@dataclass
class LoadReport:
    """Which classifier keys were not in the source (missing) and which source keys were not
    used (unexpected). A source classification head is never loaded: it shows as unexpected."""

    source: str
    kind: str  # "progvid", "transformers" or "official"
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"loaded {self.kind} weights from {self.source}: missing (new) "
                f"{_short(self.missing)}; unexpected (ignored) {_short(self.unexpected)}")


def _short(keys: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit]) + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")
    return f"[{shown}]"


def _load_into(model: VideoClassifier, sd: dict[str, Tensor], report: LoadReport) -> None:
    """Strict-by-rule load: anything but new head keys missing, or anything but pre-training
    leftovers unexpected, or any shape mismatch raises CheckpointError."""
    dropped = sorted(k for k in sd if k.startswith("head."))
    sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted((set(sd) - set(expected)) | set(dropped))
    bad_missing = [k for k in missing if not _NEW.match(k)]
    bad_unexpected = [k for k in unexpected if not _LEFTOVER.match(k)]
    if bad_missing or bad_unexpected:
        raise CheckpointError(f"{report.source}: weights do not fit the classifier: missing "
                              f"{_short(bad_missing)}, unexpected {_short(bad_unexpected)}")
    shapes = [f"{k} {tuple(sd[k].shape)} != {tuple(v.shape)}"
              for k, v in expected.items() if k in sd and sd[k].shape != v.shape]
    if shapes:
        raise CheckpointError(f"{report.source}: shape mismatch: {_short(shapes)}")
    model.load_state_dict({k: v for k, v in sd.items() if k in expected}, strict=False)
    report.missing, report.unexpected = missing, unexpected


def encoder_source(source: str | Path, num_heads: int | None = None
                   ) -> tuple[dict[str, Any], dict[str, Tensor], str, str]:
    """(encoder geometry, weights in progvid names, source name, source kind) of a pre-trained
    VideoMAE encoder: progvid checkpoint, transformers folder or official file."""
    path = Path(source)
    if path.is_file():
        geometry, sd = read_official(load_weights(path), path, num_heads)
        return geometry, sd, str(path), "official"
    if path.is_dir() and (path / "config.json").is_file():
        _, geometry, sd = read_transformers_folder(path)
        return geometry, sd, str(path), "transformers"
    if not path.exists():
        raise CheckpointError(f"{path}: pre-trained weights not found")
    ckpt = open_checkpoint(path)
    VIDEOMAE.check(ckpt)
    geometry = {k: ckpt.hparams[k] for k in _ENCODER_GEOMETRY if k in ckpt.hparams}
    return geometry, load_weights(ckpt.path), str(ckpt.path), "progvid"


def classifier_from_pretrained(
    source: str | Path,
    *,
    num_classes: int,
    drop_path: float = 0.1,
    head_dropout: float = 0.0,
    init_scale: float = 0.001,
    num_frames: int | None = None,
    img_size: int | None = None,
    num_heads: int | None = None,
    grad_checkpointing: bool = False,
) -> tuple[VideoClassifier, LoadReport]:
    """Classifier whose encoder comes from `source` (see `encoder_source`), and what was loaded.

    The encoder geometry comes from the source; `num_frames`/`img_size` only change the default
    clip geometry, `num_heads` is needed for official files of non-standard width. The head is
    always new."""
    geometry, sd, name, kind = encoder_source(source, num_heads)
    geometry = {k: v for k, v in geometry.items() if k in _ENCODER_GEOMETRY}
    if num_heads is not None and geometry.get("num_heads") != num_heads:
        raise ConfigError(f"num_heads={num_heads} contradicts the source ({geometry['num_heads']})")
    geometry.update({k: v for k, v in (("num_frames", num_frames), ("img_size", img_size))
                     if v is not None})
    model = VideoClassifier(num_classes=num_classes, drop_path=drop_path,
                            head_dropout=head_dropout, init_scale=init_scale,
                            grad_checkpointing=grad_checkpointing, **geometry)
    report = LoadReport(source=name, kind=kind)
    _load_into(model, sd, report)
    return model, report
