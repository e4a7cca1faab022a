"""VideoMAE: tube masking, ViT encoder on visible tokens, light decoder, normalized-pixel loss.

The model owns its geometry (tubelet, patch size) and its target construction, so data code only
delivers normalized clips (B, C, T, H, W) and, optionally, masks. Parameter names follow the
official VideoMAE pretrain checkpoints (`encoder.*`, `encoder_to_decoder`, `mask_token`,
`decoder.blocks`, `decoder.norm`, `decoder.head`).

Dual masking (VideoMAE V2, Wang et al., CVPR 2023; code: github.com/OpenGVLab/VideoMAEv2 at
commit 29eab1e) is available with `decoder_mask="running_cell"`: the decoder also drops tokens, by
V2's running-cell pattern (`running_cell_mask`), so it runs on fewer tokens. It adds no
parameters: the encoder, the weights and checkpoints are the same as without it. The rules, as in
V2's code:
- decoder input (models/modeling_pretrain.py, `PretrainVisionTransformer.forward`, lines
  340-358): all encoder-visible latents, then one mask token at every position the decoder keeps
  (`decode_vis = ~decode_mask`, line 341). A kept position that the encoder saw gets a mask
  token too (V2 does not exclude it), which keeps the token count the same for every sample:
  N_visible + N_kept decoder tokens instead of N.
- predictions and targets (line 358; engine_for_pretraining.py line 98): the head predicts every
  kept position, in token order; the target is the normalized pixels at those positions.
- loss (engine_for_pretraining.py lines 102-105): squared error averaged over each token's
  pixels, then summed over the kept positions that the encoder did not see and divided by their
  number over the whole batch, i.e. exactly the encoder-invisible tokens among the kept ones.
- without a decoder mask V2 passes `decode_mask = ~encoder_mask` (dataset/pretrain_datasets.py
  line 58), i.e. the VideoMAE v1 decoder; progvid's default path is that v1 code, unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from progvid.constants import IMAGENET_MEAN, IMAGENET_STD
from progvid.errors import ConfigError, ProgvidError

from .common import accepted, constructor_args
from .masking import (
    DECODER_MASK_TYPES,
    MASK_TYPES,
    check_cell_grid,
    check_mask,
    mask_index,
    mask_order,
    masked_count,
    random_mask,
    running_cell_drops,
    running_cell_kept,
    running_cell_mask,
    take_rows,
    tube_mask,
)
from .vit import (
    ENCODER_SIZES,
    Block,
    VisionTransformer,
    check_overrides,
    init_weights,
    run_blocks,
    sincos_table,
    size_dims,
)

# name -> (decoder_embed_dim, decoder_num_heads), as in the official pretrain configs.
DECODER_SIZES: dict[str, tuple[int, int]] = {
    "tiny": (96, 3),
    "small": (192, 3),
    "base": (384, 6),
    "large": (512, 8),
    "huge": (640, 8),
}
@dataclass
class VideoMAEOutput:
    """Without decoder masking `pred`/`target` hold the encoder-masked tokens (VideoMAE v1).
    With it they hold every token the decoder keeps (V2), and `loss_mask` says which of those
    rows the loss uses (the encoder-masked ones)."""

    loss: Tensor  # scalar, float32
    pred: Tensor  # (B, N_pred, tubelet*p*p*C): decoder output, in token order
    target: Tensor  # (B, N_pred, tubelet*p*p*C), in the same token order as pred
    mask: Tensor  # bool (B, N), True = masked (hidden from the encoder)
    decoder_mask: Tensor | None = None  # bool (B, N), True = dropped by the decoder; None if off
    loss_mask: Tensor | None = None  # bool (B, N_pred), True = row in the loss; None = all rows


class VideoMAEDecoder(nn.Module):
    """Transformer over [visible + mask tokens]; predicts pixels of the last `num_masked` tokens."""

    def __init__(
        self, *, embed_dim: int, depth: int, num_heads: int, out_dim: int, mlp_ratio: float = 4.0,
        drop_path: float = 0.0, norm_eps: float = 1e-6, decoder_norm_eps: float = 1e-6,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.depth = depth
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.grad_checkpointing = grad_checkpointing
        dpr = torch.linspace(0, drop_path, depth, device="cpu").tolist()  # also on the meta device
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, dpr[i], norm_eps) for i in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=decoder_norm_eps)
        self.head = nn.Linear(embed_dim, out_dim)
        self.apply(init_weights)

    def forward(self, x: Tensor, num_masked: int) -> Tensor:
        x = run_blocks(self.blocks, x, self.grad_checkpointing and self.training)  # (B, N, Dd)
        return self.head(self.norm(x[:, -num_masked:]))  # (B, Nm, out_dim)


class VideoMAE(nn.Module):
    """VideoMAE pre-training model. `forward(video, mask=None, generator=None, decoder_mask=None)`
    -> VideoMAEOutput.

    video: float (B, C, T, H, W) normalized with `mean`/`std`; T a multiple of `tubelet_size`.
    mask: bool (B, N), True = masked, same count per sample; drawn with `random_mask` if None.
    `decoder_mask="running_cell"` turns on VideoMAE V2 dual masking with `decoder_mask_ratio`
    (0.25, 0.5 or 0.75; see the module docstring); the default "none" is VideoMAE v1."""

    def __init__(
        self,
        *,
        img_size: int = 224,
        patch_size: int = 16,
        tubelet_size: int = 2,
        num_frames: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        decoder_embed_dim: int = 384,
        decoder_depth: int = 4,
        decoder_num_heads: int = 6,
        mlp_ratio: float = 4.0,
        mask_ratio: float = 0.9,
        mask_type: str = "tube",
        drop_path: float = 0.0,
        norm_pix_loss: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        norm_eps: float = 1e-6,
        decoder_norm_eps: float = 1e-6,
        final_norm: bool = True,
        grad_checkpointing: bool = False,
        decoder_mask: str = "none",
        decoder_mask_ratio: float = 0.5,
    ) -> None:
        # Everything needed to rebuild the model: VideoMAE(**model.hparams).
        hparams = constructor_args(locals())
        super().__init__()
        if mask_type not in MASK_TYPES:
            raise ConfigError(f"mask_type must be one of {', '.join(MASK_TYPES)}, got {mask_type!r}")
        masked_count(mask_ratio, 2)
        if decoder_mask not in DECODER_MASK_TYPES:
            raise ConfigError(f"decoder_mask must be one of {', '.join(DECODER_MASK_TYPES)}, "
                              f"got {decoder_mask!r}")
        if len(mean) != in_chans or len(std) != in_chans or min(std) <= 0:
            raise ConfigError(f"mean/std need {in_chans} values (std > 0), got {mean} / {std}")
        if img_size % patch_size or num_frames % tubelet_size:
            raise ConfigError(
                f"img_size {img_size} must be a multiple of patch_size {patch_size} and "
                f"num_frames {num_frames} a multiple of tubelet_size {tubelet_size}"
            )
        if decoder_mask == "none":
            # Only when on: a default model's hparams (and checkpoint meta) stay as they were, and
            # dicts written before the option existed rebuild with the defaults.
            del hparams["decoder_mask"], hparams["decoder_mask_ratio"]
        else:
            running_cell_drops(decoder_mask_ratio)
            check_cell_grid(img_size // patch_size, img_size // patch_size)
        self.hparams: dict[str, Any] = hparams
        self.img_size = img_size
        self.patch_size = patch_size
        self.tubelet_size = tubelet_size
        self.num_frames = num_frames
        self.in_chans = in_chans
        self.mask_ratio = mask_ratio
        self.mask_type = mask_type
        self.decoder_mask_type = decoder_mask
        self.decoder_mask_ratio = decoder_mask_ratio
        self.norm_pix_loss = norm_pix_loss
        self.decoder_output_dim = tubelet_size * patch_size * patch_size * in_chans
        self.encoder = VisionTransformer(**accepted(VisionTransformer, hparams))
        self.encoder_to_decoder = nn.Linear(embed_dim, decoder_embed_dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder = VideoMAEDecoder(
            embed_dim=decoder_embed_dim, depth=decoder_depth, num_heads=decoder_num_heads,
            out_dim=self.decoder_output_dim, mlp_ratio=mlp_ratio, drop_path=drop_path,
            norm_eps=norm_eps, decoder_norm_eps=decoder_norm_eps,
            grad_checkpointing=grad_checkpointing,
        )
        nn.init.xavier_uniform_(self.encoder_to_decoder.weight)
        nn.init.trunc_normal_(self.mask_token, std=0.02, a=-0.02, b=0.02)
        # Non-persistent: constants of the model config, not weights.
        shape = (1, in_chans, 1, 1, 1)
        self.register_buffer("pixel_mean", torch.tensor(mean).view(shape), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(shape), persistent=False)

    @classmethod
    def from_hparams(cls, hparams: dict[str, Any]) -> VideoMAE:
        return cls(**hparams)

    def no_weight_decay(self) -> set[str]:
        """Parameters exempt from weight decay beyond norms and biases: the mask token, as in
        the official model's `no_weight_decay` (positions are a fixed table here)."""
        return {"mask_token"}

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        self.hparams["grad_checkpointing"] = enabled
        self.encoder.grad_checkpointing = enabled
        self.decoder.grad_checkpointing = enabled

    # -- geometry -------------------------------------------------------------------------------

    def num_tokens(self, num_frames: int | None = None, img_size: int | None = None) -> int:
        """Tokens N of a square clip: (T/tubelet) * (S/patch)^2 (defaults: constructor values)."""
        return self.encoder.num_tokens(num_frames, img_size)

    def random_mask(
        self, batch: int, num_frames: int | None = None, device: torch.device | str | None = None,
        generator: torch.Generator | None = None, *, img_size: int | tuple[int, int] | None = None,
    ) -> Tensor:
        """Mask of this model's `mask_type`/`mask_ratio` for a clip: bool (B, N), True = masked."""
        size = img_size or self.img_size
        h, w = (size, size) if isinstance(size, int) else size
        t, gh, gw = self.encoder.grid(num_frames or self.num_frames, h, w)
        if self.mask_type == "tube":
            return tube_mask(batch, t, gh, gw, self.mask_ratio, device, generator)
        return random_mask(batch, t * gh * gw, self.mask_ratio, device, generator)

    def random_decoder_mask(
        self, batch: int, num_frames: int | None = None, device: torch.device | str | None = None,
        generator: torch.Generator | None = None, *, img_size: int | tuple[int, int] | None = None,
    ) -> Tensor | None:
        """Decoder mask of this model's `decoder_mask`/`decoder_mask_ratio`: bool (B, N), True =
        dropped by the decoder; None (and nothing drawn from `generator`) when decoder masking
        is off. Draw it after `random_mask` from the same generator for reproducible steps."""
        if self.decoder_mask_type == "none":
            return None
        size = img_size or self.img_size
        h, w = (size, size) if isinstance(size, int) else size
        t, gh, gw = self.encoder.grid(num_frames or self.num_frames, h, w)
        return running_cell_mask(batch, t, gh, gw, self.decoder_mask_ratio, device, generator)

    def patchify(self, video: Tensor) -> Tensor:
        """(B, C, T, H, W) -> (B, N, t*p*p*C): token order (t, h, w), pixels (t p p) then channel
        last, i.e. 'b c (t p0) (h p1) (w p2) -> b (t h w) (p0 p1 p2 c)'."""
        b, c = video.shape[:2]
        t, h, w = self.encoder.grid(*video.shape[2:])
        ts, p = self.tubelet_size, self.patch_size
        x = video.reshape(b, c, t, ts, h, p, w, p).permute(0, 2, 4, 6, 3, 5, 7, 1)
        return x.reshape(b, t * h * w, ts * p * p * c)

    def unpatchify(self, tokens: Tensor, grid: tuple[int, int, int]) -> Tensor:
        """Inverse of `patchify`: (B, N, t*p*p*C) with token grid (t, h, w) -> (B, C, T, H, W)."""
        b = tokens.shape[0]
        t, h, w = grid
        ts, p, c = self.tubelet_size, self.patch_size, self.in_chans
        x = tokens.reshape(b, t, h, w, ts, p, p, c).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return x.reshape(b, c, t * ts, h * p, w * p)

    @torch.no_grad()
    def normalized_target(self, video: Tensor, select: Tensor | None = None) -> Tensor:
        """Reconstruction target for every token: (B, N, t*p*p*C), float32; with `select` (bool
        (B, N), the same count per sample, or its positions (B, N_sel) from `mask_index`) only
        those tokens, in token order: (B, N_sel, ...).

        Un-normalize to [0, 1] pixels with the model's mean/std; with `norm_pix_loss`, normalize
        each token per channel (mean, unbiased std + 1e-6) as in the official VideoMAE. Tokens
        are independent, so selecting first gives the selected rows of the full target."""
        tokens = self.patchify(video.float())  # (B, N, t*p*p*C), channel last
        b, n, d = tokens.shape
        if select is not None:
            tokens = take_rows(tokens, mask_index(select) if select.dtype == torch.bool else select)
            n = tokens.shape[1]
        tokens = tokens.reshape(b, n, -1, self.in_chans)  # (B, N, t*p*p, C)
        tokens = tokens * self.pixel_std.float().view(-1) + self.pixel_mean.float().view(-1)
        if not self.norm_pix_loss:
            return tokens.reshape(b, n, d)
        # two-pass variance written out: about 3x faster than `var` over a strided middle dim
        centred = tokens - tokens.mean(dim=-2, keepdim=True)
        var = centred.square().sum(dim=-2, keepdim=True) / (tokens.shape[-2] - 1)
        return (centred / (var.sqrt() + 1e-6)).reshape(b, n, d)

    # -- forward pieces -------------------------------------------------------------------------

    def forward_encoder(self, video: Tensor, mask: Tensor, num_masked: int | None = None) -> Tensor:
        """video (B, C, T, H, W), mask (B, N) -> visible latents (B, N_visible, D_enc).
        `num_masked`: the masked tokens per sample when known (saves counting them)."""
        return self.encoder(video, mask, num_masked=num_masked)

    def forward_decoder(
        self, latent: Tensor, mask: Tensor, decoder_mask: Tensor | None = None, *,
        num_kept: int | None = None,
    ) -> Tensor:
        """latent (B, N_visible, D_enc), mask (B, N) -> pred (B, N_masked, t*p*p*C), masked
        tokens in token order. Visible tokens are not unshuffled; their positions are gathered
        instead, which is equivalent because attention is permutation-equivariant.

        With `decoder_mask` (bool (B, N), True = dropped, same count per sample) the mask tokens
        go to the positions it keeps instead, encoder-visible ones included (V2,
        modeling_pretrain.py lines 341-358; its decoder's head reads the last N_kept tokens,
        lines 223-236): pred is (B, N_kept, t*p*p*C), kept tokens in token order, and the decoder
        runs on N_visible + N_kept tokens. `num_kept`: the kept tokens per sample when known
        (saves counting them: a host sync on CUDA; the other counts come from the shapes)."""
        n_visible = latent.shape[1]
        order = mask_order(mask)
        if decoder_mask is None:
            slots = order[:, n_visible:]
        else:  # where mask tokens go
            slots = mask_index(~decoder_mask, num_kept)
        return self._decode(latent, order[:, :n_visible], slots, mask.shape[1])

    def _decode(self, latent: Tensor, visible: Tensor, slots: Tensor, num_tokens: int) -> Tensor:
        """`forward_decoder` with positions: the visible tokens' (B, N_visible) and the mask
        tokens' (B, N_slots), each ascending, among `num_tokens`."""
        if slots.shape[1] == 0:
            raise ProgvidError("the mask hides no token: nothing to reconstruct")
        x = self.encoder_to_decoder(latent)  # (B, N_visible, Dd)
        pos = sincos_table(num_tokens, x.shape[-1], x.device).to(x.dtype)  # (N, Dd)
        x = torch.cat([x + pos[visible], self.mask_token.to(x.dtype) + pos[slots]], dim=1)
        return self.decoder(x, slots.shape[1])

    def forward_loss(self, video: Tensor, pred: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """MSE between pred (B, N_masked, D) and the masked tokens' targets, in float32.
        Returns (loss, target)."""
        return self._loss(video, pred, mask_index(mask, pred.shape[1]))

    def _loss(self, video: Tensor, pred: Tensor, hidden: Tensor) -> tuple[Tensor, Tensor]:
        """`forward_loss` with the masked tokens' positions (B, N_masked), ascending."""
        target = self.normalized_target(video, hidden)  # (B, N_masked, D)
        return F.mse_loss(pred.float(), target), target

    def forward_dual_loss(
        self, video: Tensor, pred: Tensor, mask: Tensor, decoder_mask: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Dual-masking loss in float32 (V2, engine_for_pretraining.py lines 98-105). pred
        (B, N_kept, D) covers the tokens the decoder keeps (~decoder_mask) in token order.
        Returns (loss, target (B, N_kept, D), loss_mask (B, N_kept)), where loss_mask marks the
        kept tokens the encoder did not see. The loss is the per-token MSE (mean over D) summed
        over the loss_mask rows of the batch and divided by their number (at least 1: a batch
        whose kept tokens were all visible gives 0 rather than NaN)."""
        return self._dual_loss(video, pred, mask, mask_index(~decoder_mask, pred.shape[1]))

    def _dual_loss(self, video: Tensor, pred: Tensor, mask: Tensor,
                   kept: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """`forward_dual_loss` with the kept tokens' positions (B, N_kept), ascending."""
        target = self.normalized_target(video, kept)  # (B, N_kept, D)
        loss_mask = take_rows(mask, kept)  # (B, N_kept), True = in the loss
        per_token = (pred.float() - target).pow(2).mean(dim=-1)
        weight = loss_mask.to(per_token.dtype)
        loss = (per_token * weight).sum() / weight.sum().clamp_min(1.0)
        return loss, target, loss_mask

    def mask_counts(self, num_frames: int | None = None, *,
                    img_size: int | tuple[int, int] | None = None) -> tuple[int, int | None]:
        """(tokens per sample that `random_mask` hides, tokens per sample that
        `random_decoder_mask` keeps, None when decoder masking is off) for a clip."""
        size = img_size or self.img_size
        h, w = (size, size) if isinstance(size, int) else size
        t, gh, gw = self.encoder.grid(num_frames or self.num_frames, h, w)
        if self.decoder_mask_type == "none":
            return self._masked_tokens(t, gh, gw), None
        return self._masked_tokens(t, gh, gw), running_cell_kept(t, gh, gw, self.decoder_mask_ratio)

    def _masked_tokens(self, t: int, h: int, w: int) -> int:
        """Tokens per sample that `random_mask` hides on a (t, h, w) token grid."""
        if self.mask_type == "tube":
            return t * masked_count(self.mask_ratio, h * w)
        return masked_count(self.mask_ratio, t * h * w)

    def forward(
        self, video: Tensor, mask: Tensor | None = None, generator: torch.Generator | None = None,
        decoder_mask: Tensor | None = None, *, num_masked: int | None = None,
        num_kept: int | None = None,
    ) -> VideoMAEOutput:
        """Masks not given are drawn from `generator` (encoder mask first, then decoder mask).

        decoder_mask: bool (B, N), True = dropped by the decoder. When None and the model was
        built with `decoder_mask="running_cell"`, one is drawn in training mode only; in eval
        mode the decoder then sees every position (the v1 reconstruction of all masked tokens:
        a deterministic validation loss comparable across runs, and full pictures for viz).
        An explicit decoder_mask is always used, whatever the model's option or mode.

        num_masked / num_kept: tokens per sample that the given mask hides / the given decoder
        mask keeps, when the caller knows them (e.g. `mask_counts` for masks it drew with
        `random_mask`): on CUDA counting them would make the host wait for the device. Masks
        drawn here are counted from `mask_counts`. On CPU every given count is checked."""
        gt, gh, gw = self.encoder.check_video(video)
        b, t, h, w, n = video.shape[0], *video.shape[2:], gt * gh * gw
        if mask is None:
            mask = self.random_mask(b, t, video.device, generator, img_size=(h, w))
            num_masked = self._masked_tokens(gt, gh, gw)
        mask = mask.to(device=video.device)
        check_mask(mask, b, n, num_masked)  # a given mask: the same count per sample (as given)?
        if decoder_mask is None and self.training and self.decoder_mask_type != "none":
            decoder_mask = self.random_decoder_mask(b, t, video.device, generator, img_size=(h, w))
            num_kept = running_cell_kept(gt, gh, gw, self.decoder_mask_ratio)
        elif decoder_mask is not None:
            decoder_mask = decoder_mask.to(device=video.device)
            check_mask(decoder_mask, b, n, None if num_kept is None else n - num_kept)
        # one sort gives the visible positions and the masked ones (each ascending): the same
        # tokens in the same order as boolean indexing, without its host sync on CUDA
        order = mask_order(mask)
        n_visible = n - (int(mask[0].sum()) if num_masked is None else num_masked)
        visible, hidden = order[:, :n_visible], order[:, n_visible:]
        latent = self.encoder.forward_visible(video, visible)
        if decoder_mask is None:
            pred = self._decode(latent, visible, hidden, n)
            loss, target = self._loss(video, pred, hidden)
            loss_mask = None
        else:
            kept = mask_index(~decoder_mask, num_kept)
            pred = self._decode(latent, visible, kept, n)
            loss, target, loss_mask = self._dual_loss(video, pred, mask, kept)
        return VideoMAEOutput(loss=loss, pred=pred, target=target, mask=mask,
                              decoder_mask=decoder_mask, loss_mask=loss_mask)


_OVERRIDES = {
    "embed_dim", "depth", "num_heads", "decoder_embed_dim", "decoder_num_heads", "mlp_ratio",
    "in_chans", "norm_eps", "decoder_norm_eps", "final_norm",
}


def videomae(
    size: str,
    *,
    num_frames: int = 16,
    img_size: int = 224,
    patch_size: int = 16,
    tubelet_size: int = 2,
    mask_ratio: float = 0.9,
    mask_type: str = "tube",
    decoder_depth: int = 4,
    drop_path: float = 0.0,
    norm_pix_loss: bool = True,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    grad_checkpointing: bool = False,
    decoder_mask: str = "none",
    decoder_mask_ratio: float = 0.5,
    **overrides: Any,
) -> VideoMAE:
    """VideoMAE by size name (tiny, small, base, large, huge). `overrides` may set embed_dim,
    depth, num_heads, decoder_embed_dim, decoder_num_heads, mlp_ratio, in_chans, norm_eps,
    decoder_norm_eps, final_norm (e.g. a width-64 depth-2 model for tests)."""
    embed_dim, depth, num_heads = size_dims(size, ENCODER_SIZES, "model")
    dec_dim, dec_heads = size_dims(size, DECODER_SIZES, "model")
    check_overrides(overrides, _OVERRIDES)
    dims: dict[str, Any] = {
        "embed_dim": embed_dim, "depth": depth, "num_heads": num_heads,
        "decoder_embed_dim": dec_dim, "decoder_num_heads": dec_heads, **overrides,
    }
    return VideoMAE(
        img_size=img_size, patch_size=patch_size, tubelet_size=tubelet_size,
        num_frames=num_frames, decoder_depth=decoder_depth, mask_ratio=mask_ratio,
        mask_type=mask_type, drop_path=drop_path, norm_pix_loss=norm_pix_loss, mean=mean,
        std=std, grad_checkpointing=grad_checkpointing, decoder_mask=decoder_mask,
        decoder_mask_ratio=decoder_mask_ratio, **dims,
    )


__all__ = [
    "DECODER_SIZES",
    "VideoMAE",
    "VideoMAEDecoder",
    "VideoMAEOutput",
    "videomae",
]
