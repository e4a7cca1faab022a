"""HCML motion components: cosine cost volume, warping, flow network (P^0), prime motion
blocks (P^l), fusion into the backbone, and the contrastive level predictors.

Layouts: frames / feature maps (N, C, H, W); clips and level features (B, C, T, H, W).
Flow: (N, 2, H, W), channels (u, v) = (x, y) displacement in pixels from frame1 to frame2.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from progvid.errors import ConfigError

MAX_DISPLACEMENT = 6  # seed [0036]: d = 6 at every level
CV_STRIDE = 2  # seed [0036]: s = 2, a 13x13 window sampled on a stride-2 grid (M = 49)
BETA = 4  # PMB channel reduction: the 4x of a ResNet bottleneck; keeps the block light
FLOW_FEAT_CHANNELS = (16, 32)  # PWC-Net's first two pyramid levels; flow computed at 1/4 res
FLOW_DENSE_CHANNELS = (128, 128, 96, 64, 32)  # PWC-Net decoder: 5 densely connected 3x3 convs
FLOW_MAX_DISPLACEMENT = 4  # PWC-Net's search range at each feature level (stride 1, 81 ch)
DELTAS = (1, 2, 3)  # DPC predicts 3 future steps

try:  # optional compiled correlation (CUDA / C++); pure PyTorch is the default
    from spatial_correlation_sampler import spatial_correlation_sample as _sampler
except ImportError:  # pragma: no cover - depends on the environment
    _sampler = None


def displacements(max_displacement: int, stride: int) -> list[int]:
    """Offsets {-r*s, ..., 0, ..., r*s}, r = floor(d / s): D = 2r + 1 values."""
    if max_displacement < 0 or stride < 1:
        raise ConfigError(f"cost volume needs d >= 0 and s >= 1, got d={max_displacement} s={stride}")
    r = max_displacement // stride
    return [k * stride for k in range(-r, r + 1)]


def _span(off: int, size: int) -> tuple[slice, slice] | None:
    """Output positions i with i + off inside [0, size): (output slice, source slice)."""
    lo, hi = max(0, -off), min(size, size - off)
    return None if lo >= hi else (slice(lo, hi), slice(lo + off, hi + off))


class _ShiftCorrelation(torch.autograd.Function):
    """out[:, k] = sum_c a * shift(b, offset_k), one offset at a time.

    Hand-written backward so neither pass keeps D*D copies: the forward holds one product
    map at a time and the backward accumulates both gradients in place.
    """

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, offsets: list[int]) -> Tensor:  # type: ignore[override]
        n, _, h, w = a.shape
        d = len(offsets)
        out = a.new_zeros(n, d * d, h, w)
        for i, dy in enumerate(offsets):
            sy = _span(dy, h)
            for j, dx in enumerate(offsets):
                sx = _span(dx, w)
                if sy is None or sx is None:
                    continue  # offset entirely outside: cost stays 0
                (oy, by), (ox, bx) = sy, sx
                out[:, i * d + j, oy, ox] = (a[:, :, oy, ox] * b[:, :, by, bx]).sum(1)
        ctx.save_for_backward(a, b)
        ctx.offsets = offsets
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, None]:  # type: ignore[override]
        a, b = ctx.saved_tensors
        offsets: list[int] = ctx.offsets
        _, _, h, w = a.shape
        d = len(offsets)
        ga, gb = torch.zeros_like(a), torch.zeros_like(b)
        for i, dy in enumerate(offsets):
            sy = _span(dy, h)
            for j, dx in enumerate(offsets):
                sx = _span(dx, w)
                if sy is None or sx is None:
                    continue
                (oy, by), (ox, bx) = sy, sx
                g = grad[:, i * d + j, oy, ox].unsqueeze(1)
                ga[:, :, oy, ox].addcmul_(g, b[:, :, by, bx])
                gb[:, :, by, bx].addcmul_(g, a[:, :, oy, ox])
        return ga, gb, None


def cost_volume(
    f1: Tensor,
    f2: Tensor,
    max_displacement: int = MAX_DISPLACEMENT,
    stride: int = CV_STRIDE,
    *,
    eps: float = 1e-6,
    backend: str = "auto",
) -> Tensor:
    """Cosine partial cost volume (N, D*D, H, W), D = 2*floor(d/s) + 1.

    cost[:, k, y, x] = <f1n(y, x), f2n(y + dy, x + dx)> with f*n the channel-normalized features
    (unit length, eps-guarded) and k = i * D + j for (dy, dx) = (offsets[i], offsets[j]): dy is
    the outer index, dx the inner one. Out-of-bounds positions cost 0. backend: "torch"
    (shift-and-multiply), "sampler" (spatial_correlation_sampler) or "auto" (the sampler for CUDA
    tensors when installed, else torch).
    """
    if f1.dim() != 4 or f1.shape != f2.shape:
        raise ConfigError(
            f"cost_volume needs two (N, C, H, W) maps of equal shape, got "
            f"{tuple(f1.shape)} and {tuple(f2.shape)}"
        )
    offsets = displacements(max_displacement, stride)
    a, b = F.normalize(f1, dim=1, eps=eps), F.normalize(f2, dim=1, eps=eps)
    if backend not in ("auto", "torch", "sampler"):
        raise ConfigError(f"cost_volume backend must be auto, torch or sampler, got {backend!r}")
    use_sampler = backend == "sampler" or (backend == "auto" and _sampler is not None and f1.is_cuda)
    if use_sampler:
        if _sampler is None:
            raise ConfigError("cost_volume backend 'sampler' needs spatial_correlation_sampler")
        n, _, h, w = a.shape
        d = len(offsets)
        # It sums products over channels; on unit vectors that sum is the cosine itself.
        out = _sampler(a, b, kernel_size=1, patch_size=d, stride=1, padding=0,
                       dilation=1, dilation_patch=stride)
        return out.reshape(n, d * d, h, w)
    return _ShiftCorrelation.apply(a.contiguous(), b.contiguous(), offsets)


def warp(image: Tensor, flow: Tensor) -> tuple[Tensor, Tensor]:
    """Backward warp: warped(y, x) = image(y + v, x + u), bilinear; zeros outside.

    Returns (warped (N, C, H, W), valid (N, 1, H, W) float): valid is 0 where the sample
    point (x + u, y + v) lies outside [0, W-1] x [0, H-1].
    """
    if image.dim() != 4 or flow.dim() != 4 or flow.shape[1] != 2:
        raise ConfigError(f"warp needs image (N,C,H,W) and flow (N,2,H,W), got "
                          f"{tuple(image.shape)} and {tuple(flow.shape)}")
    n, _, h, w = image.shape
    if flow.shape[0] != n or flow.shape[2:] != image.shape[2:]:
        raise ConfigError(f"warp: flow {tuple(flow.shape)} does not match image {tuple(image.shape)}")
    # Positions in float32 whatever the inputs' precision: under bf16 autocast a flow comes out
    # of the network in bf16, whose spacing is a whole pixel from x = 128 on (a quarter from
    # x = 32): sub-pixel motion would vanish and the valid mask would be off.
    flow = flow.float()
    ys = torch.arange(h, device=flow.device, dtype=torch.float32).view(1, h, 1)
    xs = torch.arange(w, device=flow.device, dtype=torch.float32).view(1, 1, w)
    px, py = xs + flow[:, 0], ys + flow[:, 1]
    # align_corners=True: pixel 0 -> -1 and pixel size-1 -> +1
    gx = 2.0 * px / max(w - 1, 1) - 1.0
    gy = 2.0 * py / max(h - 1, 1) - 1.0
    grid = torch.stack((gx, gy), dim=-1)
    warped = F.grid_sample(image.float(), grid, mode="bilinear", padding_mode="zeros",
                           align_corners=True).to(image.dtype)
    valid = (px >= 0) & (px <= w - 1) & (py >= 0) & (py <= h - 1)
    return warped, valid.unsqueeze(1).to(image.dtype)


def _conv_lrelu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.1, inplace=True))


class FlowNet(nn.Module):
    """Level 0: a small self-supervised flow network (PWC-Net decoder style).

    Features: per entry of `feat_channels` a stride-2 conv + a conv (LeakyReLU 0.1, no BN), so
    flow is estimated at 1/2^len(feat_channels) resolution (1/4 by default, the grid of the
    backbone's level1). Then cosine cost volume (d = 4, s = 1) concatenated with frame 1's
    features -> 5 densely connected 3x3 convs (each sees all previous outputs) -> 3x3 conv to
    2 channels. The flow is bilinearly upsampled to the input size and scaled by the size ratio.
    P^0 = the last dense layer's output (before the flow head): (B, C0, T, h, w).
    """

    def __init__(
        self,
        in_chans: int = 3,
        feat_channels: Sequence[int] = FLOW_FEAT_CHANNELS,
        dense_channels: Sequence[int] = FLOW_DENSE_CHANNELS,
        max_displacement: int = FLOW_MAX_DISPLACEMENT,
        stride: int = 1,
    ) -> None:
        super().__init__()
        if not feat_channels or not dense_channels:
            raise ConfigError("FlowNet needs at least one feature and one dense layer")
        layers: list[nn.Module] = []
        cin = in_chans
        for c in feat_channels:
            layers += [_conv_lrelu(cin, c, 2), _conv_lrelu(c, c)]
            cin = c
        self.encoder = nn.Sequential(*layers)
        self.max_displacement, self.stride = max_displacement, stride
        self.scale = 2 ** len(feat_channels)
        cin = len(displacements(max_displacement, stride)) ** 2 + feat_channels[-1]
        self.dense = nn.ModuleList()
        for c in dense_channels:
            self.dense.append(_conv_lrelu(cin, c))
            cin += c
        self.head = nn.Conv2d(cin, 2, 3, 1, 1)
        nn.init.normal_(self.head.weight, std=1e-3)  # start near zero flow
        nn.init.zeros_(self.head.bias)
        self.out_channels = dense_channels[-1]

    def _decode(self, g1: Tensor, g2: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        cv = F.leaky_relu(cost_volume(g1, g2, self.max_displacement, self.stride), 0.1)
        x = torch.cat([cv, g1], dim=1)
        hidden = x
        for layer in self.dense:
            hidden = layer(x)
            x = torch.cat([x, hidden], dim=1)
        low = self.head(x)
        h, w = size
        flow = F.interpolate(low, size=size, mode="bilinear", align_corners=False)
        ratio = torch.tensor([w / low.shape[-1], h / low.shape[-2]], dtype=flow.dtype,
                             device=flow.device)
        return flow * ratio.view(1, 2, 1, 1), hidden

    def forward(self, frame1: Tensor, frame2: Tensor) -> tuple[Tensor, Tensor]:
        """Flow (N, 2, H, W) from frame1 to frame2, and hidden motion features (N, C0, h, w)."""
        n = frame1.shape[0]
        g = self.encoder(torch.cat([frame1, frame2], dim=0))
        return self._decode(g[:n], g[n:], frame1.shape[-2:])

    def forward_clip(self, video: Tensor) -> tuple[Tensor, Tensor]:
        """Pairs (t, t+1), last frame with itself: flow (B, 2, T, H, W), P^0 (B, C0, T, h, w).

        Each frame is encoded once and its features reused for both pairs it belongs to.
        """
        b, c, t, h, w = video.shape
        g = self.encoder(video.transpose(1, 2).reshape(b * t, c, h, w))
        g = g.view(b, t, *g.shape[1:])
        g_next = torch.cat([g[:, 1:], g[:, -1:]], dim=1)
        flow, hidden = self._decode(g.flatten(0, 1), g_next.flatten(0, 1), (h, w))
        return _to_clip(flow, b, t), _to_clip(hidden, b, t)


def _frames(x: Tensor) -> Tensor:
    """(B, C, T, H, W) -> (B*T, C, H, W)."""
    b, c, t, h, w = x.shape
    return x.transpose(1, 2).reshape(b * t, c, h, w)


def _to_clip(x: Tensor, b: int, t: int) -> Tensor:
    """(B*T, C, H, W) -> (B, C, T, H, W)."""
    return x.view(b, t, *x.shape[1:]).transpose(1, 2)


class PrimeMotionBlock(nn.Module):
    """P^l from backbone features F^l (B, C, T, H, W) -> (B, Cp, T, H, W) (seed [0031]-[0036]).

    1x1x1 conv to C // beta + BN + ReLU; cosine cost volume of pairs (t, t+1), last frame with
    itself (M = D^2 channels) + BN + ReLU; concat with the reduced features; 3x3 conv applied per
    frame (kernel 1x3x3) + BN + ReLU. Cp defaults to C // beta.
    """

    def __init__(
        self,
        in_channels: int,
        beta: int = BETA,
        max_displacement: int = MAX_DISPLACEMENT,
        stride: int = CV_STRIDE,
        out_channels: int | None = None,
    ) -> None:
        super().__init__()
        if beta < 1:
            raise ConfigError(f"PrimeMotionBlock beta must be >= 1, got {beta}")
        self.reduced_channels = max(1, in_channels // beta)
        self.out_channels = out_channels or self.reduced_channels
        self.max_displacement, self.stride = max_displacement, stride
        self.cost_channels = len(displacements(max_displacement, stride)) ** 2
        cr, m = self.reduced_channels, self.cost_channels
        self.reduce = nn.Conv3d(in_channels, cr, 1, bias=False)
        self.reduce_bn = nn.BatchNorm3d(cr)
        self.cost_bn = nn.BatchNorm3d(m)
        self.conv = nn.Conv3d(cr + m, self.out_channels, (1, 3, 3), padding=(0, 1, 1), bias=False)
        self.bn = nn.BatchNorm3d(self.out_channels)

    def forward(self, x: Tensor) -> Tensor:
        b, _, t, _, _ = x.shape
        r = F.relu(self.reduce_bn(self.reduce(x)))
        nxt = torch.cat([r[:, :, 1:], r[:, :, -1:]], dim=2)
        cv = cost_volume(_frames(r), _frames(nxt), self.max_displacement, self.stride)
        cv = F.relu(self.cost_bn(_to_clip(cv, b, t)))
        return F.relu(self.bn(self.conv(torch.cat([r, cv], dim=1))))


class Fusion(nn.Module):
    """Z^l = F^l + g^l(P^l), g a 1x1x1 conv initialized to zero: fusion starts as identity."""

    def __init__(self, motion_channels: int, feature_channels: int) -> None:
        super().__init__()
        self.proj = nn.Conv3d(motion_channels, feature_channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, features: Tensor, motion: Tensor) -> Tensor:
        return features + self.proj(motion)


def resample_to(x: Tensor, size: Sequence[int]) -> Tensor:
    """Put a lower level's (B, C, T, H, W) map on an upper level's (T, H, W) grid.

    Area average (adaptive average pooling) when shrinking in every dimension, which is the
    case between backbone levels (the upper grid is coarser); trilinear interpolation otherwise.
    """
    size = tuple(int(s) for s in size)
    if tuple(x.shape[2:]) == size:
        return x
    if all(a >= s for a, s in zip(x.shape[2:], size, strict=True)):
        return F.adaptive_avg_pool3d(x, size)
    return F.interpolate(x, size=size, mode="trilinear", align_corners=False)


class LevelPredictor(nn.Module):
    """f_delta(x) = W2_delta ReLU(W1 x), x = [P^l_t, P^{l-1}_t]; predicts P^{l-1}_{t+delta}.

    Pointwise (a 1x1x1 conv), so it runs on sampled vectors: inputs (..., C) channel-last.
    W1 is shared by every delta; one W2 per delta (seed [0040]).
    """

    def __init__(
        self, c_upper: int, c_lower: int, hidden: int | None = None,
        deltas: Sequence[int] = DELTAS,
    ) -> None:
        super().__init__()
        if not deltas or min(deltas) < 1:
            raise ConfigError(f"LevelPredictor deltas must be >= 1, got {tuple(deltas)}")
        self.deltas = tuple(int(d) for d in deltas)
        hidden = hidden or c_upper  # DPC-style: hidden width = the predicting feature's width
        self.w1 = nn.Linear(c_upper + c_lower, hidden)
        self.w2 = nn.ModuleList(nn.Linear(hidden, c_lower) for _ in self.deltas)

    def forward(self, upper: Tensor, lower: Tensor) -> dict[int, Tensor]:
        """upper (..., Cu), lower (..., Cl) at the same positions -> {delta: (..., Cl)}."""
        h = F.relu(self.w1(torch.cat([upper, lower], dim=-1)))
        return {d: w2(h) for d, w2 in zip(self.deltas, self.w2, strict=True)}
