"""Weight conversion between progvid's models and Hugging Face transformers, both ways (the
official VideoMAE checkpoint layout is read in `official.py`): a pre-training VideoMAE <->
`VideoMAEForPreTraining`, a fine-tuned ViT classifier <-> `VideoMAEForVideoClassification` (with
`id2label`), and the `preprocessor_config.json` that `AutoImageProcessor.from_pretrained` reads.

transformers is optional: it is imported inside the functions that need it.

Differences to know about (transformers' `VideoMAEForPreTraining`):
- it takes pixel_values as (B, T, C, H, W); progvid takes (B, C, T, H, W);
- it un-normalizes targets with the ImageNet mean/std hard-coded (and not at all when
  num_channels != 3), whereas progvid uses the mean/std the model was built with;
- its final decoder LayerNorm always has eps 1e-5 (not configurable; the official code uses 1e-6).
  `to_transformers` sets the in-memory module to the progvid value so outputs match, but a folder
  written by `export_hf` reloads with 1e-5 (a ~1e-6 relative difference in predictions);
- likewise the `fc_norm` of `VideoMAEForVideoClassification` has a fixed eps of 1e-5, progvid's
  (and the official) 1e-6: `classifier_to_transformers` sets the in-memory module to progvid's
  value, a folder reloads with 1e-5, and a classifier read from transformers keeps 1e-5
  (`fc_norm_eps`), so reading transformers weights reproduces its logits to fp32 round-off.
"""

from __future__ import annotations

import importlib.util
import json
import pickle
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from progvid.constants import IMAGENET_MEAN, IMAGENET_STD
from progvid.errors import CheckpointError, ProgvidError
from progvid.models.classifier import VideoClassifier
from progvid.models.videomae import VideoMAE

# Keys outside the transformer blocks: progvid (= official) name -> transformers name.
_TOP = {
    "encoder.patch_embed.proj.weight": "videomae.embeddings.patch_embeddings.projection.weight",
    "encoder.patch_embed.proj.bias": "videomae.embeddings.patch_embeddings.projection.bias",
    "encoder.norm.weight": "videomae.layernorm.weight",
    "encoder.norm.bias": "videomae.layernorm.bias",
    "encoder_to_decoder.weight": "encoder_to_decoder.weight",
    "mask_token": "mask_token",
    "decoder.norm.weight": "decoder.norm.weight",
    "decoder.norm.bias": "decoder.norm.bias",
    "decoder.head.weight": "decoder.head.weight",
    "decoder.head.bias": "decoder.head.bias",
}
# A classifier's head: progvid name -> transformers VideoMAEForVideoClassification name.
_HEAD = {"fc_norm.weight": "fc_norm.weight", "fc_norm.bias": "fc_norm.bias",
         "head.weight": "classifier.weight", "head.bias": "classifier.bias"}
_BLOCK_PREFIX = {"encoder": "videomae.encoder.layer", "decoder": "decoder.decoder_layers"}
# Inside a block, except the fused qkv weight and the q/v biases (handled separately).
_BLOCK = {
    f"{ours}.{p}": f"{hf}.{p}"
    for ours, hf in [
        ("norm1", "layernorm_before"),
        ("attn.proj", "attention.output.dense"),
        ("norm2", "layernorm_after"),
        ("mlp.fc1", "intermediate.dense"),
        ("mlp.fc2", "output.dense"),
    ]
    for p in ("weight", "bias")
}
_QKV = ("query", "key", "value")
_KEY_BIAS = ".attention.attention.key.bias"
_OURS_BLOCK_KEY = re.compile(r"^(encoder|decoder)\.blocks\.(\d+)\.(.+)$")
_HF_BLOCK_KEY = re.compile(r"^(videomae\.encoder\.layer|decoder\.decoder_layers)\.(\d+)\.(.+)$")


def require_transformers() -> Any:
    try:
        import transformers
    except ImportError as e:
        raise ProgvidError("transformers is not installed: pip install 'progvid[hf]'") from e
    return transformers


def from_pretrained(arch: str, path: str | Path) -> Any:
    """`transformers.<arch>.from_pretrained(path)` without its info messages and weight-loading
    bar (the caller's logging settings are restored afterwards)."""
    transformers = require_transformers()
    log = transformers.logging
    verbosity = log.get_verbosity()
    bar = getattr(log, "is_progress_bar_enabled", lambda: True)()
    log.set_verbosity_error()
    log.disable_progress_bar()
    try:
        with warnings.catch_warnings():  # torch's note on a pickle it is about to refuse
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return getattr(transformers, arch).from_pretrained(str(path))
    except pickle.UnpicklingError as exc:  # torch.load(weights_only=True) refused a pickle
        raise CheckpointError(
            f"refused to load {arch} weights: the file holds objects that would run code "
            f"({_first_line(exc)[:160]})") from None
    finally:
        log.set_verbosity(verbosity)
        if bar:
            log.enable_progress_bar()


def _hf_bias_keys(hf_keys: set[str], prefix: str) -> tuple[str | None, str | None]:
    """Where this transformers version keeps the q/v biases: `query.bias` (recent) or `q_bias`
    (older releases); None when the model has no q/v bias (qv_bias=False)."""
    out = []
    for new, old in (("query.bias", "q_bias"), ("value.bias", "v_bias")):
        new_k, old_k = f"{prefix}.attention.attention.{new}", f"{prefix}.attention.attention.{old}"
        out.append(new_k if new_k in hf_keys else old_k if old_k in hf_keys else None)
    return out[0], out[1]


def _ours_to_hf(sd: Mapping[str, Tensor], hf_keys: set[str]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        if key in _TOP or key in _HEAD:
            out[_TOP.get(key) or _HEAD[key]] = value
            continue
        m = _OURS_BLOCK_KEY.match(key)
        if m is None:
            raise ProgvidError(f"cannot map parameter {key!r} to transformers")
        prefix = f"{_BLOCK_PREFIX[m[1]]}.{m[2]}"
        rest = m[3]
        if rest == "attn.qkv.weight":  # fused (3C, C) -> three (C, C) in q, k, v order
            for name, part in zip(_QKV, value.chunk(3, dim=0), strict=True):
                out[f"{prefix}.attention.attention.{name}.weight"] = part
        elif rest in ("attn.q_bias", "attn.v_bias"):
            q_key, v_key = _hf_bias_keys(hf_keys, prefix)
            target = q_key if rest == "attn.q_bias" else v_key
            if target is None:
                raise ProgvidError("the transformers model has no q/v bias (qv_bias=False)")
            out[target] = value
        elif rest in _BLOCK:
            out[f"{prefix}.{_BLOCK[rest]}"] = value
        else:
            raise ProgvidError(f"cannot map parameter {key!r} to transformers")
    # Some transformers releases (5.0-5.2x, `qkv_bias`) give the key projection a bias too. A key
    # bias adds q.b_k to every logit of a query's row, the same for all keys, so softmax removes
    # it: zeros (what the official VideoMAE has) are exact whatever that bias would learn.
    for key in hf_keys:
        if key.endswith(_KEY_BIAS) and key not in out:
            weight = out.get(key[: -len("bias")] + "weight")
            if weight is not None:
                out[key] = weight.new_zeros(weight.shape[0])
    return out


def hf_to_ours(hf_sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """transformers VideoMAE weights (`videomae.*`, decoder, classification head) -> progvid
    names. A bare `VideoMAEModel` state dict needs its keys prefixed with `videomae.` first."""
    top = {hf: ours for ours, hf in (*_TOP.items(), *_HEAD.items())}
    block = {hf: ours for ours, hf in _BLOCK.items()}
    side = {v: k for k, v in _BLOCK_PREFIX.items()}
    out: dict[str, Tensor] = {}
    qkv: dict[str, dict[str, Tensor]] = {}
    for key, value in hf_sd.items():
        if key in top:
            out[top[key]] = value
            continue
        m = _HF_BLOCK_KEY.match(key)
        if m is None:
            raise ProgvidError(f"unexpected transformers parameter {key!r}")
        prefix = f"{side[m[1]]}.blocks.{m[2]}"
        rest = m[3]
        attn = "attention.attention."
        if rest.startswith(attn) and rest[len(attn):] in {f"{n}.weight" for n in _QKV}:
            qkv.setdefault(prefix, {})[rest[len(attn):-len(".weight")]] = value
        elif rest in (attn + "query.bias", attn + "q_bias"):
            out[f"{prefix}.attn.q_bias"] = value
        elif rest in (attn + "value.bias", attn + "v_bias"):
            out[f"{prefix}.attn.v_bias"] = value
        elif rest == attn + "key.bias":
            continue  # softmax cancels a key bias exactly (see _ours_to_hf): nothing to carry
        elif rest in block:
            out[f"{prefix}.{block[rest]}"] = value
        else:
            raise ProgvidError(f"unexpected transformers parameter {key!r}")
    for prefix, parts in qkv.items():
        if set(parts) != set(_QKV):
            raise ProgvidError(f"{prefix}: incomplete query/key/value weights in transformers model")
        out[f"{prefix}.attn.qkv.weight"] = torch.cat([parts[n] for n in _QKV], dim=0)
        for b in ("q_bias", "v_bias"):  # qv_bias=False: an all-zero bias is the same function
            out.setdefault(f"{prefix}.attn.{b}", parts["query"].new_zeros(parts["query"].shape[0]))
    return out


def square(value: Any, what: str) -> int:
    """A side length from an int or an (h, w) pair with h == w (progvid's clips are square)."""
    if isinstance(value, int):
        return value
    a, b = value
    if a != b:
        raise ProgvidError(f"non-square {what} {tuple(value)} is not supported")
    return int(a)


def to_transformers(model: VideoMAE) -> Any:
    """progvid VideoMAE -> `transformers.VideoMAEForPreTraining` with identical weights, on the
    model's device and dtype, in the model's train/eval mode."""
    transformers = require_transformers()
    hp = model.hparams
    if hp["in_chans"] == 3 and (
        tuple(hp["mean"]) != IMAGENET_MEAN or tuple(hp["std"]) != IMAGENET_STD
    ):
        warnings.warn(
            "transformers un-normalizes VideoMAE targets with the ImageNet mean/std, not this "
            f"model's mean={hp['mean']} std={hp['std']}: its loss will differ",
            stacklevel=2,
        )
    config = _config(
        transformers, hp, use_mean_pooling=not hp["final_norm"],
        decoder_hidden_size=hp["decoder_embed_dim"],
        decoder_num_hidden_layers=hp["decoder_depth"],
        decoder_num_attention_heads=hp["decoder_num_heads"],
        decoder_intermediate_size=int(hp["decoder_embed_dim"] * hp["mlp_ratio"]),
        norm_pix_loss=hp["norm_pix_loss"],
    )
    hf = _with_weights(transformers.VideoMAEForPreTraining(config), model)
    hf.decoder.norm.eps = model.decoder.norm.eps
    return hf


def _config(transformers: Any, hp: Mapping[str, Any], **extra: Any) -> Any:
    """A VideoMAEConfig with the encoder of progvid hyper-parameters `hp`, plus `extra`."""
    config = transformers.VideoMAEConfig(
        image_size=hp["img_size"], patch_size=hp["patch_size"], num_channels=hp["in_chans"],
        num_frames=hp["num_frames"], tubelet_size=hp["tubelet_size"],
        hidden_size=hp["embed_dim"], num_hidden_layers=hp["depth"],
        num_attention_heads=hp["num_heads"],
        intermediate_size=int(hp["embed_dim"] * hp["mlp_ratio"]), hidden_act="gelu",
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        layer_norm_eps=hp["norm_eps"], **extra,
    )
    # The flag was renamed qkv_bias -> qv_bias across transformers releases.
    setattr(config, "qv_bias" if hasattr(config, "qv_bias") else "qkv_bias", True)
    return config


def _with_weights(hf: Any, model: torch.nn.Module) -> Any:
    """`hf` holding `model`'s weights exactly, on its device and dtype, in its train/eval mode."""
    hf_keys = set(hf.state_dict())
    mapped = _ours_to_hf(model.state_dict(), hf_keys)
    missing, unexpected = sorted(hf_keys - set(mapped)), sorted(set(mapped) - hf_keys)
    if missing or unexpected:
        raise ProgvidError(f"weight mapping mismatch: missing {missing}, unexpected {unexpected}")
    hf.load_state_dict(mapped, strict=True)
    param = next(model.parameters())
    return hf.to(device=param.device, dtype=param.dtype).train(model.training)


def classifier_to_transformers(model: VideoClassifier,
                               class_names: Sequence[str] | None = None) -> Any:
    """progvid ViT classifier -> `transformers.VideoMAEForVideoClassification` (mean pooling +
    fc_norm + linear head) with identical weights and `id2label` / `label2id` from
    `class_names` (default "0", "1", ...). In memory the fc_norm eps is progvid's, so the logits
    are the same to fp32 round-off; see the module docstring for a saved folder."""
    transformers = require_transformers()
    if not isinstance(model, VideoClassifier):
        raise ProgvidError(f"expected a progvid VideoClassifier, got {type(model).__name__}")
    hp = model.hparams
    names = [str(n) for n in class_names] if class_names else [str(i) for i in
                                                                range(model.num_classes)]
    if len(names) != model.num_classes:
        raise ProgvidError(f"{len(names)} class names for a {model.num_classes}-class head")
    config = _config(transformers, hp, use_mean_pooling=True, num_labels=model.num_classes,
                     id2label=dict(enumerate(names)),
                     label2id={n: i for i, n in enumerate(names)},
                     architectures=["VideoMAEForVideoClassification"])
    hf = _with_weights(transformers.VideoMAEForVideoClassification(config), model)
    hf.fc_norm.eps = model.fc_norm.eps
    return hf


def classifier_from_transformers(hf_model: Any) -> tuple[VideoClassifier, list[str]]:
    """`transformers.VideoMAEForVideoClassification` -> (progvid classifier with identical
    weights and fc_norm eps, class names from `id2label`). mean/std are ImageNet's (identity
    for other channel counts): the weights do not say; a folder's `preprocessor_config.json`
    does (`read_preprocessor`)."""
    require_transformers()
    c = getattr(hf_model, "config", None)
    if not hasattr(hf_model, "classifier") or not hasattr(hf_model, "videomae") or c is None:
        raise ProgvidError(f"expected a VideoMAEForVideoClassification, got "
                           f"{type(hf_model).__name__}")
    if not c.use_mean_pooling or hf_model.fc_norm is None:
        raise ProgvidError("use_mean_pooling=False (classifying the first token) is not "
                           "supported: progvid classifiers mean-pool")
    if not isinstance(hf_model.classifier, torch.nn.Linear):
        raise ProgvidError("the transformers model has no classification head (num_labels=0)")
    geometry = config_geometry(c)
    num_classes = hf_model.classifier.out_features
    model = VideoClassifier(num_classes=num_classes, drop_path=0.0, head_dropout=0.0,
                            fc_norm_eps=float(hf_model.fc_norm.eps), **geometry)
    model.load_state_dict(hf_to_ours(hf_model.state_dict()), strict=True)
    id2label = {int(k): str(v) for k, v in (getattr(c, "id2label", None) or {}).items()}
    names = [id2label.get(i, str(i)) for i in range(num_classes)]
    param = next(hf_model.parameters())
    return model.to(device=param.device, dtype=param.dtype).train(hf_model.training), names


def config_geometry(config: Any) -> dict[str, Any]:
    """progvid encoder hyper-parameters of a transformers VideoMAEConfig (ImageNet mean/std
    for 3 channels, identity otherwise: the config does not record them)."""
    if config.hidden_act != "gelu":
        raise ProgvidError(f"hidden_act {config.hidden_act!r} is not supported (progvid uses "
                           "exact gelu)")
    rgb = config.num_channels == 3
    return {
        "img_size": square(config.image_size, "image_size"),
        "patch_size": square(config.patch_size, "patch_size"),
        "tubelet_size": config.tubelet_size, "num_frames": config.num_frames,
        "in_chans": config.num_channels, "embed_dim": config.hidden_size,
        "depth": config.num_hidden_layers, "num_heads": config.num_attention_heads,
        "mlp_ratio": config.intermediate_size / config.hidden_size,
        "norm_eps": config.layer_norm_eps,
        "mean": list(IMAGENET_MEAN) if rgb else [0.0] * config.num_channels,
        "std": list(IMAGENET_STD) if rgb else [1.0] * config.num_channels,
    }


def from_transformers(
    hf_model: Any, *, mask_ratio: float = 0.9, mask_type: str = "tube",
    grad_checkpointing: bool = False,
) -> VideoMAE:
    """`transformers.VideoMAEForPreTraining` -> progvid VideoMAE with identical weights.

    mean/std are set to what transformers uses for its targets (ImageNet for 3 channels, identity
    otherwise); masking options are not part of the transformers config and are given here."""
    require_transformers()
    if not hasattr(hf_model, "decoder") or not hasattr(hf_model, "videomae"):
        raise ProgvidError(f"expected a VideoMAEForPreTraining, got {type(hf_model).__name__}")
    c = hf_model.config
    if c.hidden_act not in ("gelu",):
        raise ProgvidError(f"hidden_act {c.hidden_act!r} is not supported (progvid uses exact gelu)")
    mlp_ratio = c.intermediate_size / c.hidden_size
    if c.decoder_intermediate_size != int(c.decoder_hidden_size * mlp_ratio) or (
        int(c.hidden_size * mlp_ratio) != c.intermediate_size
    ):
        raise ProgvidError("encoder and decoder must share one MLP ratio")
    if c.hidden_dropout_prob or c.attention_probs_dropout_prob:
        warnings.warn("progvid has no dropout; the transformers dropout is dropped", stacklevel=2)
    rgb = c.num_channels == 3
    model = VideoMAE(
        img_size=square(c.image_size, "image_size"), patch_size=square(c.patch_size, "patch_size"),
        tubelet_size=c.tubelet_size, num_frames=c.num_frames, in_chans=c.num_channels,
        embed_dim=c.hidden_size, depth=c.num_hidden_layers, num_heads=c.num_attention_heads,
        decoder_embed_dim=c.decoder_hidden_size, decoder_depth=c.decoder_num_hidden_layers,
        decoder_num_heads=c.decoder_num_attention_heads, mlp_ratio=mlp_ratio,
        mask_ratio=mask_ratio, mask_type=mask_type, norm_pix_loss=c.norm_pix_loss,
        mean=IMAGENET_MEAN if rgb else (0.0,) * c.num_channels,
        std=IMAGENET_STD if rgb else (1.0,) * c.num_channels,
        norm_eps=c.layer_norm_eps, decoder_norm_eps=hf_model.decoder.norm.eps,
        final_norm=not c.use_mean_pooling, grad_checkpointing=grad_checkpointing,
    )
    model.load_state_dict(hf_to_ours(hf_model.state_dict()), strict=True)
    param = next(hf_model.parameters())
    return model.to(device=param.device, dtype=param.dtype).train(hf_model.training)


def export_hf(model: VideoMAE | VideoClassifier, out_dir: str | Path, *,
              class_names: Sequence[str] | None = None, input_size: int | None = None,
              mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> Path:
    """Write a transformers folder: config.json + model.safetensors that
    `VideoMAEForPreTraining.from_pretrained(out_dir)` (a VideoMAE) or
    `VideoMAEForVideoClassification.from_pretrained(out_dir)` (a classifier, with `id2label`
    from `class_names`) loads, and the `preprocessor_config.json` of `write_preprocessor`
    (input size and mean/std default to the model's). Returns the folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(model, VideoClassifier):
        hf = classifier_to_transformers(model, class_names)
    elif isinstance(model, VideoMAE):
        hf = to_transformers(model)
    else:
        raise ProgvidError(f"cannot export a {type(model).__name__} to transformers (a VideoMAE "
                           "or a ViT classifier can be)")
    hp = model.hparams
    # Write what the user trained, on CPU, so the folder loads anywhere.
    hf.to("cpu").save_pretrained(str(out))
    write_preprocessor(out, input_size=input_size or hp["img_size"],
                       mean=mean if mean is not None else hp["mean"],
                       std=std if std is not None else hp["std"])
    return out


PREPROCESSOR = "preprocessor_config.json"


def write_preprocessor(out_dir: str | Path, *, input_size: int, mean: Sequence[float],
                       std: Sequence[float]) -> Path:
    """Write the `preprocessor_config.json` of progvid's test preprocessing: shortest edge
    resized to `input_size`, centre crop `input_size` x `input_size`, pixels / 255, then
    (x - mean) / std. `AutoImageProcessor.from_pretrained(out_dir)` loads it (a
    VideoMAEImageProcessor). Resizing interpolates as PIL/torchvision do, not exactly as
    progvid's decoder-side resize; clips already at the input size are processed identically."""
    transformers = require_transformers()
    cls = transformers.VideoMAEImageProcessor
    if importlib.util.find_spec("torchvision") is None:  # the PIL backend, without its warning
        cls = getattr(transformers, "VideoMAEImageProcessorPil", cls)
    size = int(input_size)
    processor = cls(do_resize=True, size={"shortest_edge": size}, do_center_crop=True,
                    crop_size={"height": size, "width": size}, do_rescale=True,
                    rescale_factor=1 / 255, do_normalize=True,
                    image_mean=[float(x) for x in mean], image_std=[float(x) for x in std])
    processor.save_pretrained(str(out_dir))
    return Path(out_dir) / PREPROCESSOR


def read_preprocessor(folder: str | Path) -> dict[str, Any] | None:
    """(input size, mean, std) a transformers folder's `preprocessor_config.json` gives
    (`input_size`, `mean`, `std`; each only when present), or None without the file."""
    file = Path(folder) / PREPROCESSOR
    if not file.is_file():
        return None
    try:
        raw = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{file}: invalid JSON ({exc.msg})") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{file}: expected a JSON object")
    out: dict[str, Any] = {}
    crop = raw.get("crop_size")
    size = raw.get("size")
    if isinstance(crop, dict) and isinstance(crop.get("height"), int):
        out["input_size"] = crop["height"]
    elif isinstance(crop, int):
        out["input_size"] = crop
    elif isinstance(size, dict) and isinstance(size.get("shortest_edge"), int):
        out["input_size"] = size["shortest_edge"]
    for ours, theirs in (("mean", "image_mean"), ("std", "image_std")):
        value = raw.get(theirs)
        if isinstance(value, list) and all(isinstance(v, int | float) for v in value):
            out[ours] = [float(v) for v in value]
    return out


# -- reading foreign sources as progvid weights + geometry ---------------------------------------

TRANSFORMERS_ARCHS = ("VideoMAEForPreTraining", "VideoMAEModel", "VideoMAEForVideoClassification")


def read_transformers_folder(path: str | Path) -> tuple[str, dict[str, Any], dict[str, Tensor]]:
    """(architecture, encoder geometry, weights in progvid names) of a transformers VideoMAE
    folder. A classification head comes back as `fc_norm.*` / `head.*` (and the geometry then
    holds its `fc_norm_eps`); mean/std come from `preprocessor_config.json` when present."""
    path = Path(path)
    require_transformers()
    config, arch = transformers_config(path)
    try:
        geometry = config_geometry(config)
        hf = from_pretrained(arch, path)
        prefix = "videomae." if arch == "VideoMAEModel" else ""
        sd = hf_to_ours({f"{prefix}{k}": v for k, v in hf.state_dict().items()})
    except (ProgvidError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: {_first_line(exc)}") from None
    if arch == "VideoMAEForVideoClassification" and hf.fc_norm is not None:
        geometry["fc_norm_eps"] = float(hf.fc_norm.eps)
    prep = read_preprocessor(path) or {}
    geometry.update({k: prep[k] for k in ("mean", "std") if k in prep})
    return arch, geometry, sd


def transformers_config(path: str | Path) -> tuple[Any, str]:
    """(VideoMAEConfig, architecture) of a transformers folder, or a one-line CheckpointError
    for another model type or architecture."""
    path = Path(path)
    transformers = require_transformers()
    try:
        raw = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path / 'config.json'}: cannot read ({_first_line(exc)})") from None
    if not isinstance(raw, dict) or raw.get("model_type") != "videomae":
        kind = raw.get("model_type") if isinstance(raw, dict) else None
        raise CheckpointError(f"{path}: not a VideoMAE transformers folder (model_type {kind!r})")
    try:
        config = transformers.VideoMAEConfig.from_pretrained(str(path))
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path / 'config.json'}: {_first_line(exc)}") from None
    arch = (getattr(config, "architectures", None) or ["VideoMAEModel"])[0]
    if arch not in TRANSFORMERS_ARCHS:
        raise CheckpointError(f"{path}: unsupported transformers architecture {arch!r} "
                              f"(supported: {', '.join(TRANSFORMERS_ARCHS)})")
    return config, arch


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
