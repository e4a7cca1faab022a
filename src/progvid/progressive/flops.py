"""Exact per-clip VideoMAE FLOPs, counted analytically as multiply-accumulates (MACs).

Convention (VideoMAE-family papers): one "FLOP" here is one multiply-accumulate. Forward per
clip = cube embedding on all tokens (the official model embeds, then drops masked tokens) +
encoder on the visible tokens + encoder-to-decoder map + decoder on all tokens + decoder head
on the masked tokens. Attention's quadratic terms (QK^T and AV) are included; norms, softmax,
GELU and additions are not (they are not multiply-accumulates of a matrix product and are a
fraction of a percent). Training = 3 x forward (backward ~ 2 x forward), as is customary.
Reference: ViT-B, 224^2, 16 frames, mask 0.9, decoder 4 x 384 gives ~35.4 G; 2 frames ~3.55 G.

`executed_forward` / `executed_train` count what progvid actually runs: the same, except that
the cube embedding runs on the visible tokens only (same function, fewer MACs).

With VideoMAE V2 dual masking (`decoder_mask="running_cell"`) the decoder runs on the visible
tokens + one mask token per decoder-kept position (encoder-visible kept positions included, as
in V2), and the head on the kept positions; both conventions count it that way, since that is
the computation the method defines.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ConfigError
from ..models.common import unwrap
from ..models.masking import running_cell_kept
from ..models.videomae import DECODER_SIZES
from ..models.vit import ENCODER_SIZES, size_dims

TRAIN_FACTOR = 3.0


@dataclass(frozen=True)
class FlopBreakdown:
    """MACs per clip, by part. `embed` follows the official convention (all tokens);
    `embed_executed` is what runs (visible tokens; None = same as `embed`). `decoder_tokens` is
    the decoder's sequence length and `predicted` the tokens the head runs on (None: v1, i.e.
    all tokens and the masked ones)."""

    embed: float
    encoder: float
    enc_to_dec: float
    decoder: float
    head: float
    tokens: int
    visible: int
    embed_executed: float | None = None
    decoder_tokens: int | None = None
    predicted: int | None = None

    @property
    def forward(self) -> float:
        return self.embed + self.encoder + self.enc_to_dec + self.decoder + self.head

    @property
    def train(self) -> float:
        return TRAIN_FACTOR * self.forward

    @property
    def executed_forward(self) -> float:
        """Forward MACs that actually run (the embedding on the visible tokens only)."""
        embed = self.embed if self.embed_executed is None else self.embed_executed
        return self.forward - self.embed + embed

    @property
    def executed_train(self) -> float:
        return TRAIN_FACTOR * self.executed_forward

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "forward": self.forward, "train": self.train,
                "executed_forward": self.executed_forward, "executed_train": self.executed_train}


def block_macs(tokens: int, dim: int, mlp_ratio: float = 4.0) -> float:
    """One transformer block: qkv (3 D^2) + proj (D^2) + MLP (2 r D^2) per token, + 2 N^2 D."""
    linear = tokens * dim * dim * (3 + 1 + 2 * mlp_ratio)
    attention = 2 * tokens * tokens * dim  # QK^T and AV
    return linear + attention


def visible_tokens(num_frames: int, img_size: int, patch: int, tubelet: int, mask_ratio: float,
                   mask_type: str = "tube") -> tuple[int, int]:
    """(all tokens, visible tokens) with the model's masking rule (same count per sample)."""
    t, hw = num_frames // tubelet, (img_size // patch) ** 2
    n = t * hw
    if mask_type == "tube":
        return n, t * (hw - int(mask_ratio * hw))
    return n, n - int(mask_ratio * n)


def decoder_kept_tokens(num_frames: int, img_size: int, patch: int, tubelet: int,
                        decoder_mask: str = "none", decoder_mask_ratio: float = 0.5) -> int | None:
    """Positions the decoder keeps per clip under `decoder_mask` (None when it is off)."""
    if decoder_mask == "none":
        return None
    if decoder_mask != "running_cell":
        raise ConfigError(f"decoder_mask must be none or running_cell, got {decoder_mask!r}")
    side = img_size // patch
    return running_cell_kept(num_frames // tubelet, side, side, decoder_mask_ratio)


def videomae_flops(*, embed_dim: int, depth: int, decoder_dim: int, decoder_depth: int,
                   num_frames: int, img_size: int, patch_size: int = 16, tubelet_size: int = 2,
                   mask_ratio: float = 0.9, mask_type: str = "tube", in_chans: int = 3,
                   mlp_ratio: float = 4.0, decoder_mask: str = "none",
                   decoder_mask_ratio: float = 0.5) -> FlopBreakdown:
    """MACs of one pre-training forward pass for one clip. With `decoder_mask="running_cell"`
    the decoder blocks run on visible + kept tokens and the head on the kept tokens."""
    n, nv = visible_tokens(num_frames, img_size, patch_size, tubelet_size, mask_ratio, mask_type)
    kept = decoder_kept_tokens(num_frames, img_size, patch_size, tubelet_size, decoder_mask,
                               decoder_mask_ratio)
    dec_tokens, predicted = (n, n - nv) if kept is None else (nv + kept, kept)
    token_pixels = in_chans * tubelet_size * patch_size * patch_size
    return FlopBreakdown(
        embed=n * token_pixels * embed_dim,
        encoder=depth * block_macs(nv, embed_dim, mlp_ratio),
        enc_to_dec=nv * embed_dim * decoder_dim,
        decoder=decoder_depth * block_macs(dec_tokens, decoder_dim, mlp_ratio),
        head=predicted * decoder_dim * token_pixels,
        tokens=n,
        visible=nv,
        embed_executed=nv * token_pixels * embed_dim,
        decoder_tokens=dec_tokens,
        predicted=predicted,
    )


def encoder_flops(*, embed_dim: int, depth: int, num_frames: int, img_size: int,
                  patch_size: int = 16, tubelet_size: int = 2, in_chans: int = 3,
                  mlp_ratio: float = 4.0) -> float:
    """MACs of the encoder on a whole clip (fine-tuning / inference), embedding included."""
    n = (num_frames // tubelet_size) * (img_size // patch_size) ** 2
    return n * in_chans * tubelet_size * patch_size**2 * embed_dim + depth * block_macs(n, embed_dim, mlp_ratio)


def model_flops(model: Any, num_frames: int, img_size: int | None = None, *,
                decoder_mask: str | None = None,
                decoder_mask_ratio: float | None = None) -> FlopBreakdown:
    """`videomae_flops` with the geometry read from a built VideoMAE (its `hparams`), including
    its decoder masking: the training computation (in eval mode a dual-masking model runs the
    full decoder unless given a decoder mask). `decoder_mask`/`decoder_mask_ratio` override
    the model's, to compare the same model with and without dual masking."""
    h = dict(unwrap(model).hparams)
    if decoder_mask is not None:
        h["decoder_mask"] = decoder_mask
    if decoder_mask_ratio is not None:
        h["decoder_mask_ratio"] = decoder_mask_ratio
    return videomae_flops(
        embed_dim=h["embed_dim"], depth=h["depth"], decoder_dim=h["decoder_embed_dim"],
        decoder_depth=h["decoder_depth"], num_frames=num_frames,
        img_size=img_size or h["img_size"], patch_size=h["patch_size"],
        tubelet_size=h["tubelet_size"], mask_ratio=h["mask_ratio"], mask_type=h["mask_type"],
        in_chans=h.get("in_chans", 3), mlp_ratio=h.get("mlp_ratio", 4.0),
        decoder_mask=h.get("decoder_mask", "none"),
        decoder_mask_ratio=h.get("decoder_mask_ratio", 0.5))


def flops_report(size: str, *, frames: int, img_size: int, patch_size: int = 16,
                 tubelet_size: int = 2, mask_ratio: float = 0.9, decoder_depth: int = 4,
                 decoder_mask: str = "none", decoder_mask_ratio: float = 0.5) -> dict[str, Any]:
    """`progvid flops`: per-clip MACs of a VideoMAE of a named size (no model is built), with
    the same clip under v1 (full decoder) beside it when dual masking is asked for."""
    if frames % tubelet_size or frames < tubelet_size:
        raise ConfigError(f"--frames: {frames} is not a multiple of the tubelet size {tubelet_size}")
    if img_size % patch_size:
        raise ConfigError(f"--size: {img_size} is not a multiple of the patch size {patch_size}")
    if not 0 < mask_ratio < 1:
        raise ConfigError(f"--mask-ratio: must be in (0, 1), got {mask_ratio}")
    dim, depth, _ = size_dims(size, ENCODER_SIZES, "model")
    dec_dim, _ = size_dims(size, DECODER_SIZES, "model")
    common = {"embed_dim": dim, "depth": depth, "decoder_dim": dec_dim, "decoder_depth": decoder_depth,
              "num_frames": frames, "img_size": img_size, "patch_size": patch_size,
              "tubelet_size": tubelet_size, "mask_ratio": mask_ratio}
    f = videomae_flops(**common, decoder_mask=decoder_mask, decoder_mask_ratio=decoder_mask_ratio)
    out = {"model": size, "frames": frames, "size": img_size, "mask_ratio": mask_ratio,
           "decoder_mask": decoder_mask, "tokens": f.tokens, "visible_tokens": f.visible,
           "decoder_tokens": f.decoder_tokens, "gflops_forward": f.forward / 1e9,
           "gflops_train": f.train / 1e9, "gflops_train_executed": f.executed_train / 1e9,
           "parts_gflops": {k: getattr(f, k) / 1e9 for k in
                            ("embed", "encoder", "enc_to_dec", "decoder", "head")},
           "unit": "GMACs (multiply-accumulates) per clip; train = 3 x forward; executed: the "
                   "cube embedding on visible tokens only"}
    if decoder_mask != "none":
        v1 = videomae_flops(**common)
        out["v1_gflops_train"] = v1.train / 1e9
        out["ratio_to_v1"] = f.train / v1.train
    if decoder_mask != "none":
        out["decoder_mask_ratio"] = decoder_mask_ratio
    return out


def format_flops(r: dict[str, Any]) -> str:
    """One line (two with dual masking) for the terminal."""
    dual = f", decoder mask {r['decoder_mask']} {r['decoder_mask_ratio']:g}" if "ratio_to_v1" in r else ""
    text = (f"VideoMAE-{r['model']} {r['frames']}x{r['size']}^2, mask {r['mask_ratio']}{dual}: "
            f"{r['gflops_forward']:.4g} G forward, {r['gflops_train']:.4g} G train per clip "
            f"(multiply-accumulates; train = 3 x forward; executed, with the embedding on visible "
            f"tokens only: {r['gflops_train_executed']:.4g} G)")
    if "ratio_to_v1" in r:
        text += (f"\n= {r['ratio_to_v1']:.3f} x the same clip without decoder masking "
                 f"({r['v1_gflops_train']:.4g} G train)")
    return text
