"""Two commits of progvid side by side on one machine: does a change move TPL's wall-clock ratio?

`bench/tpl_wallclock.py` compares variants within one commit; a change to the loader or the
training loop moves TPL and its baseline at once, and days apart the machine moves more than
the change. This script checks out `--base` and `--head` as git worktrees and runs, for each of
`--rounds` rounds, one process per commit (their order alternating round by round), each of
which runs `--variants` once (their order alternating too) with that commit's own
`bench/tpl_wallclock.run_variant` on the same synthetic data. Reported per commit: each round's
ratio of the TPL variant to the baseline (wall and CPU seconds), the stage-change excess (from
the runs' metrics, `stage_times`), and per round the head's ratio minus the base's.

Both commits need `bench/tpl_wallclock.py` with `run_variant` (the per-stage excess from commit
6859634 on; earlier ones report without it).

    .venv/bin/python bench/commit_ab.py --base 6859634 --head d482f61 --rounds 8 --out bench/commit_ab.md
"""
# ruff: noqa: E402

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def one_round(tree: str, tag: str, round_: int, data: str, work: str, epochs: float,
              variants: list[str]) -> None:
    """In a child process: run `variants` once with the bench code and package of `tree`,
    printing one JSON line per run."""
    if not (Path(tree) / "bench" / "tpl_wallclock.py").is_file():
        raise SystemExit(f"{tree} has no bench/tpl_wallclock.py to run")
    sys.path[:0] = [f"{tree}/bench", f"{tree}/src"]
    import tpl_wallclock

    import progvid

    if not Path(progvid.__file__).resolve().is_relative_to(Path(tree).resolve()):
        raise SystemExit(f"imported progvid from {progvid.__file__}, not from {tree}")
    order = variants if round_ % 2 == 0 else variants[::-1]
    for name in order:
        row = tpl_wallclock.run_variant(name, Path(data), Path(work) / tag, epochs, round_, [])
        print(json.dumps({**row, "tree": tag}), flush=True)


def _excess(row: dict) -> float | None:
    if "stages" not in row:
        return None
    return sum(s["excess_s"] for s in row["stages"].values())


def _mean_se(xs: list[float]) -> str:
    if len(xs) < 2:
        return f"{statistics.mean(xs):.3f}"
    return f"{statistics.mean(xs):.3f} +- {statistics.stdev(xs) / len(xs) ** 0.5:.3f}"


def summarize(rows: list[dict], args: argparse.Namespace, loads: tuple) -> str:
    """The report: per commit the paired ratios of `args.variants`' first entry to its last
    (the baseline), and the per-round difference head - base."""
    test, base_v = args.variants.split(",")[0], args.variants.split(",")[-1]
    by: dict[tuple[str, int], dict[str, dict]] = {}
    for r in rows:
        by.setdefault((r["tree"], r["round"]), {})[r["variant"]] = r
    lines = [
        f"# {test} against {base_v}: commit {args.base} and commit {args.head} side by side", "",
        f"- date: {time.strftime('%Y-%m-%d')}; machine: {platform.machine()}, {os.cpu_count()} CPUs; "
        f"load average at the end {loads[0]:.1f} / {loads[1]:.1f} / {loads[2]:.1f}",
        f"- command: `.venv/bin/python bench/commit_ab.py --base {args.base} --head {args.head} "
        f"--rounds {args.rounds} --train {args.train} --epochs {args.epochs:g}"
        + (f" --variants {args.variants}" if args.variants != "tpl_scaled,videomae" else "") + "`",
        f"- data: {args.train} synthetic training videos, 32x32, 16 frames; each round runs one "
        "process per commit (order alternating), each running both variants (order alternating)", "",
        f"| commit | rounds | wall {test} / {base_v}: mean +- s.e. | median (range) | "
        f"CPU {test} / {base_v}: mean | {test} s (median) | {base_v} s (median) | "
        f"stage-change excess, s (median): {test}, {base_v} |",
        "|---|---|---|---|---|---|---|---|"]
    ratios: dict[str, dict[int, float]] = {}
    for tag, rev in (("base", args.base), ("head", args.head)):
        rounds = sorted(k[1] for k in by if k[0] == tag and {test, base_v} <= set(by[k]))
        if not rounds:
            continue
        pair = [by[(tag, k)] for k in rounds]
        wall = [p[test]["seconds"] / p[base_v]["seconds"] for p in pair]
        cpu = [p[test]["cpu_seconds"] / p[base_v]["cpu_seconds"] for p in pair]
        ratios[tag] = dict(zip(rounds, wall, strict=True))
        exc_t = [e for p in pair if (e := _excess(p[test])) is not None]
        exc_b = [e for p in pair if (e := _excess(p[base_v])) is not None]
        excess = (f"{statistics.median(exc_t):.2f}, {statistics.median(exc_b):.2f}"
                  if exc_t and exc_b else "not recorded")
        lines.append(
            f"| {tag} {rev} | {len(pair)} | {_mean_se(wall)} | {statistics.median(wall):.3f} "
            f"({min(wall):.3f}-{max(wall):.3f}) | {statistics.mean(cpu):.3f} | "
            f"{statistics.median(p[test]['seconds'] for p in pair):.1f} | "
            f"{statistics.median(p[base_v]['seconds'] for p in pair):.1f} | {excess} |")
    common = sorted(set(ratios.get("base", {})) & set(ratios.get("head", {})))
    if common:
        diff = [ratios["head"][k] - ratios["base"][k] for k in common]
        lines += ["", f"Head minus base, wall ratio, per round: {_mean_se(diff)} "
                  f"({', '.join(f'{d:+.3f}' for d in diff)})."]
    return "\n".join(lines) + "\n"


def _worktree(rev: str, where: Path) -> Path:
    if where.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(where)], check=False)
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(where), rev],
                   check=True, capture_output=True)
    return where


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", help="the commit before the change (required)")
    p.add_argument("--head", default="HEAD", help="the commit with it")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--variants", default="tpl_scaled,videomae",
                   help="tpl_wallclock variants, the baseline last")
    p.add_argument("--train", type=int, default=400, help="training videos")
    p.add_argument("--epochs", type=float, default=16, help="N_e, epochs at 16 frames")
    p.add_argument("--work", default="/tmp/progvid_commit_ab")
    p.add_argument("--out", default=None, help="markdown results file")
    p.add_argument("--one", nargs=3, metavar=("TREE", "TAG", "ROUND"), help=argparse.SUPPRESS)
    args = p.parse_args()
    work = Path(args.work)
    data = work / "data"
    variants = args.variants.split(",")
    if args.one:
        one_round(args.one[0], args.one[1], int(args.one[2]), str(data), str(work), args.epochs, variants)
        return 0
    if not args.base:
        p.error("--base is required")
    sys.path.insert(0, str(ROOT / "src"))
    from progvid.data.synthetic import write_dataset

    for name in ("base", "head"):  # the report names commits, not HEAD
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", getattr(args, name)],
                             capture_output=True, text=True)
        if rev.returncode:
            p.error(f"--{name} {getattr(args, name)}: not a commit of this repository")
        setattr(args, name, rev.stdout.strip())
    write_dataset(data, train=args.train, val=50, size=32, frames=16, seed=0, workers=2)
    trees = {"base": _worktree(args.base, work / "tree_base"), "head": _worktree(args.head, work / "tree_head")}
    rows = []
    try:
        for r in range(args.rounds):
            for tag in (("base", "head") if r % 2 == 0 else ("head", "base")):
                cmd = [sys.executable, __file__, "--one", str(trees[tag]), tag, str(r),
                       "--work", str(work), "--epochs", str(args.epochs), "--variants", args.variants]
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode:
                    last = (out.stderr.strip().splitlines() or ["no error output"])[-1]
                    raise SystemExit(f"round {r} at {tag} ({args.base if tag == 'base' else args.head}): {last}")
                for line in out.stdout.splitlines():
                    if line.startswith('{"variant"'):
                        rows.append(json.loads(line))
                        print(line, flush=True)
    finally:
        for where in trees.values():
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(where)], check=False)
    report = summarize(rows, args, os.getloadavg())
    print(report)
    if args.out:
        Path(args.out).write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
