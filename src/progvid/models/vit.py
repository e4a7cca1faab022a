"""Video Vision Transformer encoder (the VideoMAE backbone).

Parameter names follow the official VideoMAE code (`patch_embed.proj`, `blocks.N.norm1`,
`blocks.N.attn.qkv`, `blocks.N.attn.q_bias`, ...), so official checkpoints map onto it without
renaming. Tokens are ordered (t, h, w); positions come from a fixed 1-D sin-cos table over the flat
token index, computed for the input's actual token count, so any clip length that is a multiple of
the tubelet works (progressive training changes the frame count during a run).
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from progvid.errors import ConfigError, ProgvidError

from .masking import check_mask, mask_index

# name -> (embed_dim, depth, num_heads); "tiny" follows ViT-Ti.
ENCODER_SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
    "huge": (1280, 32, 16),
}


def _sincos(n: int, dim: int, device: torch.device) -> Tensor:
    pos = torch.arange(n, dtype=torch.float64).unsqueeze(1)  # (n, 1)
    j = torch.arange(dim, dtype=torch.float64)
    # float64 like the official numpy version, then cast: tables agree to float32 rounding.
    angle = pos / torch.pow(10000.0, 2.0 * torch.div(j, 2, rounding_mode="floor") / dim)
    table = torch.empty(n, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle[:, 0::2])
    table[:, 1::2] = torch.cos(angle[:, 1::2])
    return table.to(device=device, dtype=torch.float32)


_sincos_table_cached = lru_cache(maxsize=64)(_sincos)


def sincos_table(n: int, dim: int, device: torch.device | str | None = None) -> Tensor:
    """Fixed position table (n, dim), float32: angle = pos / 10000^(2*(j//2)/dim), sin on even j,
    cos on odd j. Row i depends only on i, so a shorter clip's table is a prefix of a longer one.
    Cached per (n, dim, device); do not modify the returned tensor in place. Under
    torch.compile it is computed in the graph instead (a cache lookup would break the graph
    and pin the clip length)."""
    if torch.compiler.is_compiling():
        return _sincos(n, dim, torch.device(device or "cpu"))
    return _sincos_table_cached(int(n), int(dim), torch.device(device or "cpu"))


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample, in train mode only."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: Tensor) -> Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = x.new_empty(shape).bernoulli_(keep)
        return x * mask / keep  # rescale so the expectation matches eval mode

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv weight and learnable q/v biases only.

    A key bias would be pointless: it adds the same score to every key of a query, which the
    softmax cancels. That is why the official VideoMAE (and BEiT) keep q_bias and v_bias only."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape  # (B, N, C)
        bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        qkv = F.linear(x, self.qkv.weight, bias)  # (B, N, 3C)
        qkv = qkv.reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, N, head_dim)
        x = F.scaled_dot_product_attention(q, k, v)  # scale = head_dim ** -0.5
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + drop_path(attn(norm1(x))), then the same with the MLP."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def run_blocks(blocks: nn.ModuleList, x: Tensor, grad_checkpointing: bool) -> Tensor:
    """Apply blocks in order; with checkpointing, activations are recomputed in backward
    (non-reentrant, which also restores the RNG so drop path draws the same masks)."""
    use_ckpt = grad_checkpointing and torch.is_grad_enabled()
    for blk in blocks:
        x = checkpoint(blk, x, use_reentrant=False) if use_ckpt else blk(x)
    return x


def init_weights(module: nn.Module) -> None:
    """Official VideoMAE init: xavier-uniform Linear with zero bias, LayerNorm 1/0."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class PatchEmbed(nn.Module):
    """Cube embedding: Conv3d with kernel = stride = (tubelet, patch, patch)."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, tubelet_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.tubelet_size = tubelet_size
        k = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=k, stride=k)

    def forward(self, video: Tensor) -> Tensor:
        # (B, C, T, H, W) -> (B, D, T/t, H/p, W/p) -> (B, N, D) with N ordered (t, h, w)
        return self.proj(video).flatten(2).transpose(1, 2)

    def forward_tokens(self, video: Tensor, index: Tensor) -> Tensor:
        """Embed only the tokens at `index` (long (B, K), token positions, see `mask_index`):
        (B, C, T, H, W) -> (B, K, D) in the order of `index`.

        Kernel = stride, so the Conv3d is a per-cube linear map: gather the kept cubes (flattened
        (C, t, p, p) like the conv weight) from a strided view of the video, then apply the conv
        weight as a matrix. Same function as `forward(video)` at those rows up to float
        round-off, at K / N of its multiply-accumulates and without copying the hidden cubes."""
        b, c, frames, height, width = video.shape
        ts, p = self.tubelet_size, self.patch_size
        t, h, w = frames // ts, height // p, width // p
        cubes = video.reshape(b, c, t, ts, h, p, w, p).permute(0, 2, 4, 6, 1, 3, 5, 7)
        rows = torch.arange(b, device=index.device).unsqueeze(1)
        ti, rest = index.div(h * w, rounding_mode="floor"), index.remainder(h * w)
        cubes = cubes[rows, ti, rest.div(w, rounding_mode="floor"), rest.remainder(w)]
        weight = self.proj.weight
        return F.linear(cubes.reshape(b, index.shape[1], -1), weight.reshape(weight.shape[0], -1),
                        self.proj.bias)


class VisionTransformer(nn.Module):
    """Video ViT encoder. `forward(video, mask)` returns the visible tokens.

    Input: float video (B, C, T, H, W), normalized; T a multiple of `tubelet_size`, H and W
    multiples of `patch_size`. `img_size`/`num_frames` are only defaults for helpers such as
    `num_tokens`; forward accepts any valid geometry."""

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
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
        final_norm: bool = True,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        self.patch_size = patch_size
        self.tubelet_size = tubelet_size
        self.num_frames = num_frames
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.depth = depth
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.grad_checkpointing = grad_checkpointing
        self.patch_embed = PatchEmbed(in_chans, embed_dim, patch_size, tubelet_size)
        # stochastic depth grows with depth (on the CPU: also when built on the meta device)
        dpr = torch.linspace(0, drop_path, depth, device="cpu").tolist()
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, dpr[i], norm_eps) for i in range(depth)
        )
        # The official pretrain encoder ends with a LayerNorm; the fine-tune variant (mean pooling
        # + fc_norm) has none, which `final_norm=False` reproduces (also HF use_mean_pooling=True).
        self.norm: nn.Module = nn.LayerNorm(embed_dim, eps=norm_eps) if final_norm else nn.Identity()
        self.apply(init_weights)
        # Conv as a linear map over the flattened cube, as in MAE.
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.proj.bias)

    def grid(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        """Token grid (t, h, w) for a clip; raises ProgvidError if the clip does not tile."""
        t, p = self.tubelet_size, self.patch_size
        if num_frames % t or height % p or width % p or min(num_frames, height, width) <= 0:
            raise ProgvidError(
                f"clip of {num_frames} frames {height}x{width} does not tile into "
                f"tubelet {t} x patch {p}x{p}"
            )
        return num_frames // t, height // p, width // p

    def check_video(self, video: Tensor) -> tuple[int, int, int]:
        """The token grid (t, h, w) of a video batch (B, C, T, H, W); ProgvidError if it is not
        one this encoder takes."""
        if video.ndim != 5 or video.shape[1] != self.in_chans:
            raise ProgvidError(
                f"expected video (B, {self.in_chans}, T, H, W), got shape {tuple(video.shape)}"
            )
        return self.grid(*video.shape[2:])

    def num_tokens(self, num_frames: int | None = None, img_size: int | None = None) -> int:
        """Number of tokens N for a square clip (defaults: the constructor's geometry)."""
        s = img_size or self.img_size
        t, h, w = self.grid(num_frames or self.num_frames, s, s)
        return t * h * w

    def forward(self, video: Tensor, mask: Tensor | None = None, apply_norm: bool = True,
                num_masked: int | None = None) -> Tensor:
        """video (B, C, T, H, W), mask bool (B, N) True = masked (same count per sample) ->
        visible tokens (B, N_visible, D) in token order. `apply_norm=False` skips the final norm
        (fine-tune style: mean-pool these tokens, then apply your own fc_norm). `num_masked`:
        the masked tokens per sample, when the caller knows it (see `mask_index`).

        With a mask only the visible cubes are embedded (`PatchEmbed.forward_tokens`); the
        official model embeds all tokens and then drops the masked ones, which is the same
        function (FLOPs reports keep that convention and show the executed count beside it)."""
        t, h, w = self.check_video(video)
        if mask is None:
            x = self.patch_embed(video)  # (B, N, D)
            b, n, d = x.shape
            x = x + sincos_table(n, d, x.device).to(x.dtype)
        else:
            # Embed the visible cubes only (the embedding is per token: same result, less work).
            b, n, d = video.shape[0], t * h * w, self.embed_dim
            check_mask(mask, b, n, num_masked)
            return self.forward_visible(
                video, mask_index(~mask, None if num_masked is None else n - num_masked), apply_norm)
        x = run_blocks(self.blocks, x, self.grad_checkpointing and self.training)
        return self.norm(x) if apply_norm else x

    def forward_visible(self, video: Tensor, visible: Tensor, apply_norm: bool = True) -> Tensor:
        """`forward` with the visible tokens given by position: long (B, N_visible) ascending
        (`mask_index(~mask)`, or the first columns of `mask_order(mask)`)."""
        t, h, w = self.check_video(video)
        x = self.patch_embed.forward_tokens(video, visible)  # (B, N_visible, D)
        x = x + sincos_table(t * h * w, self.embed_dim, x.device).to(x.dtype)[visible]
        x = run_blocks(self.blocks, x, self.grad_checkpointing and self.training)
        return self.norm(x) if apply_norm else x


def build_encoder(
    size: str,
    *,
    img_size: int = 224,
    patch_size: int = 16,
    tubelet_size: int = 2,
    num_frames: int = 16,
    drop_path: float = 0.0,
    grad_checkpointing: bool = False,
    **overrides: object,
) -> VisionTransformer:
    """Encoder alone by size name; overrides: embed_dim, depth, num_heads, mlp_ratio, in_chans,
    norm_eps, final_norm."""
    embed_dim, depth, num_heads = size_dims(size, ENCODER_SIZES, "encoder")
    allowed = {"embed_dim", "depth", "num_heads", "mlp_ratio", "in_chans", "norm_eps", "final_norm"}
    check_overrides(overrides, allowed)
    kwargs: dict = {"embed_dim": embed_dim, "depth": depth, "num_heads": num_heads, **overrides}
    return VisionTransformer(
        img_size=img_size, patch_size=patch_size, tubelet_size=tubelet_size,
        num_frames=num_frames, drop_path=drop_path, grad_checkpointing=grad_checkpointing, **kwargs,
    )


def size_dims(size: str, table: dict[str, tuple[int, ...]], what: str) -> tuple[int, ...]:
    if size not in table:
        raise ConfigError(f"unknown {what} size {size!r}; choose one of {', '.join(table)}")
    return table[size]


def check_overrides(overrides: dict, allowed: set[str]) -> None:
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ConfigError(
            f"unknown model option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )


__all__ = [
    "ENCODER_SIZES",
    "Attention",
    "Block",
    "DropPath",
    "PatchEmbed",
    "VisionTransformer",
    "build_encoder",
    "sincos_table",
]
