"""Checkpoint -> model: the one place that turns a file into a model, for every kind.

A progvid checkpoint folder holds `meta.json` with the task that wrote it, the model kind and
its JSON-safe hyper-parameters (`model`), and the data settings (`data`). `open_checkpoint`
reads and validates those (the data settings come back as a typed `DataConfig`); `load_model`
rebuilds the model through one table of builders (`BUILDERS`) and loads the weights exactly.

Every command that takes a checkpoint goes through here, so each accepts the same sources:
a checkpoint folder, a run folder (its newest checkpoint), a transformers folder
(`VideoMAEForPreTraining` as a VideoMAE, `VideoMAEForVideoClassification` as a `vit`
classifier with its head and `id2label` class names, task "transformers"), an official VideoMAE
`.pth` file (pre-training, task "official"), and a Hugging Face hub id `org/name[@revision]`
for any of those (resolved by `huggingface_hub` to a local snapshot folder, see
`progvid.interop.hub`). A source of the wrong kind for a command fails with the same one-line
`CheckpointError` everywhere, saying what was given and what is needed (`Want`).

`classifier_from_pretrained` builds a fine-tuning classifier whose encoder comes from any
pre-trained source: a progvid pre-training or fine-tuned ViT checkpoint, a transformers VideoMAE
folder (`VideoMAEForPreTraining`, `VideoMAEModel` or `VideoMAEForVideoClassification`), or an
official VideoMAE checkpoint file. Loading is strict about which keys may be missing (`fc_norm.*`,
`head.*`) or left over (decoder, mask token, encoder-to-decoder map, the encoder's final norm).
A source's classification head is kept when it has exactly the class count asked for (and the
same class names, where both sides name them): `model.init` pointing at a fine-tuned classifier
then continues from it, head included. Otherwise the head is new.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import Tensor, nn

from .config import DataConfig, EvalConfig
from .engine.checkpoint import (
    META,
    check_shapes,
    load_exact,
    load_meta,
    load_weights,
    resolve_resume,
    weight_shapes,
)
from .errors import CheckpointError, ConfigError, ProgvidError
from .interop.hf import (
    classifier_from_transformers,
    config_geometry,
    from_pretrained,
    from_transformers,
    read_preprocessor,
    read_transformers_folder,
    transformers_config,
)
from .interop.hub import hub_folder
from .interop.official import read_official
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
# transformers architecture -> model kind ("encoder": no head, no decoder; never built alone)
TRANSFORMERS_KINDS = {"VideoMAEForPreTraining": "videomae", "VideoMAEModel": "encoder",
                      "VideoMAEForVideoClassification": "vit"}
# progvid's own settings beside an exported transformers folder (data and eval settings)
SIDECAR = "progvid.json"


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint says about itself, typed."""

    path: Path  # the checkpoint folder (or a foreign file / folder)
    task: str  # pretrain | finetune | hcml | deployed | transformers | official
    kind: str  # a key of BUILDERS ("encoder" for a foreign encoder without head or decoder)
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
            where = SIDECAR if self.task == "transformers" else META  # an export keeps them aside
            raise CheckpointError(f"{self.path / where}: bad `eval` settings") from None

    def describe(self) -> str:
        """What this checkpoint is, for messages."""
        if self.task == "transformers":
            return f"a transformers {self.meta.get('architecture', 'VideoMAE')} folder"
        if self.task == "official":
            what = {"videomae": "pre-training", "vit": "fine-tuned"}.get(self.kind, "encoder-only")
            return f"an official VideoMAE {what} file"
        return f"task {self.task!r}, model kind {self.kind!r}"


@dataclass(frozen=True)
class Want:
    """Which checkpoints a command accepts: model kinds and (optionally) writing tasks."""

    kinds: frozenset[str]
    tasks: frozenset[str] | None
    what: str  # "a VideoMAE pre-training checkpoint"
    hint: str = ""

    def accepts(self, ckpt: Checkpoint) -> bool:
        return ckpt.kind in self.kinds and (self.tasks is None or ckpt.task in self.tasks)

    def check(self, ckpt: Checkpoint) -> None:
        if not self.accepts(ckpt):
            raise CheckpointError(f"{ckpt.path}: not {self.what} ({ckpt.describe()}){self.hint}")


VIDEOMAE = Want(frozenset({"videomae"}), frozenset({"pretrain", "transformers", "official"}),
                "a VideoMAE pre-training checkpoint",
                "; this needs the decoder of a pre-training model (a progvid pre-training run, a "
                "transformers VideoMAEForPreTraining folder or an official pre-training file)")
CLASSIFIER = Want(frozenset({"vit", "resnet3d", "hcml"}), frozenset({"finetune", "transformers"}),
                  "a classifier checkpoint", "; fine-tune it first with `progvid finetune`")
HCML = Want(frozenset({"hcml"}), None, "an HCML checkpoint",
            "; this needs an HCML run (`progvid pretrain` with task: hcml, or its fine-tuning)")
EXPORT = Want(frozenset({"videomae", "vit"}),
              frozenset({"pretrain", "finetune", "transformers", "official"}),
              "a VideoMAE or ViT classifier checkpoint",
              "; transformers has VideoMAE models only (no ResNet3D or HCML)")
# what `model.init` of a ViT classifier reads an encoder from
ENCODER = Want(frozenset({"videomae", "vit", "encoder"}),
               frozenset({"pretrain", "finetune", "transformers", "official"}),
               "a VideoMAE encoder checkpoint (pre-training or fine-tuned ViT)")


def model_kind(meta: Mapping[str, Any]) -> str:
    """The model kind a meta.json records (runs before `model_kind` existed: by task)."""
    kind = meta.get("model_kind")
    if isinstance(kind, str):
        return kind
    return "videomae" if meta.get("task") == "pretrain" else "vit"


def locate(source: str | Path) -> Path:
    """The local path of a source: itself, or a hub id's snapshot folder (a snapshot holding
    nothing but one official `.pth`/`.pt` file stands for that file)."""
    folder = hub_folder(source)
    if folder is None:
        return Path(source)
    if not (folder / "config.json").is_file() and not (folder / META).is_file():
        files = [p for p in folder.iterdir() if p.suffix in (".pth", ".pt")]
        if len(files) == 1:
            return files[0]
    return folder


def is_transformers_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file() and not (path / META).is_file()


def open_checkpoint(source: str | Path) -> Checkpoint:
    """The checkpoint at `source` (a checkpoint folder, or a run folder: its newest; also a
    transformers folder or a hub id of either, described from its config without weights)."""
    path = locate(source)
    if is_transformers_folder(path):
        return transformers_checkpoint(path)
    path = resolve_resume(path, str(path))
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
    data = _data_config(raw_data, f"{path / META}: bad `data.", "`")
    return Checkpoint(path, str(meta.get("task")), kind, hparams, data, meta)


def _data_config(raw: Mapping[str, Any], before: str, after: str) -> DataConfig:
    try:
        return DataConfig.model_validate(dict(raw))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise CheckpointError(f"{before}{where}{after} ({first['msg']})") from None


def transformers_checkpoint(path: Path) -> Checkpoint:
    """A transformers VideoMAE folder described from config.json, `preprocessor_config.json`
    (input size, mean, std) and, for folders progvid exported, `progvid.json` (the run's data
    and eval settings); weights are not read."""
    config, arch = transformers_config(path)
    try:
        hparams = config_geometry(config)
    except ProgvidError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    meta: dict[str, Any] = {"task": "transformers", "architecture": arch}
    if arch == "VideoMAEForVideoClassification":
        id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
        meta["num_classes"] = hparams["num_classes"] = int(config.num_labels)
        meta["class_names"] = [id2label.get(i, str(i)) for i in range(config.num_labels)]
    prep = read_preprocessor(path) or {}
    raw_data: dict[str, Any] = {"num_frames": hparams["num_frames"],
                                "input_size": prep.get("input_size", hparams["img_size"])}
    raw_data.update({k: prep[k] for k in ("mean", "std") if k in prep})
    sidecar = _sidecar(path)
    if isinstance(sidecar.get("data"), dict):
        raw_data = {**sidecar["data"], **raw_data}
    if isinstance(sidecar.get("eval"), dict):
        meta["eval"] = sidecar["eval"]
    data = _data_config(raw_data, f"{path}: data settings: bad `", "`")
    return Checkpoint(path, "transformers", TRANSFORMERS_KINDS[arch], hparams, data, meta)


def _sidecar(path: Path) -> dict[str, Any]:
    file = path / SIDECAR
    if not file.is_file():
        return {}
    try:
        raw = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{file}: invalid JSON ({exc.msg})") from None
    return raw if isinstance(raw, dict) else {}


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
    path = locate(source)
    if path.is_file() and (path.parent / META).is_file():  # a file of a checkpoint folder
        path = path.parent
    if is_transformers_folder(path):
        return _load_transformers(path, want)
    if path.is_file():
        return _load_official(path, want)
    ckpt = open_checkpoint(path)
    want.check(ckpt)
    what = f"{ckpt.path}: weights do not fit the {ckpt.kind} model in {META}"
    shapes = weight_shapes(ckpt.path)
    if shapes is not None:  # keys and shapes first, on the meta device: nothing allocated
        try:
            with torch.device("meta"):
                shell = build_model(ckpt)
        except NotImplementedError:  # a builder that reads tensor values: check after building
            shell = None
        if shell is not None:
            check_shapes(shell, shapes, what)
    model = build_model(ckpt)
    load_exact(model, load_weights(ckpt.path), what)
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


def _load_transformers(path: Path, want: Want) -> tuple[nn.Module, Checkpoint]:
    """A transformers VideoMAEForPreTraining folder as a VideoMAE, or a
    VideoMAEForVideoClassification folder as a `vit` classifier, for `want`."""
    ckpt = transformers_checkpoint(path)
    want.check(ckpt)
    arch = ckpt.meta["architecture"]
    try:
        hf = from_pretrained(arch, path)
        if ckpt.kind == "vit":
            model: nn.Module = classifier_from_transformers(hf)[0]
        else:
            model = from_transformers(hf)
    except Exception as exc:  # noqa: BLE001 - damaged weights or configs raise many kinds
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: cannot load the transformers {arch} ({first})") from None
    hp = dict(model.hparams)
    mean, std = list(ckpt.data.mean), list(ckpt.data.std)
    if ckpt.kind == "videomae" and (hp["mean"] != mean or hp["std"] != std):
        # the preprocessor's normalization is also the one of the MAE target
        rebuilt = VideoMAE.from_hparams({**hp, "mean": mean, "std": std})
        rebuilt.load_state_dict(model.state_dict())
        model, hp = rebuilt, dict(rebuilt.hparams)
    elif ckpt.kind == "vit":
        model.hparams.update(mean=mean, std=std)
        hp = dict(model.hparams)
    return model.eval(), Checkpoint(path, ckpt.task, ckpt.kind, hp, ckpt.data, ckpt.meta)


def _load_official(path: Path, want: Want) -> tuple[nn.Module, Checkpoint]:
    """An official VideoMAE pre-training `.pth` file as a progvid VideoMAE, for `want`."""
    raw = load_weights(path)
    keys = _official_keys(raw)
    kind = ("videomae" if any(k.startswith("decoder.") for k in keys)
            else "vit" if "head.weight" in keys else "encoder")
    found = Checkpoint(path, "official", kind, {}, DataConfig(), {})
    want.check(found)
    if kind != "videomae":
        raise CheckpointError(f"{path}: {found.describe()}: progvid reads official files whole "
                              "as pre-training models only; a fine-tuned or encoder-only file "
                              "can start a fine-tuning (model.init)")
    geometry, sd = read_official(raw, path, decoder=True)
    model = VideoMAE(**geometry)
    load_exact(model, sd, f"{path}: weights do not fit the inferred VideoMAE")
    return model.eval(), Checkpoint(path, "official", kind, dict(model.hparams),
                                    _data_for(model))


def _official_keys(raw: Any) -> set[str]:
    """The parameter names of an official checkpoint's contents (unwrapped, unprefixed)."""
    if not isinstance(raw, Mapping):
        return set()
    inner = next((raw[w] for w in ("model", "module", "state_dict")
                  if isinstance(raw.get(w), Mapping)), raw)
    return {str(k).removeprefix("module.") for k in inner}


def _data_for(model: VideoMAE) -> DataConfig:
    """Data settings for a foreign VideoMAE: its input geometry and normalization."""
    hp = model.hparams
    return DataConfig(num_frames=hp["num_frames"], input_size=hp["img_size"],
                      mean=tuple(hp["mean"]), std=tuple(hp["std"]))


# -- fine-tuning classifiers from pre-trained encoders ------------------------------------------

_NEW = re.compile(r"^(fc_norm|head)\.")  # may be missing: the fine-tuning head is new
_LEFTOVER = re.compile(r"^(decoder\.|encoder_to_decoder\.|mask_token$|encoder\.norm\.|head\.)")
_ENCODER_GEOMETRY = ("img_size", "patch_size", "tubelet_size", "num_frames", "in_chans",
                     "embed_dim", "depth", "num_heads", "mlp_ratio", "norm_eps", "mean", "std",
                     "fc_norm_eps")


@dataclass
class LoadReport:
    """Which classifier keys were not in the source (missing) and which source keys were not
    used (unexpected); `head` says whether the source's classification head was kept."""

    source: str
    kind: str  # "progvid", "transformers" or "official"
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    head: str = "new"  # "kept (K classes)" or "new" with the reason

    def __str__(self) -> str:
        return (f"loaded {self.kind} weights from {self.source}: missing (new) "
                f"{_short(self.missing)}; unexpected (ignored) {_short(self.unexpected)}; "
                f"head {self.head}")


def _short(keys: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit]) + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")
    return f"[{shown}]"


def _load_into(model: VideoClassifier, sd: dict[str, Tensor], report: LoadReport,
               keep_head: bool = False) -> None:
    """Strict-by-rule load: anything but new head keys missing, or anything but pre-training
    leftovers unexpected, or any shape mismatch raises CheckpointError. The source's `head.*`
    is loaded only with `keep_head`."""
    dropped = [] if keep_head else sorted(k for k in sd if k.startswith("head."))
    sd = {k: v for k, v in sd.items() if k not in dropped}
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


@dataclass(frozen=True)
class EncoderSource:
    """A pre-trained encoder: geometry, weights in progvid names, and the source's head."""

    geometry: dict[str, Any]
    weights: dict[str, Tensor]
    name: str
    kind: str  # "progvid", "transformers" or "official"
    class_names: list[str] | None = None  # of the source's head, where it names them


def encoder_source(source: str | Path, num_heads: int | None = None
                   ) -> tuple[dict[str, Any], dict[str, Tensor], str, str]:
    """(encoder geometry, weights in progvid names, source name, source kind) of a pre-trained
    VideoMAE encoder: progvid checkpoint, transformers folder, official file or a hub id of
    one of those."""
    src = read_encoder(source, num_heads)
    return src.geometry, src.weights, src.name, src.kind


def read_encoder(source: str | Path, num_heads: int | None = None) -> EncoderSource:
    """The `EncoderSource` of `source` (see `encoder_source`)."""
    path = locate(source)
    if path.is_file():
        geometry, sd = read_official(load_weights(path), path, num_heads)
        return EncoderSource(geometry, sd, str(path), "official")
    if is_transformers_folder(path):
        arch, geometry, sd = read_transformers_folder(path)
        names = transformers_checkpoint(path).class_names
        return EncoderSource(geometry, sd, str(path), "transformers", names)
    if not path.exists():
        raise CheckpointError(f"{path}: pre-trained weights not found")
    ckpt = open_checkpoint(path)
    ENCODER.check(ckpt)
    geometry = {k: ckpt.hparams[k] for k in _ENCODER_GEOMETRY if k in ckpt.hparams}
    return EncoderSource(geometry, load_weights(ckpt.path), str(ckpt.path), "progvid",
                         ckpt.class_names)


def _head_decision(sd: Mapping[str, Tensor], num_classes: int, source_names: list[str] | None,
                   class_names: Sequence[str] | None) -> tuple[bool, str]:
    """(keep the source head?, what the report says): kept when the class count matches and the
    class names do too, where both sides name them."""
    weight = sd.get("head.weight")
    if weight is None:
        return False, "new (the source has none)"
    have = int(weight.shape[0])
    if have != num_classes:
        return False, f"new (the source's has {have} classes, this model {num_classes})"
    if source_names and class_names and list(source_names) != list(class_names):
        return False, f"new (the source's {have} class names differ from this data's)"
    return True, f"kept ({have} classes)"


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
    class_names: Sequence[str] | None = None,
) -> tuple[VideoClassifier, LoadReport]:
    """Classifier whose encoder comes from `source` (see `encoder_source`), and what was loaded.

    The encoder geometry comes from the source; `num_frames`/`img_size` only change the default
    clip geometry, `num_heads` is needed for official files of non-standard width. The source's
    head (a fine-tuned classifier's) is kept when it has `num_classes` classes and, where both
    the source and `class_names` name them, the same names; otherwise the head is new."""
    src = read_encoder(source, num_heads)
    geometry = {k: v for k, v in src.geometry.items() if k in _ENCODER_GEOMETRY}
    if num_heads is not None and geometry.get("num_heads") != num_heads:
        raise ConfigError(f"num_heads={num_heads} contradicts the source ({geometry['num_heads']})")
    geometry.update({k: v for k, v in (("num_frames", num_frames), ("img_size", img_size))
                     if v is not None})
    model = VideoClassifier(num_classes=num_classes, drop_path=drop_path,
                            head_dropout=head_dropout, init_scale=init_scale,
                            grad_checkpointing=grad_checkpointing, **geometry)
    keep, head = _head_decision(src.weights, num_classes, src.class_names, class_names)
    report = LoadReport(source=src.name, kind=src.kind, head=head)
    _load_into(model, src.weights, report, keep_head=keep)
    return model, report
