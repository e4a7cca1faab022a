"""The official VideoMAE checkpoint layout (MCG-NJU/VideoMAE's `run_mae_pretraining.py` and
`run_class_finetuning.py` save it): read as progvid weights, with the encoder's geometry inferred
from the weights. progvid's pre-training model uses the official parameter names by design, so
reading is unwrapping, dropping the fixed sin-cos position table (a learned one cannot be
represented) and checking the keys; the fine-tuned layout gets the `encoder.` prefix."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from progvid.errors import CheckpointError
from progvid.models.videomae import DECODER_SIZES, VideoMAE
from progvid.models.vit import ENCODER_SIZES, sincos_table

_OFFICIAL_KEY = re.compile(
    r"^(encoder\.patch_embed\.proj\.(weight|bias)"
    r"|(encoder|decoder)\.blocks\.\d+\.(norm1|norm2|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)"
    r"|(encoder|decoder)\.blocks\.\d+\.attn\.(qkv\.weight|q_bias|v_bias)"
    r"|(encoder|decoder)\.norm\.(weight|bias)|decoder\.head\.(weight|bias)"
    r"|encoder_to_decoder\.weight|mask_token)$"
)
_REQUIRED = ("encoder.patch_embed.proj.weight", "encoder_to_decoder.weight", "mask_token",
             "decoder.head.weight")
_BLOCK_KEYS = ("attn.qkv.weight", "attn.proj.weight", "norm1.weight", "norm2.weight",
               "mlp.fc1.weight", "mlp.fc2.weight")


def _fail(what: str, keys: list[str]) -> None:
    if keys:
        shown = ", ".join(keys[:20]) + (f" (+{len(keys) - 20} more)" if len(keys) > 20 else "")
        raise CheckpointError(f"official VideoMAE checkpoint: {what}: {shown}")


def _weight(key: str, value: Any, where: str) -> bool:
    """Whether `key` is a weight to keep: False for the fixed sin-cos position table (progvid
    builds it), a one-line CheckpointError for a learned one or a value that is not a tensor."""
    if key in ("pos_embed", "encoder.pos_embed"):
        table = sincos_table(value.shape[-2], value.shape[-1])
        if not torch.allclose(value.reshape(table.shape).float().cpu(), table, atol=1e-4):
            raise CheckpointError(f"{where}: {key} is a learned position table; only the fixed "
                                  "sin-cos table is supported")
        return False
    if not isinstance(value, Tensor):
        raise CheckpointError(f"{where}: {key} is not a tensor")
    return True


def load_official_state_dict(
    sd: Mapping[str, Any], model: VideoMAE | None = None
) -> dict[str, Tensor]:
    """Convert an official VideoMAE pretrain checkpoint (optionally wrapped in 'model' or
    'module', keys possibly prefixed 'module.') to a progvid state dict.

    The layouts are the same by design; this unwraps, drops the fixed sin-cos `pos_embed` tables
    (checked to be sin-cos, since a learned table cannot be represented) and validates keys: with
    `model`, against its state dict (missing, unexpected, shape); without, against the official
    key pattern. Raises CheckpointError listing the offending keys."""
    if not isinstance(sd, Mapping):
        raise CheckpointError(f"official VideoMAE checkpoint: expected a dict, got {type(sd)}")
    for wrapper in ("model", "module", "state_dict"):
        if isinstance(sd.get(wrapper), Mapping):
            sd = sd[wrapper]
            break
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        key = key.removeprefix("module.")
        if _weight(key, value, "official VideoMAE checkpoint"):
            out[key] = value
    if model is not None:
        expected = model.state_dict()
        _fail("missing keys", sorted(set(expected) - set(out)))
        _fail("unexpected keys", sorted(set(out) - set(expected)))
        _fail("shape mismatch", sorted(
            f"{k} {tuple(out[k].shape)} != {tuple(v.shape)}"
            for k, v in expected.items() if out[k].shape != v.shape
        ))
        return out
    _fail("unexpected keys", sorted(k for k in out if not _OFFICIAL_KEY.match(k)))
    missing = [k for k in _REQUIRED if k not in out]
    for side in ("encoder", "decoder"):
        ids = {int(k.split(".")[2]) for k in out if k.startswith(f"{side}.blocks.")}
        missing += [f"{side}.blocks.{i}.{s}" for i in range(max(ids, default=-1) + 1)
                    for s in _BLOCK_KEYS if f"{side}.blocks.{i}.{s}" not in out]
    _fail("missing keys", missing)
    return out


_PRETRAIN_ONLY = re.compile(r"^(decoder\.|encoder_to_decoder\.|mask_token$)")


def _heads_for(width: int, table: Mapping[str, tuple[int, ...]], heads_at: int, path: Path,
               given: int | None, what: str) -> int:
    if given is not None:
        return given
    known = [dims[heads_at] for dims in table.values() if dims[0] == width]
    if not known:
        raise CheckpointError(f"{path}: cannot infer {what} for width {width}; pass num_heads")
    return known[0]


def read_official(raw: Mapping[str, Any], path: str | Path, num_heads: int | None = None,
                  *, decoder: bool = False) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(encoder geometry, weights in progvid names) of an official VideoMAE checkpoint's
    contents (pre-training: `encoder.*` + decoder; fine-tuned: `blocks.*`, `fc_norm`, `head`) or
    a plain state dict; the geometry is inferred from the weights. With `decoder`, a
    pre-training checkpoint also gives the decoder's (`decoder_embed_dim`, `decoder_depth`,
    `decoder_num_heads`)."""
    path = Path(path)
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{path}: expected a state dict, got {type(raw).__name__}")
    raw = next((raw[w] for w in ("model", "module", "state_dict")
                if isinstance(raw.get(w), Mapping)), raw)
    raw = {k.removeprefix("module."): v for k, v in raw.items()}
    pretrain = any(_PRETRAIN_ONLY.match(k) for k in raw)
    if pretrain:
        sd = load_official_state_dict(raw)
    else:  # official fine-tune layout has no `encoder.` prefix
        sd = {}
        for key, value in raw.items():
            if not _weight(key, value, str(path)):
                continue
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
    geometry = {"patch_size": patch, "tubelet_size": tubelet, "in_chans": chans,
                "embed_dim": dim, "depth": depth,
                "num_heads": _heads_for(dim, ENCODER_SIZES, 2, path, num_heads, "num_heads"),
                "mlp_ratio": fc1.shape[0] / dim}
    if pretrain and decoder:
        dec_dim = int(sd["encoder_to_decoder.weight"].shape[0])
        geometry.update(
            decoder_embed_dim=dec_dim,
            decoder_depth=1 + max(int(k.split(".")[2]) for k in sd if k.startswith("decoder.blocks.")),
            decoder_num_heads=_heads_for(dec_dim, DECODER_SIZES, 1, path, None, "decoder heads"))
    return geometry, sd
