"""Pictures of what a checkpoint does on a video: VideoMAE reconstructions and HCML flow.

Checkpoints come from `progvid.loading`, clips from `progvid.data.clips.test_clip` (the
checkpoint's own data settings); the drawing helpers are in `progvid.figures`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .config import DataConfig
from .data.clips import test_clip
from .data.video import probe
from .figures import flow_key, flow_to_color, pyplot, recon_figure, save_figure, spread_indices
from .loading import HCML, VIDEOMAE, load_model
from .models.motion import warp
from .models.videomae import VideoMAE

MASK_GREY = 0.25  # fill of hidden patches in the `masked` picture, in [0, 1] pixel units
NORM_SPAN = 2.0  # token-normalised pictures show -NORM_SPAN..+NORM_SPAN std as black..white


def _to_uint8(model: VideoMAE, tokens: Tensor, grid: tuple[int, int, int]) -> Tensor:
    """[0, 1] pixel tokens (1, N, D) -> uint8 clip (T, H, W, C) on the CPU."""
    clip = model.unpatchify(tokens, grid)[0].permute(1, 2, 3, 0)  # (T, H, W, C)
    return (clip.clamp(0, 1) * 255).round().to(torch.uint8).cpu()


@torch.no_grad()
def paste_prediction(model: VideoMAE, video: Tensor, pred: Tensor, mask: Tensor) -> dict[str, Tensor]:
    """Turn decoder output into pictures: see `reconstruct` for the returned dict.

    video: normalized (1, C, T, H, W); pred: (1, N_masked, D) in the model's target units;
    mask: bool (1, N), True = masked. With `norm_pix_loss` each predicted token is mapped back
    to pixels as ``pred * (std + 1e-6) + mean`` with the mean/std (per channel) of that token in
    the ORIGINAL clip, the inverse of `VideoMAE.normalized_target`. This is the standard
    VideoMAE/MAE visualisation; it reveals the first two moments of each hidden token, so the
    picture shows how well the model predicts structure, not absolute colour/brightness. So that
    the picture cannot flatter the model, a norm-pix model also gets the rows
    `zero output, un-normalised` (what that copying paints with no model at all),
    `target, token-normalised` and `prediction, token-normalised` (hidden tokens only, the
    loss's own units, -2..+2 std shown black..white; visible tokens grey)."""
    if video.ndim != 5 or video.shape[0] != 1:
        raise ValueError(f"expected one normalized clip (1, C, T, H, W), got {tuple(video.shape)}")
    grid = model.encoder.grid(*video.shape[2:])
    pixels = video.float() * model.pixel_std.float() + model.pixel_mean.float()  # [0, 1]
    tokens = model.patchify(pixels)  # (1, N, D)
    mask = mask.to(tokens.device).reshape(1, -1).bool()
    if mask.shape[1] != tokens.shape[1]:
        raise ValueError(f"mask has {mask.shape[1]} tokens, the clip {tokens.shape[1]}")
    hidden = tokens[mask]  # (N_masked, D)
    guess = pred.float().reshape(hidden.shape)
    extra: dict[str, Tensor] = {}
    if model.norm_pix_loss:
        c = model.in_chans
        per = hidden.reshape(hidden.shape[0], -1, c)  # (N_masked, t*p*p, C)
        mean = per.mean(dim=1, keepdim=True)
        std = per.var(dim=1, unbiased=True, keepdim=True).sqrt()

        def unnorm(x: Tensor) -> Tensor:
            return (x.reshape(per.shape) * (std + 1e-6) + mean).reshape(hidden.shape)

        def shown(x: Tensor) -> Tensor:  # normalized units -> [0, 1]: 0 grey, +-2 std the ends
            return (0.5 + x.reshape(hidden.shape) / (2 * NORM_SPAN)).clamp(0, 1)

        # what the un-normalisation alone paints (a zero output: each hidden token's own mean
        # colour, copied from the input), and the prediction against its target before it
        for name, values in (("zero output, un-normalised", mean.expand(per.shape).reshape(hidden.shape)),
                             ("target, token-normalised", shown((per - mean) / (std + 1e-6))),
                             ("prediction, token-normalised", shown(guess))):
            canvas = torch.full_like(tokens, MASK_GREY)
            canvas[mask] = values
            extra[name] = _to_uint8(model, canvas, grid)
        guess = unnorm(guess)
    recon, masked = tokens.clone(), tokens.clone()
    recon[mask] = guess
    masked[mask] = MASK_GREY
    hidden_px = model.unpatchify(mask[..., None].expand_as(tokens).float(), grid)[0, 0] > 0.5
    return {
        "original": _to_uint8(model, tokens, grid),
        "masked": _to_uint8(model, masked, grid),
        "reconstruction": _to_uint8(model, recon, grid),
        **extra,
        "mask": hidden_px.cpu(),
    }


@torch.no_grad()
def reconstruct(
    model: VideoMAE, video: Tensor, mask: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Run `model` on one normalized clip (1, C, T, H, W) and return uint8 (T, H, W, C) clips
    `original`, `masked` (hidden patches grey) and `reconstruction` (prediction pasted into the
    visible original), plus `mask`: bool (T, H, W), True on hidden pixels. The mask is drawn
    with the model's masking (seeded by `generator`) when not given. See `paste_prediction`."""
    was_training = model.training
    model.eval()
    try:
        if mask is None:
            _, _, t, h, w = video.shape
            mask = model.random_mask(1, t, video.device, generator, img_size=(h, w))
        out = model(video, mask.to(video.device).reshape(1, -1).bool())
    finally:
        model.train(was_training)
    return paste_prediction(model, video, out.pred, out.mask)


def input_note(video_path: str | Path, d: DataConfig) -> str | None:
    """What the test preprocessing does to a video's frames to reach the model's input size
    (None when they already have it): e.g. "320x240 video shrunk to the model's input size
    (short side 240 -> 32, centre crop 32x32)"."""
    info = probe(video_path)
    s = d.input_size
    if info.width == s and info.height == s:
        return None
    short = min(info.width, info.height)
    verb = "shrunk" if short > s else "enlarged" if short < s else "cropped"
    crop = f", centre crop {s}x{s}" if info.width != info.height else ""
    return (f"{info.width}x{info.height} video {verb} to the model's input size "
            f"(short side {short} -> {s}{crop})")


def _say(note: str | None, video_path: str | Path) -> None:
    if note:
        print(f"[progvid] {Path(video_path).name}: {note}", file=sys.stderr)


def recon_from_checkpoint(
    checkpoint_dir: str | Path, video_path: str | Path, out_png: str | Path, *, seed: int = 0
) -> Path:
    """Reconstruct the centred test clip of `video_path` with a pre-trained VideoMAE (any source
    `progvid.loading` accepts with a decoder) and save the `recon_figure` PNG. The clip has the
    model's num_frames and the checkpoint's data settings (sampler, stride, short-side resize to
    the input size, centre crop); the mask is the model's own, seeded by `seed`. When the video
    is resized to the model's input size, it says so (stderr and the title)."""
    model, ckpt = load_model(checkpoint_dir, VIDEOMAE)
    assert isinstance(model, VideoMAE)
    video = test_clip(ckpt.data, video_path, frames=int(model.num_frames))
    note = input_note(video_path, ckpt.data)
    _say(note, video_path)
    result = reconstruct(model, video, generator=torch.Generator().manual_seed(seed))
    title = f"{Path(video_path).name} - {ckpt.path.name} (mask ratio {model.mask_ratio:g})"
    return recon_figure(result, out_png, title=title + (f"\n{note}" if note else ""))


FLOW_COLUMNS = ("frame t", "frame t+1", "flow t -> t+1", "t+1 warped to t")
MIN_RIM = 1.0  # px: the colour key's rim is never below one pixel of motion


def flow_pictures(video: Tensor, flow: Tensor, mean: Tensor, std: Tensor, *, pairs: int = 4
                  ) -> tuple[list[int], list[list[np.ndarray]], float]:
    """(frame indices t, per pair [frame t, frame t+1, flow colours, t+1 warped to t], rim):
    video (1, C, T, H, W) normalized with `mean`/`std` (C, 1, 1), flow (1, 2, T, H, W) of the
    pairs (t, t+1). Colours use one scale for every pair, the rim = the largest flow shown but
    at least `MIN_RIM` px, so a field of a hundredth of a pixel looks still (white), not
    saturated."""
    t_count = video.shape[2]
    ts = spread_indices(t_count - 1, pairs) if t_count > 1 else [0]
    largest = float(flow[0, :, ts].norm(dim=0).max())
    rim = max(largest, MIN_RIM)

    def img(x: Tensor) -> np.ndarray:  # normalized (3, H, W) -> displayable (H, W, 3)
        return (x * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()

    rows = []
    for t in ts:
        f0, f1, fl = video[0, :, t], video[0, :, min(t + 1, t_count - 1)], flow[0, :, t]
        warped, valid = warp(f1[None], fl[None])
        rows.append([img(f0), img(f1), flow_to_color(fl, max_norm=rim).numpy(),
                     img(warped[0]) * valid[0].permute(1, 2, 0).numpy()])
    return ts, rows, rim


def flow_from_checkpoint(checkpoint: str | Path, video_path: str | Path, out_png: str | Path,
                         *, pairs: int = 4) -> Path:
    """HCML level 0 on a clip, one row per frame pair (up to `pairs`, spread over the clip):
    frame t, frame t+1, the flow field in the Middlebury colour code (hue = direction,
    saturation = magnitude; white = still) and frame t+1 warped back onto frame t (out-of-image
    pixels dark), with the colour-wheel key (`flow_pictures` for the scale)."""
    plt = pyplot()
    net, ckpt = load_model(checkpoint, HCML)
    d = ckpt.data
    video = test_clip(d, video_path)
    note = input_note(video_path, d)
    _say(note, video_path)
    with torch.no_grad():
        flow, _ = net.flow_net.forward_clip(video)  # (1, 2, T, H, W)
    ts, rows, rim = flow_pictures(video, flow, torch.tensor(d.mean).view(3, 1, 1),
                                  torch.tensor(d.std).view(3, 1, 1), pairs=pairs)
    largest = float(flow[0, :, ts].norm(dim=0).max())
    cols = len(FLOW_COLUMNS) + 1
    fig, axes = plt.subplots(len(ts), cols, figsize=(2.0 * cols, 2.0 * len(ts) + 0.8),
                             squeeze=False)
    for i, (t, pics) in enumerate(zip(ts, rows, strict=True)):
        for j, pic in enumerate(pics):
            ax = axes[i][j]
            ax.imshow(pic)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(FLOW_COLUMNS[j], fontsize=9)
            if j == 0:
                ax.set_ylabel(f"t = {t}", fontsize=9)
        axes[i][-1].axis("off")
    key = axes[0][-1]
    key.axis("on")
    key.imshow(flow_key(65, rim).numpy(), extent=(-rim, rim, rim, -rim))
    key.set_title(f"key (rim {rim:.2g} px)", fontsize=9)
    key.set_xlabel("u: px right", fontsize=7)
    key.set_ylabel("v: px down", fontsize=7)
    key.tick_params(labelsize=6)
    title = f"{Path(video_path).name} - {ckpt.path.name} (largest flow {largest:.2g} px)"
    fig.suptitle(title + (f"\n{note}" if note else ""), fontsize=10)
    return save_figure(fig, out_png)
