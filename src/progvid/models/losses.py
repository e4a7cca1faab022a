"""HCML losses: generalized Charbonnier photometric / smoothness terms and InfoNCE.

Flow convention (as in `progvid.models.motion.warp`): flow (N, 2, H, W), channels (u, v) = the
(x, y) displacement in pixels from frame1 to frame2, so warping frame2 by the flow rebuilds
frame1: warped(y, x) = frame2(y + v, x + u).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from progvid.errors import ConfigError

from .motion import warp

CHARBONNIER_ALPHA = 0.45  # seed [0053] and UnFlow: generalized Charbonnier exponent
CHARBONNIER_EPS = 1e-3  # seed [0053]
# Smoothness weight. With this Charbonnier (alpha 0.45, eps 1e-3) the smoothness term acts like
# total variation with a kink at zero; at weight 1 it dominates the photometric term and the flow
# net stays a near-constant field: on frames shifted by up to 3 px its error is 2.3 px after 400
# steps (zero flow: 2.6 px), at 0.1 it is 0.7 px after 150 (bench/flow_smoothness.md). Tune per data.
ZETA = 0.1
TAU = 0.07  # InfoNCE temperature for cosine similarity (MoCo/CMC practice; DPC uses raw dot)


def charbonnier(x: Tensor, alpha: float = CHARBONNIER_ALPHA, eps: float = CHARBONNIER_EPS) -> Tensor:
    """Elementwise generalized Charbonnier penalty rho(x) = (x^2 + eps^2)^alpha."""
    return (x * x + eps * eps).pow(alpha)


def photometric_loss(
    frame1: Tensor,
    frame2: Tensor,
    flow: Tensor,
    valid_mask: Tensor | None = None,
    *,
    alpha: float = CHARBONNIER_ALPHA,
    eps: float = CHARBONNIER_EPS,
) -> Tensor:
    """Charbonnier of frame1 - warp(frame2, flow), averaged over valid pixels only.

    Pixels whose sample point leaves frame2 carry weight 0 (seed eq. 3). `valid_mask` (N,1,H,W),
    if given, is multiplied with the warp's own mask (e.g. to add an occlusion mask).
    """
    warped, mask = warp(frame2, flow)
    if valid_mask is not None:
        mask = mask * valid_mask
    # where() rather than multiply: an invalid pixel holding inf/nan must not leak into the sum
    rho = charbonnier(frame1 - warped, alpha, eps)
    rho = torch.where(mask > 0, rho, torch.zeros((), dtype=rho.dtype, device=rho.device))
    weight = mask.expand_as(rho)
    return (rho * weight).sum() / weight.sum().clamp_min(1.0)


def smoothness_loss(
    flow: Tensor, *, alpha: float = CHARBONNIER_ALPHA, eps: float = CHARBONNIER_EPS
) -> Tensor:
    """First-order smoothness: mean Charbonnier of the x and y finite differences of u and v."""
    dx = flow[..., :, 1:] - flow[..., :, :-1]
    dy = flow[..., 1:, :] - flow[..., :-1, :]
    # seed eq. 4 sums the four terms: u_x, u_y, v_x, v_y (each a mean over pixels)
    return flow.shape[1] * (charbonnier(dx, alpha, eps).mean() + charbonnier(dy, alpha, eps).mean())


def reconstruction_loss(
    frame1: Tensor,
    frame2: Tensor,
    flow: Tensor,
    zeta: float = ZETA,
    valid_mask: Tensor | None = None,
) -> Tensor:
    """L_recon = L_photometric + zeta * L_smoothness (seed [0052])."""
    return photometric_loss(frame1, frame2, flow, valid_mask) + zeta * smoothness_loss(flow)


def info_nce(pred: Tensor, target: Tensor, tau: float = TAU) -> Tensor:
    """InfoNCE over one (B*N*T) x (B*N*T) cosine-similarity matrix.

    pred, target: (B, N, T, C) = B videos, N sampled locations, T time steps. The positive of
    pred[b, n, t] is target[b, n, t]; every other target is a negative (spatial, temporal and
    easy negatives, see `negative_masks`). Mean cross-entropy over all anchors.
    """
    if pred.shape != target.shape or pred.dim() != 4:
        raise ConfigError(
            f"info_nce needs pred and target of equal shape (B, N, T, C), got "
            f"{tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if tau <= 0:
        raise ConfigError(f"info_nce temperature must be > 0, got {tau}")
    p = F.normalize(pred.reshape(-1, pred.shape[-1]), dim=1)
    t = F.normalize(target.reshape(-1, target.shape[-1]), dim=1)
    logits = p @ t.t() / tau
    labels = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, labels)


def info_nce_bounds(k: int, tau: float) -> tuple[float, float]:
    """(absolute minimum, value for orthogonal negatives) of InfoNCE with k candidates.

    With a perfect prediction (positive similarity 1) each anchor's loss is
    log(1 + sum_neg exp((s - 1)/tau)): its infimum uses s = -1 for every negative, and
    mutually orthogonal targets (s = 0) give log(1 + (k - 1) exp(-1/tau)).
    """
    return (math.log1p((k - 1) * math.exp(-2.0 / tau)), math.log1p((k - 1) * math.exp(-1.0 / tau)))


def negative_masks(b: int, n: int, t: int, device: torch.device | str | None = None) -> dict[str, Tensor]:
    """Boolean (K, K) masks, K = b*n*t, rows = anchors, in `info_nce`'s flattening (b, n, t).

    positive: same video, location and time (1 per row); spatial: same video, other location,
    any time ((n-1)t); temporal: same video and location, other time (t-1); easy: other video
    ((b-1)nt). The three negative sets partition all K - 1 negatives (seed [0042]-[0047]).
    """
    idx = torch.arange(b * n * t, device=device)
    vid, loc, tim = idx // (n * t), (idx // t) % n, idx % t
    same_v = vid[:, None] == vid[None, :]
    same_l = loc[:, None] == loc[None, :]
    same_t = tim[:, None] == tim[None, :]
    return {
        "positive": same_v & same_l & same_t,
        "spatial": same_v & ~same_l,
        "temporal": same_v & same_l & ~same_t,
        "easy": ~same_v,
    }


def sample_locations(
    h: int, w: int, n: int, generator: torch.Generator | None = None, *, batch: int | None = None
) -> Tensor:
    """n distinct flat spatial indices in [0, h*w) (all of them, shuffled, if n >= h*w).

    With `batch`, one independent draw per video: (batch, n'), else (n',), n' = min(n, h*w).
    Drawn on the generator's device (CPU by default) so runs are reproducible across devices.
    """
    if n < 1 or h < 1 or w < 1:
        raise ConfigError(f"sample_locations needs h, w, n >= 1, got h={h} w={w} n={n}")
    k = min(n, h * w)
    dev = generator.device if generator is not None else torch.device("cpu")
    if batch is None:
        return torch.randperm(h * w, generator=generator, device=dev)[:k]
    noise = torch.rand(batch, h * w, generator=generator, device=dev)
    return noise.argsort(dim=1)[:, :k]
