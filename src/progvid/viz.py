"""Pictures: VideoMAE reconstructions, loss curves, optical-flow colouring.

Plots use matplotlib's Agg backend (selected inside each function, so importing this module
never touches a display). Clips are uint8 (T, H, W, C) tensors, as the decoder yields them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from progvid.engine.checkpoint import META, load_meta, load_weights, resolve_resume
from progvid.errors import CheckpointError, ProgvidError
from progvid.models.videomae import IMAGENET_MEAN, IMAGENET_STD, VideoMAE

MASK_GREY = 0.25  # fill of hidden patches in the `masked` picture, in [0, 1] pixel units
MAX_COLUMNS = 8


def save_figure(fig: Any, out_png: str | Path) -> Path:
    """Lay out, write (creating the folder) and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


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
    picture shows how well the model predicts structure, not absolute colour/brightness."""
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
    if model.norm_pix_loss:
        c = model.in_chans
        per = hidden.reshape(hidden.shape[0], -1, c)  # (N_masked, t*p*p, C)
        mean = per.mean(dim=1, keepdim=True)
        std = per.var(dim=1, unbiased=True, keepdim=True).sqrt()
        guess = (guess.reshape(per.shape) * (std + 1e-6) + mean).reshape(hidden.shape)
    recon, masked = tokens.clone(), tokens.clone()
    recon[mask] = guess
    masked[mask] = MASK_GREY
    hidden_px = model.unpatchify(mask[..., None].expand_as(tokens).float(), grid)[0, 0] > 0.5
    return {
        "original": _to_uint8(model, tokens, grid),
        "masked": _to_uint8(model, masked, grid),
        "reconstruction": _to_uint8(model, recon, grid),
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


def _columns(total: int, frames: int | None) -> list[int]:
    k = max(1, min(frames or MAX_COLUMNS, MAX_COLUMNS, total))
    return sorted({int(round(x)) for x in np.linspace(0, total - 1, k)})


def recon_figure(
    result: dict[str, Tensor], out_png: str | Path, frames: int | None = None,
    title: str | None = None,
) -> Path:
    """Save a grid PNG: rows original / masked / reconstruction, columns up to 8 frames
    (`frames` columns when given) spread evenly over the clip."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = ("original", "masked", "reconstruction")
    cols = _columns(int(result["original"].shape[0]), frames)
    fig, axes = plt.subplots(len(rows), len(cols), squeeze=False,
                             figsize=(1.8 * len(cols) + 0.6, 1.8 * len(rows) + 0.6))
    for r, name in enumerate(rows):
        clip = result[name].cpu().numpy()
        for c, t in enumerate(cols):
            ax = axes[r][c]
            ax.imshow(clip[t].squeeze(-1) if clip.shape[-1] == 1 else clip[t],
                      cmap="gray" if clip.shape[-1] == 1 else None, vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"frame {t}", fontsize=9)
            if c == 0:
                ax.set_ylabel(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, out_png)


def load_pretrained(checkpoint: str | Path) -> tuple[VideoMAE, dict[str, Any], Path]:
    """(model in eval mode, meta, checkpoint folder) from a checkpoint or run folder."""
    path = resolve_resume(Path(checkpoint).parent, str(checkpoint))
    assert path is not None
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a checkpoint folder")
    meta = load_meta(path)
    hparams = meta.get("model") if isinstance(meta, dict) else None
    if not isinstance(hparams, dict):
        raise CheckpointError(f"{path / META}: no `model` hyper-parameters (not a VideoMAE "
                              "pre-training checkpoint)")
    try:
        model = VideoMAE.from_hparams({**hparams, "grad_checkpointing": False})
    except (TypeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path / META}: cannot build VideoMAE from `model` ({first})") from None
    try:
        model.load_state_dict(load_weights(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit the model in meta.json ({first})") from None
    return model.eval(), meta, path


def recon_from_checkpoint(
    checkpoint_dir: str | Path, video_path: str | Path, out_png: str | Path, *, seed: int = 0
) -> Path:
    """Reconstruct the centred test clip of `video_path` with a pre-training checkpoint (or the
    newest checkpoint of a run folder) and save the `recon_figure` PNG. The clip has the model's
    num_frames, the data config's sampler / sampling_rate, a short-side resize to img_size and a
    centre crop; the mask is the model's own, seeded by `seed`."""
    from progvid.data.sampling import TemporalSampler
    from progvid.data.transforms import CenterCrop, Normalize
    from progvid.data.video import probe, read_clip

    model, meta, path = load_pretrained(checkpoint_dir)
    data = meta.get("data") if isinstance(meta.get("data"), dict) else {}
    try:
        sampler = TemporalSampler(data.get("sampler", "stride"), int(model.num_frames),
                                  int(data.get("sampling_rate", 4)), data.get("clip_mode", "clamp"))
    except (TypeError, ValueError, ProgvidError) as exc:
        raise CheckpointError(f"{path / META}: bad `data` sampling settings ({exc})") from None
    size = model.img_size
    info = probe(video_path)
    indices = sampler(info.frames, train=False).tolist()
    clip = CenterCrop(size)(read_clip(video_path, indices, short_side=size))
    video = Normalize(model.hparams["mean"], model.hparams["std"])(clip).unsqueeze(0)
    result = reconstruct(model, video, generator=torch.Generator().manual_seed(seed))
    title = f"{Path(video_path).name} - {path.name} (mask ratio {model.mask_ratio:g})"
    return recon_figure(result, out_png, title=title)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Records of a metrics.jsonl (or of a run folder holding one); lines cut by a crash and
    non-object lines are skipped."""
    file = Path(path)
    if file.is_dir():
        file = file / "metrics.jsonl"
    if not file.is_file():
        raise ProgvidError(f"{file}: metrics file not found")
    records = []
    for line in file.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int | float):
            records.append(rec)
    return records


def stage_changes(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records where the `stage` field differs from the previous record's."""
    out, prev = [], None
    for i, rec in enumerate(records):
        stage = rec.get("stage")
        if i > 0 and stage is not None and prev is not None and stage != prev:
            out.append(rec)
        prev = stage if stage is not None else prev
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v)


def plot_losses(
    metrics_jsonl_paths: Sequence[str | Path], out_png: str | Path,
    keys: Sequence[str] = ("loss",),
) -> Path:
    """Save a PNG of `keys` vs step, one colour per run (plus a panel vs cumulative `flops`
    when the records carry it); dotted vertical lines mark where `stage` changes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = []
    for p in metrics_jsonl_paths:
        path = Path(p)
        name = path.name if path.is_dir() else (path.parent.name if path.stem == "metrics"
                                                else path.stem)
        runs.append((name or str(path), read_metrics(path)))
    if not any(_is_number(r.get(k)) for _, recs in runs for r in recs for k in keys):
        names = ", ".join(str(p) for p in metrics_jsonl_paths)
        raise ProgvidError(f"{names}: no records with {', '.join(keys)}")
    with_flops = any(_is_number(r.get("flops")) for _, recs in runs for r in recs)
    axes_x = ["step"] + (["flops"] if with_flops else [])
    fig, axes = plt.subplots(1, len(axes_x), squeeze=False, figsize=(6.0 * len(axes_x), 4.0))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ("-", "--", "-.", ":")
    for ax, xkey in zip(axes[0], axes_x, strict=True):
        for i, (name, recs) in enumerate(runs):
            colour = colours[i % len(colours)]
            for j, key in enumerate(keys):
                pts = [(r[xkey], r[key]) for r in recs if _is_number(r.get(xkey))
                       and _is_number(r.get(key))]
                if pts:
                    xs, ys = zip(*pts, strict=True)
                    label = name if len(keys) == 1 else f"{name}: {key}"
                    ax.plot(xs, ys, color=colour, linestyle=styles[j % len(styles)], label=label)
            for rec in stage_changes(recs):
                if _is_number(rec.get(xkey)):
                    ax.axvline(rec[xkey], color=colour, linestyle=":", alpha=0.6, linewidth=1)
        ax.set_xlabel("step" if xkey == "step" else "cumulative FLOPs")
        ax.set_ylabel(keys[0] if len(keys) == 1 else "value")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, out_png)


# Middlebury colour wheel (Baker et al. 2011): (steps, channel held at 255, ramped channel,
# ramp rising?) for the RY, YG, GC, CB, BM, MR segments.
_WHEEL_SEGMENTS = ((15, 0, 1, True), (6, 1, 0, False), (4, 1, 2, True),
                   (11, 2, 1, False), (13, 2, 0, True), (6, 0, 2, False))


def color_wheel() -> Tensor:
    """The 55-colour flow wheel, float (55, 3) in 0-255."""
    parts = []
    for steps, hold, ramp, rising in _WHEEL_SEGMENTS:
        seg = torch.zeros(steps, 3)
        seg[:, hold] = 255
        up = torch.floor(255 * torch.arange(steps, dtype=torch.float32) / steps)
        seg[:, ramp] = up if rising else 255 - up
        parts.append(seg)
    return torch.cat(parts)


def flow_to_color(flow: Tensor, max_norm: float | None = None) -> Tensor:
    """Optical flow (2, H, W) (u = rightward, v = downward) -> uint8 RGB (H, W, 3) with the
    Middlebury colour code: hue = direction, saturation = magnitude / `max_norm` (default: the
    largest magnitude in `flow`); zero flow is white, non-finite flow is shown as zero."""
    flow = torch.as_tensor(flow).float()
    if flow.ndim != 3 or flow.shape[0] != 2:
        raise ValueError(f"expected flow shaped (2, H, W), got {tuple(flow.shape)}")
    flow = torch.nan_to_num(flow, nan=0.0, posinf=0.0, neginf=0.0)
    u, v = flow[0], flow[1]
    rad = torch.sqrt(u * u + v * v)
    top = float(rad.max()) if max_norm is None else float(max_norm)
    rad = rad / max(top, 1e-8)
    wheel = color_wheel().to(flow.device) / 255  # (ncols, 3)
    ncols = wheel.shape[0]
    angle = torch.atan2(-v, -u) / torch.pi  # in [-1, 1]
    fk = (angle + 1) / 2 * (ncols - 1)
    k0 = fk.floor().long().clamp(0, ncols - 1)
    k1 = (k0 + 1) % ncols
    f = (fk - k0.float()).unsqueeze(-1)
    col = (1 - f) * wheel[k0] + f * wheel[k1]  # (H, W, 3)
    r = rad.unsqueeze(-1)
    col = torch.where(r <= 1, 1 - r * (1 - col), col * 0.75)  # out of range: darkened
    return torch.floor(255 * col.clamp(0, 1)).to(torch.uint8)


__all__ = [
    "color_wheel",
    "flow_to_color",
    "load_pretrained",
    "paste_prediction",
    "plot_losses",
    "read_metrics",
    "recon_figure",
    "recon_from_checkpoint",
    "reconstruct",
    "stage_changes",
]


def _clip_for(meta: dict[str, Any], video_path: str | Path, frames: int, size: int) -> Tensor:
    """The centred test clip a checkpoint's data settings describe: float (1, C, T, S, S)."""
    from progvid.data.sampling import TemporalSampler
    from progvid.data.transforms import CenterCrop, Normalize
    from progvid.data.video import probe, read_clip

    d = meta.get("data") or {}
    sampler = TemporalSampler(d.get("sampler", "stride"), frames, int(d.get("sampling_rate", 4)),
                              d.get("clip_mode", "clamp"))
    indices = sampler(probe(video_path).frames, train=False).tolist()
    clip = CenterCrop(size)(read_clip(video_path, indices, short_side=size))
    return Normalize(d.get("mean", IMAGENET_MEAN), d.get("std", IMAGENET_STD))(clip).unsqueeze(0)


def flow_from_checkpoint(checkpoint: str | Path, video_path: str | Path, out_png: str | Path,
                         *, pairs: int = 4) -> Path:
    """HCML level 0 on a clip: frame t, frame t+1, the flow field (colour wheel) and frame t+1
    warped back onto frame t (out-of-image pixels dark), for up to `pairs` frame pairs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from progvid.hcml_tasks import load_hcml
    from progvid.models.motion import warp

    net, meta, path = load_hcml(checkpoint)
    d = meta.get("data") or {}
    video = _clip_for(meta, video_path, int(d.get("num_frames", 8)), int(d.get("input_size", 112)))
    with torch.no_grad():
        flow, _ = net.eval().flow_net.forward_clip(video)  # (1, 2, T, H, W)
    mean = torch.tensor(d.get("mean", IMAGENET_MEAN)).view(3, 1, 1)
    std = torch.tensor(d.get("std", IMAGENET_STD)).view(3, 1, 1)

    def img(x: Tensor) -> np.ndarray:  # normalized (3, H, W) -> displayable (H, W, 3)
        return (x * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()

    t_count = video.shape[2]
    ts = _columns(t_count - 1, pairs)
    scale = float(flow[0, :, : t_count - 1].norm(dim=0).max().clamp(min=1e-6))
    fig, axes = plt.subplots(4, len(ts), figsize=(2.2 * len(ts), 9), squeeze=False)
    rows = ("frame t", "frame t+1", "flow t -> t+1", "t+1 warped to t")
    for j, t in enumerate(ts):
        f0, f1, fl = video[0, :, t], video[0, :, t + 1], flow[0, :, t]
        warped, valid = warp(f1[None], fl[None])
        pics = [img(f0), img(f1), flow_to_color(fl, max_norm=scale).numpy(),
                img(warped[0]) * valid[0].permute(1, 2, 0).numpy()]
        for i, pic in enumerate(pics):
            ax = axes[i][j]
            ax.imshow(pic)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(rows[i])
            if i == 0:
                ax.set_title(f"t = {t}")
    fig.suptitle(f"{Path(video_path).name} - {path.name} (max flow {scale:.2f} px)")
    return save_figure(fig, out_png)
