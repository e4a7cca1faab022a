"""The TPL seed's accuracy claims re-tested where pre-training learns (issue 12, item 2).

On the camera-pan setting of bench/evidence.md with 16-frame clips (`pan_videomae` at
`data.num_frames=16`: 32 px, patch 4, random masking 0.75, batch 32, lr 1e-3), every run is a
real `run_pretrain` of progvid's engine, so TPL is the shipped implementation (plan, per-stage
recipes, clips per decode), scored on the downstream task:
* linear probe and kNN on frozen 16-frame features (`evaluate.probe_encoder`), against the same
  encoder at random init and chance;
* the held-out masked-reconstruction loss on fixed val clips and masks, beside its zero level;
* with `--ft`: fine-tuning `pan_vit` on a stratified `--label-fraction` of the labels, against
  the same fine-tuning from scratch on the same subset.
Each run records its training FLOPs (multiply-accumulates, the engine's count), wall-clock and
CPU seconds (its process and loader workers).

Experiments (`--experiment`, repeatable; the seed's tables in brackets):
* `budget`: TPL's default plan (2/4/8/16 frames, shares 1/8, 1/8, 1/2, 1/4) against the
  one-stage VideoMAE at every `--budgets` N_e (epochs at 16 frames) [FIG. 3];
* `schedule`: per-stage cosine (default) vs one global warm-up + cosine vs step decay [FIG. 9];
* `stages`: 1 to 5 stages, (16), (2, 16), (2, 4, 16), (2, 4, 8, 16), (2, 4, 8, 12, 16) with the
  budget spread uniformly, as in the seed's ablation [FIG. 11];
* `random`: the default plan against a random clip length per iteration among the same lengths
  (multigrid-style) [FIG. 12], drawn in the plan's proportions (the same mix and FLOPs, only
  the order differs) and equally often (more long clips: more FLOPs);
* `dual`: VideoMAE and TPL, each with and without VideoMAE V2's decoder masking (running
  cells, ratio 0.5) [issue 13's accuracy table]; `dual75`: the same at decoder ratio 0.75;
* `search`: `progvid search`'s best plan (`--searched best.yaml`) against the default plan and
  the baseline [issue 12 item 6; the seed's FIG. 5], with batch 16 (the batch the search chose)
  and the config's batch 32 crossed: the baseline and the default plan at batch 16, the searched
  plan at batch 32, which separates the plans' shapes from their batch sizes.
The ablations run at the largest budget. Runs go `--jobs` at a time (one torch thread each) in
subprocesses; a run folder with `result.json` is finished and is not redone, so an interrupted
sweep resumes, and `--report` rewrites the tables and plots from what exists.

    progvid synth /tmp/pan16 --kind pan --train 1600 --val 400 --size 32 --source bigbuckbunny.mp4 ...
    .venv/bin/python bench/tpl_claims.py --data /tmp/pan16 --work /tmp/claims --experiment budget --ft
    .venv/bin/python bench/tpl_claims.py --data /tmp/pan16 --work /tmp/claims --report
    python bench/tpl_claims.py --preset gpu --footage a.mp4 ...   # one GPU, 8 minutes, data written there

`--preset gpu` is the budget experiment at GPU scale (issue 12 item 5): the seed's 16-frame plans
on bench/evidence.py's GPU setting (pan_videomae / pan_vit at 64 px, patch 8, width 192, depth 6,
bf16 on cuda, 2,500 pan clips written on the machine over `--footage` videos, else dead leaves),
3 seeds, 3 runs sharing the GPU, `--minutes 7`; results and report under --work. `--minutes`
caps any sweep: at it nothing starts, running runs stop (a rerun resumes them), and the report
says how many did not finish. `--preset rehearsal` runs the same logic at CPU-test size.
"""
# ruff: noqa: E402

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP

import argparse
import json
import platform
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from evidence import PRESETS as EVIDENCE_PRESETS  # bench/ is sys.path[0]
from evidence import (
    QUIET,
    data_overrides,
    merge_preset,
    subset_list,
    write_preset_data,
    write_report,
)

from progvid.config import load_config
from progvid.config.load import to_plain
from progvid.data.datasets import build_samples
from progvid.engine.distributed import resolve_device
from progvid.errors import ProgvidError
from progvid.figures import pyplot, save_figure
from progvid.loading import load_videomae
from progvid.tasks.evaluate import mae_val_levels, probe_encoder
from progvid.tasks.finetune import run_finetune
from progvid.tasks.pretrain import build_model, run_pretrain

HERE = Path(__file__).resolve().parent


def plan(frames: list[int], shares: list[float] | None = None, batch: int | None = None) -> str:
    shares = shares or [1 / len(frames)] * len(frames)
    extra = f", batch_size: {batch}" if batch else ""
    body = ", ".join(f"{{frames: {f}, share: {s!r}{extra}}}" for f, s in zip(frames, shares, strict=True))
    return f"plan.stages=[{body}]"


def variants(frames: int) -> dict[str, list[str]]:
    """The runs' plans for target clip length `frames`. At 16 frames they are the seed's; at 8
    (the CPU setting) they are the same shapes one octave down: the default plan's two shortest
    stages merge (2/4/8 with shares 1/4, 1/2, 1/4), and the stage ablation runs (8), (2, 8),
    (2, 4, 8), (2, 4, 6, 8) (a fifth stage would need 1-frame clips, below the tubelet)."""
    if frames == 16:
        tpl_plan = ([2, 4, 8, 16], [0.125, 0.125, 0.5, 0.25])
        stages = [[2, 16], [2, 4, 16], [2, 4, 8, 16], [2, 4, 8, 12, 16]]
    elif frames == 8:
        tpl_plan = ([2, 4, 8], [0.25, 0.5, 0.25])
        stages = [[2, 8], [2, 4, 8], [2, 4, 6, 8]]
    else:
        raise SystemExit(f"--frames {frames}: plans are defined for 8 and 16")
    tpl = plan(*tpl_plan)
    out = {"videomae": [plan([frames])], "tpl": [tpl],
           "videomae_b16": [plan([frames], batch=16)], "tpl_b16": [plan(*tpl_plan, batch=16)],
           "tpl_global_lr": [tpl, "optim.lr_rule=global"], "tpl_step_decay": [tpl, "optim.lr_rule=step"],
           "random_length": [tpl, "plan.multigrid=true"],
           "random_uniform": [tpl, "plan.multigrid=true", "plan.multigrid_mix=uniform"],
           # progvid's multigrid baseline before 2026-12-06: one stage, one cosine over the run
           "random_length_one": [tpl, "plan.multigrid=true", "plan.multigrid_stages=one"],
           "random_uniform_one": [tpl, "plan.multigrid=true", "plan.multigrid_mix=uniform",
                                  "plan.multigrid_stages=one"],
           "videomae_dual": [plan([frames]), *DUAL], "tpl_dual": [tpl, *DUAL],
           "videomae_dual75": [plan([frames]), *DUAL75], "tpl_dual75": [tpl, *DUAL75],
           "tpl_scaled": [tpl, "plan.batch_rule=scale"]}
    out.update({f"stages_{len(s)}": [plan(s)] for s in stages})
    if SEARCHED:
        out["searched"] = SEARCHED
        # the searched plan at the config's batch: its shape without its batch size
        unbatched = [{k: v for k, v in st.items() if k != "batch_size"}
                     for st in json.loads(SEARCHED[0].split("=", 1)[1])]
        out["searched_b32"] = ["plan.stages=" + json.dumps(unbatched)]
    return out


def dual(ratio: float) -> list[str]:
    """VideoMAE V2's decoder masking (running cells) at decoder ratio `ratio`."""
    return ["model.decoder_mask=running_cell", f"model.decoder_mask_ratio={ratio}"]


DUAL, DUAL75 = dual(0.5), dual(0.75)  # V2's default; the decoder keeping a quarter
SEARCHED: list[str] = []  # --searched FILE: the plan of `progvid search`'s best.yaml


def searched_plan(path: str) -> list[str]:
    """The `plan.stages` override that reproduces a search's best plan (frames, shares, batches)."""
    stages = to_plain(load_config(path).plan)["stages"]
    return ["plan.stages=" + json.dumps([{k: v for k, v in st.items() if v is not None} for st in stages])]


def label(variant: str, frames: int) -> str:
    stages = yaml.safe_load(variants(frames)[variant][0].split("=", 1)[1])
    lengths = "/".join(str(st["frames"]) for st in stages)
    shares = ", ".join(f"{st['share']:.3g}" for st in stages)
    if any("batch_size" in st for st in stages):
        shares += "; batch " + "/".join(str(st.get("batch_size", "-")) for st in stages)
    extra = {"tpl_global_lr": ", one global warm-up + cosine", "tpl_step_decay": ", step decay per stage",
             "random_length": ", random length per iteration (the plan's mix) in each stage",
             "random_uniform": ", random length per iteration (each length equally often) in each stage",
             "random_length_one": ", random length per iteration (the plan's mix), one stage and one cosine",
             "random_uniform_one": ", random length per iteration (each length equally often), one stage and one cosine",
             "searched": ", progvid search's best",
             "searched_b32": ", progvid search's best shape at the config's batch",
             "videomae_dual": ", dual masking", "tpl_dual": ", dual masking",
             "videomae_dual75": ", dual masking at decoder ratio 0.75", "tpl_dual75": ", dual masking at decoder ratio 0.75",
             "tpl_scaled": f", batch x {frames} / f per stage"}.get(variant, "")
    name = ("VideoMAE" if variant.startswith("videomae") else "TPL" if variant.startswith(("tpl", "random", "searched"))
            else f"{variant.split('_')[1]} stages")
    return f"{name} {lengths} ({shares}){extra}"


EXPERIMENTS: dict[str, dict] = {
    "budget": {"variants": ["videomae", "tpl"], "all_budgets": True,
               "title": "TPL vs one-stage VideoMAE at several budgets (seed FIG. 3)"},
    "schedule": {"variants": ["tpl", "tpl_global_lr", "tpl_step_decay"],
                 "title": "Learning-rate rule across stages (seed FIG. 9)"},
    "stages": {"variants": ["videomae", "stages_2", "stages_3", "stages_4", "stages_5"],  # those defined
               "pairs": [("videomae", "stages_2"), ("videomae", "stages_3"), ("videomae", "stages_4"),
                         ("videomae", "stages_5"), ("stages_3", "stages_4")],
               "title": "Number of stages, budget spread uniformly (seed FIG. 11)"},
    "random": {"variants": ["tpl", "random_length", "random_uniform", "random_length_one",
                            "random_uniform_one"],
               "pairs": [("tpl", "random_length"), ("tpl", "random_uniform"),
                         ("tpl", "random_length_one"), ("tpl", "random_uniform_one"),
                         ("random_length_one", "random_length")],
               "title": "Progressive vs random clip length per iteration (seed FIG. 12)"},
    "dual": {"variants": ["videomae", "videomae_dual", "tpl", "tpl_dual"],
             "pairs": [("videomae", "videomae_dual"), ("tpl", "tpl_dual"), ("videomae", "tpl"), ("videomae", "tpl_dual")],
             "title": "Decoder masking (VideoMAE V2, running cells, ratio 0.5) with and without TPL (issue 13)"},
    "dual75": {"variants": ["videomae", "videomae_dual", "videomae_dual75", "tpl", "tpl_dual",
                            "tpl_dual75"],
               "pairs": [("videomae", "videomae_dual75"), ("videomae_dual", "videomae_dual75"),
                         ("tpl", "tpl_dual75"), ("tpl_dual", "tpl_dual75"), ("videomae", "tpl_dual75")],
               "title": "Decoder masking at ratio 0.75 (the decoder keeps a quarter of the tokens), "
                        "where issue 13's MACs targets hold"},
    "batch": {"variants": ["videomae", "tpl", "tpl_scaled"],
              "pairs": [("videomae", "tpl"), ("videomae", "tpl_scaled"), ("tpl", "tpl_scaled")],
              "title": "Per-stage batch size from the clip length, plan.batch_rule scale (seed FIG. 10)"},
    "search": {"variants": ["videomae", "tpl", "searched", "videomae_b16", "searched_b32", "tpl_b16"],
               "pairs": [("videomae", "tpl"), ("videomae", "searched"), ("videomae", "videomae_b16"),
                         ("videomae_b16", "searched"), ("searched_b32", "searched"), ("tpl", "tpl_b16"),
                         ("tpl", "searched_b32")],
               "title": "progvid search's best plan at the full budget (issue 12 item 6; seed FIG. 5)"},
}
def say(text: str) -> None:
    print(f"[tpl_claims {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


# ---------------------------------------------------------------------------------------------
# one run (a subprocess of the sweep)


def common(args: argparse.Namespace, seed: int) -> list[str]:
    return [*data_overrides(Path(args.data)), *QUIET, f"data.num_frames={args.frames}", "train.threads=1",
            f"seed={seed}", *args.set]


def run_one(args: argparse.Namespace, key: str) -> dict:
    """`variant/budget/seed`, `random_init/seed` or `scratch/seed`: train and score one run."""
    parts = key.split("/")
    seed = int(parts[-1])
    folder = Path(args.work) / key.replace("/", "_")
    torch.set_num_threads(1)
    pre_cfg = load_config(args.pretrain, [*common(args, seed), *args.pre_set])
    dev = resolve_device(pre_cfg.train.device)  # probes and levels where the run trained
    row: dict = {"key": key, "seed": seed}
    subset = Path(args.work) / f"subset_s{seed}.csv"
    if args.ft and not subset.exists():
        subset_list(pre_cfg.data, args.label_fraction, seed, subset)

    def finetune(init: str | None) -> float:
        ft_cfg = load_config(args.finetune, [
            *common(args, seed), *args.ft_set, f"epochs={args.ft_epochs}",
            f"model.init={init or 'null'}", "eval.every_epochs=0", "eval.clips=1", "eval.crops=1",
            f"data.train={subset}"])
        out = folder / "finetune"
        run_finetune(ft_cfg, out=str(out))
        return json.loads((out / "eval.json").read_text())["top1"]

    if parts[0] == "scratch":
        row["finetune"] = finetune(None)
        return row
    if parts[0] == "random_init":
        torch.manual_seed(seed)
        model = build_model(pre_cfg)
    else:
        variant, budget = parts[0], float(parts[1])
        cfg = load_config(args.pretrain, [*common(args, seed), *variants(args.frames)[variant], *args.pre_set,
                                          f"budget.epochs={budget}"])
        run = folder / "pretrain"
        t0, c0 = time.time(), cpu_seconds()
        run_pretrain(cfg, out=str(run), resume="auto")
        row["wall_seconds"], row["cpu_seconds"] = time.time() - t0, cpu_seconds() - c0
        metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        steps = [m for m in metrics if "flops" in m]
        row["pflops"] = steps[-1]["flops"] / 1e15
        row["steps"] = steps[-1]["step"] + 1
        row["final_train_loss"] = steps[-1]["loss"]
        model = load_videomae(run)
    model.eval()
    row["probe"] = probe_encoder(model.encoder, pre_cfg.data, num_frames=args.frames, seed=seed, device=dev).top1
    row["knn"] = probe_encoder(model.encoder, pre_cfg.data, num_frames=args.frames, seed=seed, method="knn",
                               device=dev).top1
    levels = mae_val_levels(model, pre_cfg.data, num_frames=args.frames, seed=0, device=dev)
    row["val_loss"], row["val_loss_zero"] = levels["loss"], levels["zero"]
    if args.ft and parts[0] != "random_init":
        row["finetune"] = finetune(str(folder / "pretrain"))
    return row


# ---------------------------------------------------------------------------------------------
# the sweep


def wanted(args: argparse.Namespace) -> list[str]:
    """Every run the chosen experiments need, in the order they run: the references first, then
    experiment by experiment (as given), seed by seed, longest budget first."""
    budgets = sorted((float(b) for b in args.budgets.split(",")), reverse=True)
    keys = [f"random_init/{s}" for s in range(args.seeds)]
    keys += [f"scratch/{s}" for s in range(args.seeds)] if args.ft else []
    for name in args.experiment:
        exp = EXPERIMENTS[name]
        for seed in range(args.seeds):
            for variant in (v for v in exp["variants"] if v in variants(args.frames)):
                for b in budgets if exp.get("all_budgets") else budgets[:1]:
                    if f"{variant}/{b:g}/{seed}" not in keys:
                        keys.append(f"{variant}/{b:g}/{seed}")
    return keys


def result_path(args: argparse.Namespace, key: str) -> Path:
    return Path(args.results) / (key.replace("/", "_") + ".json")


def stop(key: str, proc: subprocess.Popen) -> None:
    """End a run and its loader workers (its own process group): SIGTERM (the engine saves and
    exits), then SIGKILL after 30 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass
    say(f"{key}: stopped at the --minutes deadline (its folder resumes on a rerun)")


def sweep(args: argparse.Namespace, deadline: float | None = None) -> int:
    """Run what is missing, `--jobs` at a time; at `deadline` (time.time()) start nothing more
    and stop what runs. Returns how many wanted runs did not finish."""
    todo = [k for k in wanted(args) if not result_path(args, k).exists()]
    say(f"{len(todo)} runs to do, {args.jobs} at a time")
    running: dict[str, subprocess.Popen] = {}
    passthrough = [*(a for a in sys.argv[1:] if a not in ("--report",)),  # a preset's paths made explicit
                   "--data", args.data, "--results", args.results]
    while todo or running:
        if deadline is not None and time.time() >= deadline:
            for key, proc in running.items():
                stop(key, proc)
            say(f"--minutes deadline: {len(running)} run(s) stopped, {len(todo)} not started")
            # counted from the result files: a run may have written its result as it was stopped
            return sum(not result_path(args, k).exists() for k in wanted(args))
        while todo and len(running) < args.jobs:
            key = todo.pop(0)
            log = Path(args.work) / (key.replace("/", "_") + ".log")
            log.parent.mkdir(parents=True, exist_ok=True)
            say(f"start {key}")
            running[key] = subprocess.Popen([sys.executable, __file__, *passthrough, "--one", key],
                                            stdout=log.open("w"), stderr=subprocess.STDOUT,
                                            start_new_session=True)
        time.sleep(2)
        for key, proc in list(running.items()):
            if proc.poll() is not None:
                del running[key]
                state = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode}, see its .log)"
                say(f"{key}: {state}")
                if proc.returncode == 0:
                    say(result_path(args, key).read_text().strip())
    return 0


# ---------------------------------------------------------------------------------------------
# the report


def collect(args: argparse.Namespace) -> dict[str, list[dict]]:
    """Finished runs by variant/budget, seeds 0 .. --seeds - 1 only: a results folder may hold
    more seeds of some variants (bench/tpl_claims_results has 6 of the dual experiment's), and a
    report says what its command asked for."""
    out: dict[str, list[dict]] = {}
    for path in sorted(Path(args.results).glob("*.json")):
        row = json.loads(path.read_text())
        if row["seed"] < args.seeds:
            out.setdefault(row["key"].rsplit("/", 1)[0], []).append(row)
    return out


def stat(rows: list[dict], key: str) -> tuple[float, float] | None:
    vals = [r[key] for r in rows if key in r]
    if not vals:
        return None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def fmt(s: tuple[float, float] | None, digits: int = 3) -> str:
    return "" if s is None else f"{s[0]:.{digits}f} +- {s[1]:.{digits}f}"


def first_reach(points: list[tuple[float, float]], target: float) -> float | None:
    """Smallest x at which the piecewise-linear curve through `points` (sorted by x) reaches
    `target`; None if it never does."""
    points = sorted(points)
    if points and points[0][1] >= target:
        return points[0][0]
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        if y1 >= target > y0:
            return x0 + (target - y0) / (y1 - y0) * (x1 - x0)
    return None


# (result key, name, +1 when higher is better / -1 when lower is)
MEASURES = [("probe", "linear probe top-1", 1), ("knn", "kNN top-1", 1), ("finetune", "fine-tuned top-1", 1),
            ("val_loss", "held-out masked-reconstruction loss", -1)]


def report(args: argparse.Namespace) -> str:
    groups = collect(args)
    chance = 1.0 / len(build_samples(load_config(args.pretrain, common(args, 0)).data, "train").class_names)
    rand = groups.get("random_init", [])
    scratch = groups.get("scratch", [])
    budgets = sorted({float(k.split("/")[1]) for k in groups if k.count("/") == 1}, reverse=True)
    gpu = "cuda" in " ".join(args.set) and torch.cuda.is_available()
    lines = [
        f"# The TPL seed's claims at {'GPU' if gpu else 'CPU'} scale (bench/tpl_claims.py)", "",
        f"Written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; machine: {os.cpu_count()} CPUs, "
        f"{platform.machine()}, " + (f"{torch.cuda.get_device_name(0)}, " if gpu else "")
        + f"torch {torch.__version__}, one torch thread per run, {args.jobs} runs side by side.", "",
        *([f"**Stopped at the --minutes {args.minutes:g} deadline: {args.unfinished} wanted run(s) did not "
           "finish**; the tables hold the runs that did (n per row).", ""] if getattr(args, "unfinished", 0) else []),
        "```", "python bench/tpl_claims.py " + shlex.join(a for a in sys.argv[1:] if a != "--report"), "```", "",
        f"Chance {chance:.3f}. Random-init encoder (same architecture, per seed): linear probe "
        f"{fmt(stat(rand, 'probe'))}, kNN {fmt(stat(rand, 'knn'))}, held-out loss "
        f"{fmt(stat(rand, 'val_loss'), 4)}; zero-output level of the held-out loss "
        f"{fmt(stat(rand, 'val_loss_zero'), 4)}."
        + (f" Fine-tuning from scratch on {args.label_fraction:.0%} of the labels: "
           f"{fmt(stat(scratch, 'finetune'))}." if scratch else ""), "",
        "Each cell is mean +- standard deviation over seeds (n in the last column). PFLOPs are "
        f"training multiply-accumulates; wall and CPU seconds are per run, with {args.jobs} runs "
        "side by side.", "",
    ]
    for name in args.experiment:
        exp = EXPERIMENTS[name]
        lines += [f"## {exp['title']}", "",
                  "| run | N_e | steps | PFLOPs | wall s | CPU s | probe top-1 | kNN top-1 | "
                  "fine-tuned top-1 | held-out loss | n |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for variant in (v for v in exp["variants"] if v in variants(args.frames)):
            for b in budgets if exp.get("all_budgets") else budgets[:1]:
                rows = groups.get(f"{variant}/{b:g}", [])
                if not rows:
                    continue
                lines.append(
                    f"| {label(variant, args.frames)} | {b:g} | {stat(rows, 'steps')[0]:.0f} | {stat(rows, 'pflops')[0]:.3g} | "
                    f"{stat(rows, 'wall_seconds')[0]:.0f} | {stat(rows, 'cpu_seconds')[0]:.0f} | "
                    f"{fmt(stat(rows, 'probe'))} | {fmt(stat(rows, 'knn'))} | {fmt(stat(rows, 'finetune'))} | "
                    f"{fmt(stat(rows, 'val_loss'), 4)} | {len(rows)} |")
        lines.append("")
        if name == "budget" and budgets:  # (a deadline can leave none)
            lines += budget_summary(groups, budgets)
            plot_budget(args, groups, budgets, chance, rand, scratch)
            lines += ["![accuracy against training FLOPs and wall-clock](tpl_claims.png)", ""]
        elif budgets:
            names = [v for v in exp["variants"] if v in variants(args.frames)]
            pairs = exp.get("pairs") or [(names[0], v) for v in names[1:]]
            lines += paired_table(groups, [(f"{a}/{budgets[0]:g}", f"{b}/{budgets[0]:g}", label(a, args.frames),
                                            label(b, args.frames)) for a, b in pairs if a in names and b in names])
    if budgets:
        lines += loss_vs_features(groups, budgets[0], args.frames)
    return "\n".join(lines) + "\n"


def loss_vs_features(groups: dict, budget: float, frames: int) -> list[str]:
    """Whether a lower held-out loss goes with better frozen features across every variant run
    at `budget`: Spearman rank correlations of the variants' mean loss with their mean probe and
    kNN accuracy (positive: lower loss, worse features)."""
    means = {v: {k: statistics.mean(r[k] for r in rows) for k in ("val_loss", "probe", "knn")}
             for v in variants(frames) if (rows := groups.get(f"{v}/{budget:g}"))}
    if len(means) < 3:
        return []

    def ranks(xs: list[float]) -> list[float]:  # tied values share their mean rank
        return [sum(y < x for y in xs) + (sum(y == x for y in xs) - 1) / 2 for x in xs]

    def spearman(a: list[float], b: list[float]) -> float:
        ra, rb = ranks(a), ranks(b)
        if len(set(ra)) < 2 or len(set(rb)) < 2:
            return float("nan")  # a constant measure ranks nothing
        return float(np.corrcoef(ra, rb)[0, 1])

    loss = [m["val_loss"] for m in means.values()]
    rho = {k: spearman(loss, [m[k] for m in means.values()]) for k in ("knn", "probe")}
    return ["## Loss against frozen features, every variant at N_e " f"{budget:g}", "",
            f"Spearman rank correlation of the mean held-out loss with the mean kNN top-1 "
            f"{rho['knn']:+.2f}, with the mean probe top-1 {rho['probe']:+.2f}, over {len(means)} "
            f"variants ({', '.join(means)}); positive means a lower loss goes with worse features.", ""]


PAIRED = [("probe", "probe", 100, 1), ("knn", "kNN", 100, 1), ("finetune", "fine-tuned", 100, 1),
          ("val_loss", "held-out loss", 1, 4), ("cpu_seconds", "CPU s", 1, 0)]


# two-sided 95% quantiles of Student's t by degrees of freedom (1-30; beyond, the normal's)
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def t_interval(d: list[float]) -> tuple[float, float]:
    """95% interval of the mean of `d` (paired differences): mean +- t(n-1) x sd / sqrt(n)."""
    n = len(d)
    m, sd = statistics.fmean(d), statistics.stdev(d)
    half = (T975[n - 2] if n - 1 <= len(T975) else 1.960) * sd / n ** 0.5
    return m - half, m + half


def paired_table(groups: dict, pairs: list[tuple[str, str, str, str]]) -> list[str]:
    """For each (reference key, run key, their names): the run minus the reference on the same
    seed, mean +- sd over the seeds both have and the 95% t-interval of the mean (accuracies in
    points)."""
    out = ["Paired differences, run minus reference on the same seed (accuracies in points): mean "
           "+- sd of the differences [95% interval of the mean, t with n - 1 degrees of freedom]:", "",
           "| run | against | " + " | ".join(h for _, h, _, _ in PAIRED) + " | seeds |", "|---" * (len(PAIRED) + 3) + "|"]
    for ref_key, key, ref_name, name in pairs:
        ref = {r["seed"]: r for r in groups.get(ref_key, [])}
        rows = [r for r in groups.get(key, []) if r["seed"] in ref]
        if not rows:
            continue
        cells = []
        for m, _, scale, digits in PAIRED:
            d = [(r[m] - ref[r["seed"]][m]) * scale for r in rows if m in r and m in ref[r["seed"]]]
            if len(d) < 2:
                cells.append(f"{d[0]:+.{digits}f}" if d else "")
                continue
            lo, hi = t_interval(d)
            cells.append(f"{statistics.fmean(d):+.{digits}f} +- {statistics.stdev(d):.{digits}f} "
                         f"[{lo:+.{digits}f}, {hi:+.{digits}f}]")
        out.append(f"| {name} | {ref_name} | " + " | ".join(cells) + f" | {len(rows)} |")
    return [*out, ""]


def budget_summary(groups: dict, budgets: list[float]) -> list[str]:
    """Where TPL first reaches the baseline's best score, in FLOPs, wall-clock and CPU time."""
    out = ["| measure | VideoMAE best (N_e) | TPL first reaches it at | FLOPs ratio | wall ratio | CPU ratio |",
           "|---|---|---|---|---|---|"]
    for key, what, sign in MEASURES:
        base = [(b, stat(groups.get(f"videomae/{b:g}", []), key)) for b in budgets]
        tpl = [(b, stat(groups.get(f"tpl/{b:g}", []), key)) for b in budgets]
        base = [(b, sign * s[0]) for b, s in base if s]  # signed: higher is better
        tpl = [(b, sign * s[0]) for b, s in tpl if s]
        if not base or not tpl:
            continue
        best_b, best = max(base, key=lambda p: (p[1], -p[0]))
        cost = {}
        for field in ("pflops", "wall_seconds", "cpu_seconds"):
            base_cost = stat(groups[f"videomae/{best_b:g}"], field)[0]
            pts = [(stat(groups[f"tpl/{b:g}"], field)[0], y) for b, y in tpl]
            x = first_reach(pts, best)
            cost[field] = None if x is None else x / base_cost
        shown = f"{sign * best:.{3 if sign > 0 else 4}f} (N_e {best_b:g})"
        if cost["pflops"] is None:
            out.append(f"| {what} | {shown} | never (within the budgets run) | | | |")
        else:
            ratios = " | ".join("" if cost[f] is None else f"{cost[f]:.2f}"
                                for f in ("pflops", "wall_seconds", "cpu_seconds"))
            out.append(f"| {what} | {shown} | {cost['pflops']:.2f}x the baseline's "
                       f"FLOPs | {ratios} |")
    out += ["", "TPL at each budget minus VideoMAE at the largest, paired by seed (mean +- standard "
            "deviation of the differences; the FLOPs ratio in brackets):", "",
            "| measure | " + " | ".join(f"TPL N_e {b:g} ({ratio(groups, b, budgets[0]):.2f}x)" for b in budgets) + " |",
            "|---|" + "---|" * len(budgets)]
    for key, what, _sign in MEASURES:
        cells = []
        for b in budgets:
            base = {r["seed"]: r[key] for r in groups.get(f"videomae/{budgets[0]:g}", []) if key in r}
            diffs = [r[key] - base[r["seed"]] for r in groups.get(f"tpl/{b:g}", [])
                     if key in r and r["seed"] in base]
            cells.append(fmt((statistics.fmean(diffs), statistics.stdev(diffs) if len(diffs) > 1 else 0.0),
                             3 if key != "val_loss" else 4) + f" (n {len(diffs)})" if diffs else "")
        out.append(f"| {what} | " + " | ".join(cells) + " |")
    return [*out, ""]


def ratio(groups: dict, b: float, ref: float) -> float:
    tpl, base = stat(groups.get(f"tpl/{b:g}", []), "pflops"), stat(groups.get(f"videomae/{ref:g}", []), "pflops")
    return tpl[0] / base[0] if tpl and base else float("nan")


def plot_budget(args, groups: dict, budgets: list[float], chance: float, rand: list, scratch: list) -> None:
    plt = pyplot()
    measures = [m for m in MEASURES if any(stat(groups.get(f"videomae/{b:g}", []), m[0]) for b in budgets)]
    fig, axes = plt.subplots(len(measures), 2, figsize=(10, 3.4 * len(measures)), squeeze=False)
    for row, (key, what, _sign) in enumerate(measures):
        for col, (field, xlabel) in enumerate((("pflops", "training PFLOPs (multiply-accumulates)"),
                                               ("wall_seconds", "wall-clock seconds per run (2 runs on 2 cores)"))):
            ax = axes[row][col]
            for variant, colour in (("videomae", "tab:blue"), ("tpl", "tab:orange")):
                pts = [(stat(groups.get(f"{variant}/{b:g}", []), field), stat(groups.get(f"{variant}/{b:g}", []), key))
                       for b in budgets]
                pts = sorted((x[0], y) for x, y in pts if x and y)
                if pts:
                    ax.errorbar([p[0] for p in pts], [p[1][0] for p in pts], yerr=[p[1][1] for p in pts],
                                marker="o", capsize=3, color=colour, label=label(variant, args.frames))
            if key == "val_loss":  # the random-init loss (~1.8) would flatten the axis: said in the text
                zero = stat(rand, "val_loss_zero")
                if zero:
                    ax.axhline(zero[0], color="grey", ls=":", label=f"zero output {zero[0]:.4f}")
            else:
                ax.axhline(chance, color="grey", ls=":", label=f"chance {chance:.3f}")
                level = stat(scratch if key == "finetune" else rand, key)
                if level:
                    ax.axhline(level[0], color="black", ls="--",
                               label=("scratch, same labels" if key == "finetune" else "random-init encoder")
                               + f" {level[0]:.3f}")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"{what} (val)")
            ax.legend(fontsize=7)
    save_figure(fig, Path(args.report_dir) / "tpl_claims.png")


def gpu_preset() -> dict:
    """bench/evidence.py's GPU scale (pan_videomae / pan_vit at 64 px, patch 8, width 192, depth 6,
    bf16 on cuda, 2,500 pan clips) with the seed's 16-frame plans, 3 runs sharing the GPU."""
    ev = EVIDENCE_PRESETS["gpu"]
    return {"synth": ev["synth"], "frames": 16, "budgets": "15,7.5,3.75", "seeds": 3, "jobs": 3, "ft": True,
            "ft_epochs": ev["ft_epochs"], "label_fraction": ev["label_fraction"],
            "minutes": 7.0,  # runs stop at 7; stopping them and the report fit in the 8 minutes
            "set": [*(x for x in ev["set"] if not x.startswith("data.workers=")), "data.workers=4"],
            "pre_set": ev["pre_set"], "ft_set": ev["ft_set"]}


# Presets: item 2 at another scale, with the data written on the machine that runs it (`synth`:
# `progvid synth` parameters, over --footage videos, else dead-leaves images). Results and the
# report go under --work unless --results / --report-dir say otherwise; flags given win.
PRESETS: dict[str, dict] = {
    "gpu": gpu_preset(),
    "rehearsal": {  # the preset's logic at CPU-test size (tests/test_tpl_claims.py)
        "synth": {"train": 16, "val": 8, "size": 32, "frames": 8, "classes": 4, "kind": "pan"},
        "frames": 8, "budgets": "0.5", "seeds": 1, "jobs": 2, "ft": True, "ft_epochs": 0.5,
        "label_fraction": 0.5, "minutes": None,
        "set": ["model.embed_dim=32", "model.depth=2", "model.num_heads=2", "data.workers=0",
                "train.batch_size=4", "data.sampling_rate=2"],
        "pre_set": ["model.decoder_dim=32", "model.decoder_depth=1"], "ft_set": []},
}
DEFAULTS = {"frames": 8, "budgets": "15,7.5,3.75", "seeds": 3, "jobs": 2, "ft_epochs": 30.0,
            "label_fraction": 0.05, "minutes": None}


def apply_preset(args: argparse.Namespace) -> None:
    """Fill what the command line left unset from `--preset`, then the plain defaults; a preset
    writes its dataset under --work first (reused once complete) unless --data is given."""
    preset = PRESETS[args.preset] if args.preset else {}
    merge_preset(args, preset, DEFAULTS)
    args.ft = args.ft or preset.get("ft", False)
    work = Path(args.work)
    args.results = args.results or str(work / "results" if preset else HERE / "tpl_claims_results")
    args.report_dir = args.report_dir or str(work if preset else HERE)
    write_preset_data(args, preset, work)


def main() -> int:
    t0 = time.time()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="list-format folder (clips of at least --frames frames)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="gpu: item 2 at GPU scale on one GPU in --minutes 8, data written there; "
                        "rehearsal: the same logic at CPU-test size")
    p.add_argument("--footage", action="append", default=[], metavar="VIDEO",
                   help="a preset's camera pans go over these videos' frames (repeatable; default dead leaves)")
    p.add_argument("--minutes", type=float, default=None,
                   help="wall-clock cap: at it no run starts and running ones stop; the report covers what finished")
    p.add_argument("--work", default="runs/tpl_claims", help="run folders (checkpoints, logs)")
    p.add_argument("--results", default=None,
                   help="one JSON per finished run (default bench/tpl_claims_results, kept in the repository "
                        "so a sweep resumes across machines; with --preset, WORK/results)")
    p.add_argument("--frames", type=int, default=None, help="target clip length: 8 (CPU setting, default) or 16 (the seed's)")
    p.add_argument("--experiment", action="append", choices=sorted(EXPERIMENTS), default=None)
    p.add_argument("--budgets", default=None, help="N_e values (epochs at 16 frames; default 15,7.5,3.75)")
    p.add_argument("--seeds", type=int, default=None, help="default 3")
    p.add_argument("--jobs", type=int, default=None, help="runs side by side (default 2)")
    p.add_argument("--ft", action="store_true", help="also fine-tune every run on --label-fraction")
    p.add_argument("--label-fraction", type=float, default=None, help="default 0.05")
    p.add_argument("--ft-epochs", type=float, default=None, help="default 30")
    p.add_argument("--pretrain", default=str(HERE.parent / "configs/pretrain/pan_videomae.yaml"))
    p.add_argument("--finetune", default=str(HERE.parent / "configs/finetune/pan_vit.yaml"))
    p.add_argument("--set", action="append", default=[], help="override for both configs")
    p.add_argument("--pre-set", action="append", default=[])
    p.add_argument("--ft-set", action="append", default=[])
    p.add_argument("--report", action="store_true", help="only rewrite the report from finished runs")
    p.add_argument("--report-dir", default=None, help="where tpl_claims.md/png go (default bench/; with --preset, WORK)")
    p.add_argument("--searched", default=None, metavar="BEST_YAML",
                   help="progvid search's best.yaml: its plan is the variant `searched` (experiment search)")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.experiment = args.experiment or ["budget"]
    if args.searched:
        SEARCHED[:] = searched_plan(args.searched)
    elif "search" in args.experiment:
        raise SystemExit("--experiment search needs --searched BEST_YAML (from progvid search)")
    args.work = str(Path(args.work).resolve())
    if not args.one:
        Path(args.work).mkdir(parents=True, exist_ok=True)
    apply_preset(args)
    args.results = str(Path(args.results).resolve())
    args.data = str(Path(args.data).resolve())
    data_overrides(Path(args.data))  # a folder without its lists fails here, before any run starts
    if args.one:
        row = run_one(args, args.one)
        path = result_path(args, args.one)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(row) + "\n")
        return 0
    args.unfinished = 0
    if not args.report:
        deadline = t0 + args.minutes * 60 if args.minutes is not None else None
        args.unfinished = sweep(args, deadline)
    text = report(args)
    Path(args.report_dir).mkdir(parents=True, exist_ok=True)
    write_report(Path(args.report_dir) / "tpl_claims.md", text)  # keeps the hand-written reading
    print(text)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ProgvidError as exc:  # bad input (no --data, a folder without its lists): one line, exit 2
        print(f"tpl_claims: error: {exc}", file=sys.stderr)
        sys.exit(2)
