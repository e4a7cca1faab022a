"""Video classifier for fine-tuning: ViT encoder -> mean pooling -> fc_norm -> dropout -> head.

As in the official VideoMAE fine-tuning with mean pooling, the encoder has no final LayerNorm:
tokens are averaged and normalized by `fc_norm`. Pre-trained encoders load from a progvid
pre-training checkpoint, a transformers VideoMAE folder or an official VideoMAE `.pth` file, and
loading is strict about which keys may be missing (`fc_norm.*`, `head.*`) or left over (decoder,
mask token, encoder-to-decoder map, the encoder's final norm).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from progvid.errors import CheckpointError, ConfigError, ProgvidError

from .videomae import IMAGENET_MEAN, IMAGENET_STD
from .vit import ENCODER_SIZES, VisionTransformer, check_overrides, sincos_table, size_dims


class VideoClassifier(nn.Module):
    """`forward(video (B, C, T, H, W)) -> logits (B, num_classes)`; any tileable clip length.

    `mean`/`std` are not used in forward: they record the input normalization of the weights."""

    load_report: LoadReport | None = None  # set by classifier_from_pretrained

    def __init__(
        self,
        *, num_classes: int, img_size: int = 224, patch_size: int = 16, tubelet_size: int = 2,
        num_frames: int = 16, in_chans: int = 3, embed_dim: int = 768, depth: int = 12,
        num_heads: int = 12, mlp_ratio: float = 4.0, norm_eps: float = 1e-6,
        drop_path: float = 0.1, head_dropout: float = 0.0, init_scale: float = 0.001,
        mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        if not 0.0 <= head_dropout < 1.0:
            raise ConfigError(f"head_dropout must be in [0, 1), got {head_dropout}")
        # Everything needed to rebuild the model: VideoClassifier(**model.hparams).
        self.hparams: dict[str, Any] = {
            "num_classes": num_classes, "img_size": img_size, "patch_size": patch_size,
            "tubelet_size": tubelet_size, "num_frames": num_frames, "in_chans": in_chans,
            "embed_dim": embed_dim, "depth": depth, "num_heads": num_heads,
            "mlp_ratio": mlp_ratio, "norm_eps": norm_eps, "drop_path": drop_path,
            "head_dropout": head_dropout, "init_scale": init_scale, "mean": list(mean),
            "std": list(std), "grad_checkpointing": grad_checkpointing,
        }
        self.num_classes = num_classes
        self.encoder = VisionTransformer(
            img_size=img_size, patch_size=patch_size, tubelet_size=tubelet_size,
            num_frames=num_frames, in_chans=in_chans, embed_dim=embed_dim, depth=depth,
            num_heads=num_heads, mlp_ratio=mlp_ratio, drop_path=drop_path, norm_eps=norm_eps,
            final_norm=False, grad_checkpointing=grad_checkpointing,
        )
        self.fc_norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head_dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(embed_dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        with torch.no_grad():  # small initial logits, as VideoMAE's head.weight.data.mul_(0.001)
            self.head.weight.mul_(init_scale)
            self.head.bias.mul_(init_scale)

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any]) -> VideoClassifier:
        return cls(**hparams)

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        self.hparams["grad_checkpointing"] = self.encoder.grad_checkpointing = enabled

    def no_weight_decay(self) -> set[str]:
        """Parameter names exempt from weight decay beyond norms and biases: none (positions are
        a fixed sin-cos table, not parameters)."""
        return set()

    def forward_features(self, video: Tensor) -> Tensor:
        """video (B, C, T, H, W) -> pooled, normalized features (B, D)."""
        tokens = self.encoder(video, apply_norm=False)  # (B, N, D)
        return self.fc_norm(tokens.mean(dim=1))

    def forward(self, video: Tensor) -> Tensor:
        return self.head(self.head_dropout(self.forward_features(video)))  # (B, K)


_OVERRIDES = {"embed_dim", "depth", "num_heads", "mlp_ratio", "in_chans", "norm_eps", "mean",
              "std", "grad_checkpointing"}


def classifier(
    size: str,
    *,
    num_classes: int,
    num_frames: int = 16,
    img_size: int = 224,
    patch_size: int = 16,
    tubelet_size: int = 2,
    drop_path: float = 0.1,
    head_dropout: float = 0.0,
    init_scale: float = 0.001,
    **encoder_overrides: Any,
) -> VideoClassifier:
    """Classifier by encoder size name (tiny, small, base, large, huge), randomly initialized.
    `encoder_overrides`: embed_dim, depth, num_heads, mlp_ratio, in_chans, norm_eps, mean, std,
    grad_checkpointing."""
    embed_dim, depth, num_heads = size_dims(size, ENCODER_SIZES, "model")
    check_overrides(encoder_overrides, _OVERRIDES)
    kwargs: dict[str, Any] = {"embed_dim": embed_dim, "depth": depth, "num_heads": num_heads,
                              **encoder_overrides}
    return VideoClassifier(
        num_classes=num_classes, img_size=img_size, patch_size=patch_size,
        tubelet_size=tubelet_size, num_frames=num_frames, drop_path=drop_path,
        head_dropout=head_dropout, init_scale=init_scale, **kwargs,
    )


# -- loading pre-trained encoders -----------------------------------------------------------------

_NEW = re.compile(r"^(fc_norm|head)\.")  # may be missing: the fine-tuning head is new
_LEFTOVER = re.compile(r"^(decoder\.|encoder_to_decoder\.|mask_token$|encoder\.norm\.|head\.)")
_PRETRAIN_ONLY = re.compile(r"^(decoder\.|encoder_to_decoder\.|mask_token$)")
_ENCODER_GEOMETRY = ("img_size", "patch_size", "tubelet_size", "num_frames", "in_chans",
                     "embed_dim", "depth", "num_heads", "mlp_ratio", "norm_eps")


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


def _from_progvid(path: Path) -> tuple[dict[str, Any], dict[str, Tensor], str]:
    from progvid.engine.checkpoint import load_meta, load_weights, resolve_resume

    ckpt = resolve_resume(path, str(path))
    assert ckpt is not None
    meta = load_meta(ckpt)
    if meta.get("task") != "pretrain" or not isinstance(meta.get("model"), dict):
        raise CheckpointError(f"{ckpt}: not a VideoMAE pre-training checkpoint "
                              f"(task {meta.get('task')!r})")
    hp = meta["model"]
    geometry = {k: hp[k] for k in _ENCODER_GEOMETRY if k in hp}
    geometry.update({k: hp[k] for k in ("mean", "std") if k in hp})
    return geometry, load_weights(ckpt), str(ckpt)


def _from_transformers(path: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    from progvid.interop.hf import _hf_to_ours, _pair, _require_transformers

    transformers = _require_transformers()
    config = transformers.VideoMAEConfig.from_pretrained(str(path))
    arch = (getattr(config, "architectures", None) or ["VideoMAEModel"])[0]
    if arch not in ("VideoMAEForPreTraining", "VideoMAEModel", "VideoMAEForVideoClassification"):
        raise CheckpointError(f"{path}: unsupported transformers architecture {arch!r}")
    if config.hidden_act != "gelu":
        raise CheckpointError(f"{path}: hidden_act {config.hidden_act!r} is not supported")
    hf_sd = getattr(transformers, arch).from_pretrained(str(path)).state_dict()
    extra: dict[str, Tensor] = {}
    body: dict[str, Tensor] = {}
    for key, value in hf_sd.items():
        if key.startswith(("fc_norm.", "classifier.")):  # VideoMAEForVideoClassification head
            extra[key.replace("classifier.", "head.", 1)] = value
        elif arch == "VideoMAEModel":
            body[f"videomae.{key}"] = value
        else:
            body[key] = value
    try:
        sd = {**_hf_to_ours(body), **extra}
    except ProgvidError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    rgb = config.num_channels == 3
    geometry = {
        "img_size": _pair(config.image_size, "image_size"),
        "patch_size": _pair(config.patch_size, "patch_size"),
        "tubelet_size": config.tubelet_size, "num_frames": config.num_frames,
        "in_chans": config.num_channels, "embed_dim": config.hidden_size,
        "depth": config.num_hidden_layers, "num_heads": config.num_attention_heads,
        "mlp_ratio": config.intermediate_size / config.hidden_size,
        "norm_eps": config.layer_norm_eps,
        "mean": list(IMAGENET_MEAN) if rgb else [0.0] * config.num_channels,
        "std": list(IMAGENET_STD) if rgb else [1.0] * config.num_channels,
    }
    return geometry, sd


def _from_file(path: Path, num_heads: int | None) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Official VideoMAE `.pth` (pre-training: `encoder.*` + decoder; fine-tuned: `blocks.*`,
    `fc_norm`, `head`) or a plain state dict file; geometry is inferred from the weights."""
    from progvid.engine.checkpoint import load_weights
    from progvid.interop.hf import load_official_state_dict

    raw = load_weights(path)
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{path}: expected a state dict, got {type(raw).__name__}")
    raw = next((raw[w] for w in ("model", "module", "state_dict")
                if isinstance(raw.get(w), Mapping)), raw)
    raw = {k.removeprefix("module."): v for k, v in raw.items()}
    if any(_PRETRAIN_ONLY.match(k) for k in raw):
        sd = load_official_state_dict(raw)
    else:  # official fine-tune layout has no `encoder.` prefix
        sd = {}
        for key, value in raw.items():
            if key in ("pos_embed", "encoder.pos_embed"):
                table = sincos_table(value.shape[-2], value.shape[-1])
                if not torch.allclose(value.reshape(table.shape).float().cpu(), table, atol=1e-4):
                    raise CheckpointError(f"{path}: {key} is a learned position table; only the "
                                          "fixed sin-cos table is supported")
                continue
            if not isinstance(value, Tensor):
                raise CheckpointError(f"{path}: {key} is not a tensor")
            if key.startswith(("patch_embed.", "blocks.", "norm.")):
                key = f"encoder.{key}"
            sd[key] = value
    proj = sd.get("encoder.patch_embed.proj.weight")
    fc1 = sd.get("encoder.blocks.0.mlp.fc1.weight")
    if proj is None or proj.ndim != 5 or fc1 is None:
        raise CheckpointError(f"{path}: missing [encoder.patch_embed.proj.weight / "
                              "encoder.blocks.0.*]: not a VideoMAE encoder")
    dim, chans, tubelet, patch, _ = proj.shape
    depth = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("encoder.blocks."))
    if num_heads is None:
        known = [h for d, _, h in ENCODER_SIZES.values() if d == dim]
        if not known:
            raise CheckpointError(f"{path}: cannot infer num_heads for width {dim}; pass num_heads")
        num_heads = known[0]
    geometry = {"patch_size": patch, "tubelet_size": tubelet, "in_chans": chans,
                "embed_dim": dim, "depth": depth, "num_heads": num_heads,
                "mlp_ratio": fc1.shape[0] / dim}
    return geometry, sd


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
    return_report: bool = False,
) -> VideoClassifier | tuple[VideoClassifier, LoadReport]:
    """Classifier whose encoder comes from `source`: a progvid pre-training checkpoint or run
    folder, a transformers VideoMAE folder (`VideoMAEForPreTraining`, `VideoMAEModel` or
    `VideoMAEForVideoClassification`), or an official VideoMAE checkpoint file.

    The encoder geometry comes from the source; `num_frames`/`img_size` only change the default
    clip geometry, `num_heads` is needed for official files of non-standard width. The head is
    always new. The LoadReport is on `model.load_report` (and returned with `return_report`)."""
    path = Path(source)
    if path.is_file():
        geometry, sd = _from_file(path, num_heads)
        kind, name = "official", str(path)
    elif path.is_dir() and (path / "config.json").is_file():
        (geometry, sd), kind, name = _from_transformers(path), "transformers", str(path)
    elif path.is_dir():
        geometry, sd, name = _from_progvid(path)
        kind = "progvid"
    else:
        raise CheckpointError(f"{path}: pre-trained weights not found")
    if num_heads is not None and geometry.get("num_heads") != num_heads:
        raise ConfigError(f"num_heads={num_heads} contradicts the source ({geometry['num_heads']})")
    geometry.update({k: v for k, v in (("num_frames", num_frames), ("img_size", img_size))
                     if v is not None})
    model = VideoClassifier(num_classes=num_classes, drop_path=drop_path,
                            head_dropout=head_dropout, init_scale=init_scale,
                            grad_checkpointing=grad_checkpointing, **geometry)
    report = LoadReport(source=name, kind=kind)
    _load_into(model, sd, report)
    model.load_report = report
    return (model, report) if return_report else model


# -- optimizer groups -----------------------------------------------------------------------------

def layer_id(name: str, depth: int) -> int:
    """BEiT/VideoMAE layer id: 0 for the patch embedding (and anything before the blocks),
    i + 1 for block i, depth + 1 for fc_norm, head and anything after the blocks."""
    m = re.match(r"^encoder\.blocks\.(\d+)\.", name)
    if m:
        return int(m[1]) + 1
    if name.startswith("encoder.") and not name.startswith("encoder.norm."):
        return 0
    return depth + 1


def layer_decay_groups(
    model: nn.Module, *, base_weight_decay: float = 0.05, layer_decay: float = 0.75
) -> list[dict[str, Any]]:
    """AdamW groups with layer-wise lr decay: lr_scale = layer_decay ** (depth + 1 - layer_id),
    so the head gets 1.0, the last block layer_decay and the patch embedding
    layer_decay ** (depth + 1). No weight decay on 1-D parameters, biases and
    `no_weight_decay()` names. Each group: params, param_names, weight_decay, lr_scale, name,
    layer_id; ordered by layer id, decayed group first."""
    inner = getattr(model, "module", model)
    inner = getattr(inner, "_orig_mod", inner)
    encoder = getattr(inner, "encoder", None)
    if not isinstance(encoder, VisionTransformer):
        raise ProgvidError(f"layer_decay_groups needs a model with a ViT .encoder, got "
                           f"{type(inner).__name__}")
    depth = len(encoder.blocks)
    skip = set(getattr(inner, "no_weight_decay", lambda: set())())
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in inner.named_parameters():
        if not p.requires_grad:
            continue
        lid = layer_id(name, depth)
        decay = not (p.ndim <= 1 or name.endswith(".bias") or name in skip)
        key = (lid, decay)
        if key not in groups:
            groups[key] = {
                "params": [], "param_names": [],
                "weight_decay": base_weight_decay if decay else 0.0,
                "lr_scale": layer_decay ** (depth + 1 - lid),
                "name": f"layer_{lid}_{'decay' if decay else 'no_decay'}", "layer_id": lid,
            }
        groups[key]["params"].append(p)
        groups[key]["param_names"].append(name)
    return [groups[k] for k in sorted(groups, key=lambda k: (k[0], not k[1]))]


__all__ = ["LoadReport", "VideoClassifier", "classifier", "classifier_from_pretrained",
           "layer_decay_groups", "layer_id"]
