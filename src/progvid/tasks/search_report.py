"""Search outputs: the best plan as a config, the results table and the per-phase plot."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..config import PretrainConfig, to_plain
from ..figures import pyplot, save_figure
from ..progressive.plan import stage_epochs
from .trials import PHASES, finite_or, plan_label, probe_frames, rank_key


def _fmt(v: Any, spec: str) -> str:
    return format(v, spec) if isinstance(v, int | float) and math.isfinite(v) else "-"


def write_best(path: Path, best: PretrainConfig, rec: dict[str, Any], config_path: str | None) -> Path:
    """The user's config with the best plan (their budget), with a provenance comment."""
    import yaml

    head = (f"# progvid search{f' of {config_path}' if config_path else ''}: best trial "
            f"{rec['trial_id']} ({plan_label(rec['stages'])}; top-1 {_fmt(rec.get('top1'), '.4f')}, "
            f"loss {_fmt(rec.get('final_loss'), '.4f')} at the proxy budget of "
            f"{rec['proxy_epochs']:g} epochs); the budget is the config's own\n")
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(head + yaml.safe_dump(to_plain(best), sort_keys=False))
    tmp.replace(path)
    return path


def noise_levels(best: dict[str, Any], repeats: list[dict[str, Any]],
                 val_clips: int | None = None) -> dict[str, tuple[float, float]]:
    """{"top1": (mean, sd), "final_loss": (mean, sd)} of the best trial and its repeats with
    other seeds (failed repeats left out; sd 0 with one value). With `val_clips`, the top-1 sd
    is at least the sampling error of a top-1 measured on that many clips, sqrt(p (1 - p) / n):
    a few seeds that happen to agree do not make one clip's difference significant."""
    out = {}
    for key in ("top1", "final_loss"):
        vals = [finite_or(r.get(key), math.nan) for r in [best, *repeats] if not r.get("error")]
        vals = [v for v in vals if math.isfinite(v)]
        if vals:
            mean = sum(vals) / len(vals)
            sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
            if key == "top1" and val_clips:
                sd = max(sd, math.sqrt(mean * (1 - mean) / val_clips))
            out[key] = (mean, sd)
    return out


def _decision_margin(rows: list[dict[str, Any]], by: str) -> tuple[float, str] | None:
    """(margin of the phase's winner over its runner-up on its ranking key, key name)."""
    good = sorted((r for r in rows if not r.get("error")), key=lambda r: rank_key(r, by))
    if len(good) < 2:
        return None
    key = "final_loss" if by == "loss" else "top1"
    a, b = finite_or(good[0].get(key), math.nan), finite_or(good[1].get(key), math.nan)
    return abs(a - b), key


def write_results(path: Path, cfg: PretrainConfig, phases: dict[str, list[dict[str, Any]]],
                  best: dict[str, Any], limits: dict[int, int], config_path: str | None,
                  noise: list[dict[str, Any]] | None = None, val_clips: int | None = None,
                  chance: float | None = None) -> Path:
    """Markdown: the search space, the best plan at the full budget, every trial per phase, and
    (with repeats of the best trial) the ranking signal against its own noise."""
    s, b = cfg.search, cfg.budget
    budget = b.epochs * b.scale
    lines = [f"# TPL configuration search{f' of `{config_path}`' if config_path else ''}", "",
             f"- space: stages {list(s.stages)}, frames {list(s.frames)}, shares "
             f"{[round(x, 4) for x in s.shares]}, batch min(2^j, bz_max) for j in {list(s.batch_exponents)}",
             f"- plans end at: {s.end_length() or 'any length'}"
             + (" frames (the target clip length)" if s.end_length() else ""),
             f"- proxy budget: {s.proxy_epochs:g} epochs at {b.ref_frames} frames; bz_max per clip "
             f"length {limits}", f"- ranking: {s.metric} probe top-1 at {probe_frames(cfg)} frames "
             "(phases 1-3, ties: lower loss); final unsupervised loss (phase 4)", "",
             f"## Best plan (trial `{best['trial_id']}`) at the config's budget of {budget:g} epochs", "",
             "| stage | frames | share | batch | epochs |", "|---|---|---|---|---|"]
    for i, st in enumerate(best["stages"]):
        ep = stage_epochs(st["share"], budget, st["frames"], b.ref_frames)
        lines.append(f"| {i + 1} | {st['frames']} | {st['share']:g} | {st['batch_size']} | {ep:.4g} |")
    for k, phase in enumerate(PHASES):
        rows = phases.get(phase, [])
        if not rows:
            continue
        by = "loss" if phase == "recipe" else "metric"
        winner = min(rows, key=lambda r: rank_key(r, by))["trial_id"]
        lines += ["", f"## Phase {k + 1}: {phase} (ranked by {'loss' if by == 'loss' else 'top-1'})", "",
                  "| trial | plan (frames x share @ batch) | top-1 | final loss | PFLOPs | seconds | |",
                  "|---|---|---|---|---|---|---|"]
        for r in rows:
            mark = "**best**" if r["trial_id"] == best["trial_id"] else ("kept" if r["trial_id"] == winner else "")
            if r.get("error"):
                mark = f"failed: {r['error']}"
            elif r.get("first_phase"):
                mark = " ".join(x for x in (mark, f"(from {r['first_phase']})") if x)
            lines.append(f"| `{r['trial_id']}` | {plan_label(r['stages'])} | {_fmt(r.get('top1'), '.4f')} | "
                         f"{_fmt(r.get('final_loss'), '.4f')} | {_fmt(r.get('pflops'), '.4g')} | "
                         f"{_fmt(r.get('seconds'), '.1f')} | {mark} |")
    if noise:
        levels = noise_levels(best, noise, val_clips)
        lines += ["", "## The ranking signal against its own noise", "",
                  f"The best trial again with {len(noise)} other seed(s) (data order, init, masks, "
                  "probe); nothing else changed:", "",
                  "| seed | top-1 | final loss |", "|---|---|---|",
                  f"| {cfg.seed} (search) | {_fmt(best.get('top1'), '.4f')} | {_fmt(best.get('final_loss'), '.4f')} |"]
        lines += [f"| {r.get('seed', '?')} | {_fmt(r.get('top1'), '.4f')} | {_fmt(r.get('final_loss'), '.4f')} |"
                  for r in noise]
        lines += [""] + [f"- {key}: mean {m:.4f}, standard deviation {sd:.4f} over seeds"
                         + (f" (at least the sampling error of a top-1 on {val_clips} clips)"
                            if key == "top1" and val_clips else "")
                         for key, (m, sd) in levels.items()]
        at_chance = (chance is not None and "top1" in levels
                     and levels["top1"][0] <= chance + 2 * levels["top1"][1])
        if at_chance:
            lines += ["", f"**The ranking metric is at chance** ({levels['top1'][0]:.4f} against "
                      f"chance {chance:.4f}, within two standard deviations): phases 1-3 ranked "
                      "noise; their choices say nothing about the plans."]
        lines += ["", "A phase's decision is *within noise* when its winner leads the runner-up by "
                  "no more than two standard deviations of the same trial over seeds:", ""]
        for phase in PHASES:
            by = "loss" if phase == "recipe" else "metric"
            found = _decision_margin(phases.get(phase, []), by)
            if found is None or found[1] not in levels:
                continue
            margin, key = found
            sd = levels[key][1]
            verdict = "within noise" if margin <= 2 * sd else "beyond noise"  # a tie is noise
            if key == "top1" and at_chance:
                verdict = "metric at chance"
            lines.append(f"- {phase}: lead {margin:.4f} in {key} vs 2 sd = {2 * sd:.4f}: **{verdict}**")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_plot(path: Path, phases: dict[str, list[dict[str, Any]]], best_id: str) -> Path:
    """Top-1 and final loss per trial, trials grouped (and coloured) by phase; the best starred."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 1, sharex=True, figsize=(max(6.0, 0.3 * sum(map(len, phases.values())) + 3), 6))
    x, ticks = 0, []
    for k, phase in enumerate(PHASES):
        rows = phases.get(phase, [])
        if not rows:
            continue
        xs = list(range(x, x + len(rows)))
        ticks.append((sum(xs) / len(xs), f"{k + 1}. {phase}"))
        for ax, key in zip(axes, ("top1", "final_loss"), strict=True):
            ys = [finite_or(r.get(key), math.nan) for r in rows]
            ax.plot(xs, ys, "o", color=f"C{k}", label=phase if key == "top1" else None)
            for xi, yi, r in zip(xs, ys, rows, strict=True):
                if r["trial_id"] == best_id and math.isfinite(yi):
                    ax.plot([xi], [yi], marker="*", color="black", markersize=12)
        x += len(rows) + 1
    axes[0].set_ylabel("probe top-1 (fraction)")
    axes[1].set_ylabel("final unsupervised loss")
    axes[1].set_xticks([t for t, _ in ticks], [name for _, name in ticks])
    axes[0].legend(fontsize=8, loc="best")
    axes[0].set_title("TPL search: trials per phase (star = best)")
    for ax in axes:
        ax.grid(alpha=0.3, axis="y")
    save_figure(fig, path)
    return path
