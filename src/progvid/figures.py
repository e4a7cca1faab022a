"""Figures: matplotlib helpers every layer may use (the ground floor: no models, no tasks).

Plots use matplotlib's Agg backend (selected by `pyplot()`, so importing this module never
touches a display). Clips are uint8 (T, H, W, C) tensors, as the decoder yields them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .errors import ProgvidError
from .metrics import read_metrics, stage_changes

MAX_COLUMNS = 8


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, out_png: str | Path) -> Path:
    """Lay out, write (creating the folder) and close a matplotlib figure; returns the path
    written: `.png` is added to a name without a suffix, an unknown suffix or a folder that
    cannot be written is a one-line error naming the file."""
    plt = pyplot()
    out = Path(out_png)
    if not out.suffix:
        out = out.with_name(out.name + ".png")
    try:
        kinds = fig.canvas.get_supported_filetypes()
        if out.suffix[1:].lower() not in kinds:
            raise ProgvidError(f"{out}: unknown picture format {out.suffix!r} (use one of: "
                               f"{', '.join('.' + k for k in sorted(kinds))})")
        fig.tight_layout()
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(out, dpi=100)
        except OSError as exc:
            raise ProgvidError(f"{out}: cannot write the picture ({exc.strerror or exc})") from None
    finally:
        plt.close(fig)
    return out


def spread_indices(total: int, frames: int | None) -> list[int]:
    k = max(1, min(frames or MAX_COLUMNS, MAX_COLUMNS, total))
    return sorted({int(round(x)) for x in np.linspace(0, total - 1, k)})


def recon_figure(
    result: dict[str, Tensor], out_png: str | Path, frames: int | None = None,
    title: str | None = None,
) -> Path:
    """Save a grid PNG: rows original / masked / reconstruction (and any further uint8 clips of
    `result`, e.g. the norm-pix rows of `progvid.viz.paste_prediction`), columns up to 8 frames
    (`frames` columns when given) spread evenly over the clip."""
    plt = pyplot()
    rows = ("original", "masked", "reconstruction",
            *(k for k in result if k not in ("original", "masked", "reconstruction", "mask")))
    cols = spread_indices(int(result["original"].shape[0]), frames)
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
                ax.set_ylabel(name.replace(", ", ",\n"), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, out_png)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v)


def plot_losses(
    metrics_jsonl_paths: Sequence[str | Path], out_png: str | Path,
    keys: Sequence[str] = ("loss",),
) -> Path:
    """Save a PNG with one row of panels per key in `keys` (each on its own y axis, so `loss`
    and `lr` are both readable): the key vs step, plus a panel vs cumulative `flops` when the
    records carry it; one colour per run; dotted vertical lines mark where `stage` changes.
    A key that no run records is an error naming it."""
    plt = pyplot()
    runs = []
    for p in metrics_jsonl_paths:
        path = Path(p)
        name = path.name if path.is_dir() else (path.parent.name if path.stem == "metrics"
                                                else path.stem)
        runs.append((name or str(path), read_metrics(path)))
    keys = list(dict.fromkeys(keys))  # each key once, in order
    absent = [k for k in keys if not any(_is_number(r.get(k)) for _, recs in runs for r in recs)]
    if absent:
        names = ", ".join(str(p) for p in metrics_jsonl_paths)
        raise ProgvidError(f"{names}: no records with {', '.join(absent)}")
    with_flops = any(_is_number(r.get("flops")) for _, recs in runs for r in recs)
    axes_x = ["step"] + (["flops"] if with_flops else [])
    fig, axes = plt.subplots(len(keys), len(axes_x), squeeze=False, sharex="col",
                             figsize=(6.0 * len(axes_x), 0.6 + 3.0 * len(keys)))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, key in enumerate(keys):
        for col, xkey in enumerate(axes_x):
            ax = axes[row][col]
            for i, (name, recs) in enumerate(runs):
                colour = colours[i % len(colours)]
                pts = [(r[xkey], r[key]) for r in recs if _is_number(r.get(xkey))
                       and _is_number(r.get(key))]
                if pts:
                    xs, ys = zip(*pts, strict=True)
                    ax.plot(xs, ys, color=colour, label=name)
                for rec in stage_changes(recs):
                    if _is_number(rec.get(xkey)):
                        ax.axvline(rec[xkey], color=colour, linestyle=":", alpha=0.6, linewidth=1)
            ax.set_ylabel(key)
            ax.grid(alpha=0.3)
            if row == len(keys) - 1:
                ax.set_xlabel("step" if xkey == "step" else "cumulative FLOPs")
            if row == 0 and col == 0:
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


def flow_key(size: int = 65, max_norm: float = 1.0) -> Tensor:
    """The legend of `flow_to_color`: uint8 RGB (size, size, 3), the flow at each pixel being
    its offset from the centre scaled so the inscribed circle's rim is `max_norm` (hue =
    direction, saturation = magnitude; outside the rim darker, as out-of-range flow)."""
    r = torch.linspace(-1.0, 1.0, size) * max_norm
    v, u = torch.meshgrid(r, r, indexing="ij")  # rows go down (+v), columns right (+u)
    return flow_to_color(torch.stack([u, v]), max_norm=max_norm)


def confusion_figure(confusion: list[list[int]], names: list[str] | None,
                     out_png: str | Path) -> None:
    """Row-normalized confusion matrix (rows: true class) with class names when few."""
    plt = pyplot()
    m = torch.tensor(confusion, dtype=torch.float)
    m = m / m.sum(dim=1, keepdim=True).clamp(min=1)
    k = m.shape[0]
    fig, ax = plt.subplots(figsize=(2 + 0.4 * k, 2 + 0.4 * k))
    ax.imshow(m.numpy(), cmap="Blues", vmin=0, vmax=1)
    labels = names if names and len(names) == k else [str(i) for i in range(k)]
    if k <= 40:
        ax.set_xticks(range(k), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(k), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion (row-normalized)")
    save_figure(fig, out_png)
