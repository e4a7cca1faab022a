"""The accuracy / training-cost trade-off plot (seed 000, FIG. 1), read from run folders.

A point is one pre-training run: its evaluation top-1 against its measured training cost (the
last `flops` of `metrics.jsonl`: cumulative training multiply-accumulates, shown in PFLOPs) and
against its nominal budget (epochs at 16 frames: N_e * scale * f_ref / 16, the frames processed
in units of 16-frame epochs). The evaluation is `eval.json` (written by `progvid eval`) or else
`probe.json`, each with `top1` (a fraction in [0, 1] or a percentage). A fine-tuning run folder
whose `model.init` names a pre-training run is plotted at that run's cost.

Curves are methods: a `method` key of the result file wins; otherwise `multigrid` for
`plan.multigrid`, `videomae` for one training stage and `tpl` for several.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..config import load_config
from ..errors import ProgvidError
from ..figures import pyplot, save_figure
from ..metrics import read_metrics

RESULT_FILES = ("eval.json", "probe.json")
GROUPS = ("method", "model", "method+model")
PFLOPS_LABEL = "training PFLOPs (multiply-accumulates)"
EPOCHS_LABEL = "budget (epochs at 16 frames)"


def read_result(run_dir: Path) -> tuple[dict[str, Any], str] | None:
    """The first evaluation file of a run that has a numeric `top1`, and its name."""
    for name in RESULT_FILES:
        path = run_dir / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ProgvidError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
        top1 = data.get("top1") if isinstance(data, dict) else None
        if isinstance(top1, int | float) and not isinstance(top1, bool):
            return data, name
        raise ProgvidError(f"{path}: no numeric `top1`")
    return None


def _pretrain_dir(run_dir: Path, cfg: Any) -> tuple[Path, Any]:
    """The pre-training run behind a folder: itself, or a fine-tuning run's `model.init`."""
    if getattr(cfg, "task", None) == "pretrain":
        return run_dir, cfg
    init = getattr(getattr(cfg, "model", None), "init", None)
    if getattr(cfg, "task", None) == "finetune" and init:
        for parent in (Path(init), *list(Path(init).parents)[:3]):
            if (parent / "config.yaml").is_file() and (parent / "metrics.jsonl").is_file():
                found = load_config(parent / "config.yaml")
                if found.task == "pretrain":
                    return parent, found
    raise ProgvidError(f"{run_dir}: not a pre-training run (task {getattr(cfg, 'task', None)!r}) "
                       "and no pre-training run found through model.init")


def method_of(cfg: Any, result: dict[str, Any]) -> str:
    """`method` of the result file, else multigrid / videomae (one stage) / tpl (several)."""
    if isinstance(result.get("method"), str) and result["method"]:
        return result["method"]
    if cfg.plan.multigrid:
        return "multigrid"
    return "videomae" if sum(st.share > 0 for st in cfg.plan.stages) == 1 else "tpl"


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


def collect_points(run_dirs: Iterable[str | Path],
                   warn: Callable[[str], None] = _warn) -> list[dict[str, Any]]:
    """One point per run with a result: run, name, method, model, stages, top1 (as read),
    top1_pct, pflops, epochs_at_16, source. Runs without a result file are skipped with a
    warning; a path that is not a folder is an error."""
    points = []
    for item in run_dirs:
        run = Path(item)
        if not run.is_dir():
            raise ProgvidError(f"{run}: run folder not found")
        found = read_result(run)
        if found is None:
            warn(f"{run}: skipped, no evaluation result ({' or '.join(RESULT_FILES)})")
            continue
        result, source = found
        if not (run / "config.yaml").is_file():
            warn(f"{run}: skipped, no config.yaml")
            continue
        pre_dir, cfg = _pretrain_dir(run, load_config(run / "config.yaml"))
        flops = [r["flops"] for r in read_metrics(pre_dir) if isinstance(r.get("flops"), int | float)]
        if not flops:
            warn(f"{pre_dir / 'metrics.jsonl'}: skipped, no record with `flops`")
            continue
        top1 = float(result["top1"])
        b = cfg.budget
        points.append({
            "run": str(run), "name": run.name, "method": method_of(cfg, result),
            "model": cfg.model.size, "stages": [st.frames for st in cfg.plan.stages if st.share > 0],
            "top1": top1, "top1_pct": top1 * 100 if top1 <= 1.0 else top1,
            "pflops": flops[-1] / 1e15, "epochs_at_16": b.epochs * b.scale * b.ref_frames / 16,
            "source": source, "val_loss": result.get("val_loss")})
    return points


def _group(point: dict[str, Any], group_by: str) -> str:
    if group_by == "model":
        return point["model"]
    if group_by == "method+model":
        return f"{point['method']} ({point['model']})"
    return point["method"]


METRICS = {"top1": ("top1_pct", "top-1 accuracy (%)"),
           "val_loss": ("val_loss", "held-out masked-reconstruction loss (lower is better)")}


def plot_tradeoff(run_dirs: Iterable[str | Path], out_png: str | Path, *, group_by: str = "method",
                  metric: str = "top1", warn: Callable[[str], None] = _warn,
                  levels: dict[str, float] | None = None) -> Path:
    """`metric` (top-1, or the held-out MAE loss recorded next to it) vs training PFLOPs (left)
    and vs epochs at 16 frames (right), one curve per group; `levels` are reference values
    (chance, random init, a trivial predictor), drawn as labelled horizontal lines (top-1
    levels as fractions or percentages, like the points)."""
    if metric not in METRICS:
        raise ProgvidError(f"--metric: unknown metric {metric!r} (one of {', '.join(METRICS)})")
    field, ylabel = METRICS[metric]
    if group_by not in GROUPS:
        raise ProgvidError(f"--group-by: unknown grouping {group_by!r} (one of {', '.join(GROUPS)})")
    dirs = [Path(d) for d in run_dirs]
    points = [p for p in collect_points(dirs, warn) if p.get(field) is not None]
    if not points:
        names = ", ".join(str(d) for d in dirs) or "(none given)"
        raise ProgvidError(f"{names}: no run has an evaluation result ({' or '.join(RESULT_FILES)})")
    plt = pyplot()
    groups: dict[str, list[dict[str, Any]]] = {}
    for p in points:
        groups.setdefault(_group(p, group_by), []).append(p)
    fig, axes = plt.subplots(1, 2, figsize=(11.0, 4.2), sharey=True)
    markers = "osD^v<>ph*"
    for i, (name, pts) in enumerate(sorted(groups.items())):
        for ax, key in zip(axes, ("pflops", "epochs_at_16"), strict=True):
            pts_sorted = sorted(pts, key=lambda p: (p[key], p[field]))
            ax.plot([p[key] for p in pts_sorted], [p[field] for p in pts_sorted],
                    marker=markers[i % len(markers)], color=f"C{i}", label=name)
    for j, (label, value) in enumerate((levels or {}).items()):
        # top-1 is plotted in percent: a level given as a fraction is drawn on the same scale
        shown = value * 100 if metric == "top1" and value <= 1.0 else value
        for ax in axes:
            ax.axhline(shown, color="0.35", linestyle=("--", ":", "-.")[j % 3], linewidth=1.2,
                       label=f"{label} ({shown:.4g}{'%' if metric == 'top1' else ''})")
    axes[0].set_xlabel(PFLOPS_LABEL)
    axes[1].set_xlabel(EPOCHS_LABEL)
    axes[0].set_ylabel(ylabel)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{'accuracy' if metric == 'top1' else 'pre-training loss'} / training cost trade-off")
    return save_figure(fig, out_png)
