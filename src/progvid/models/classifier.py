"""Video classifier for fine-tuning: ViT encoder -> mean pooling -> fc_norm -> dropout -> head.

As in the official VideoMAE fine-tuning with mean pooling, the encoder has no final LayerNorm:
tokens are averaged and normalized by `fc_norm`. Pre-trained encoders are loaded into it by
`progvid.loading.classifier_from_pretrained`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from progvid.constants import IMAGENET_MEAN, IMAGENET_STD
from progvid.errors import ConfigError, ProgvidError

from .common import accepted, constructor_args, unwrap
from .vit import ENCODER_SIZES, VisionTransformer, check_overrides, size_dims


class VideoClassifier(nn.Module):
    """`forward(video (B, C, T, H, W)) -> logits (B, num_classes)`; any tileable clip length.

    `mean`/`std` are not used in forward: they record the input normalization of the weights.
    `fc_norm_eps` is 1e-6 as in the official VideoMAE; transformers' VideoMAEForVideoClassification
    has a fixed 1e-5, so a classifier read from transformers carries 1e-5 (its logits are then
    transformers' own, to fp32 round-off)."""

    def __init__(
        self,
        *, num_classes: int, img_size: int = 224, patch_size: int = 16, tubelet_size: int = 2,
        num_frames: int = 16, in_chans: int = 3, embed_dim: int = 768, depth: int = 12,
        num_heads: int = 12, mlp_ratio: float = 4.0, norm_eps: float = 1e-6,
        drop_path: float = 0.1, head_dropout: float = 0.0, init_scale: float = 0.001,
        mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
        grad_checkpointing: bool = False, fc_norm_eps: float = 1e-6,
    ) -> None:
        # Everything needed to rebuild the model: VideoClassifier(**model.hparams).
        hparams = constructor_args(locals())
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        if not 0.0 <= head_dropout < 1.0:
            raise ConfigError(f"head_dropout must be in [0, 1), got {head_dropout}")
        self.hparams: dict[str, Any] = hparams
        self.num_classes = num_classes
        self.encoder = VisionTransformer(**accepted(VisionTransformer, hparams),
                                         final_norm=False)
        self.fc_norm = nn.LayerNorm(embed_dim, eps=fc_norm_eps)
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
    inner = unwrap(model)
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


__all__ = ["VideoClassifier", "classifier", "layer_decay_groups", "layer_id"]
