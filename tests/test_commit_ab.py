"""bench/commit_ab.py's report: per-commit paired ratios and the per-round difference."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import commit_ab  # noqa: E402


def _row(tree: str, round_: int, variant: str, seconds: float, cpu: float, excess: float | None) -> dict:
    row = {"tree": tree, "round": round_, "variant": variant, "seconds": seconds, "cpu_seconds": cpu}
    if excess is not None:
        row["stages"] = {"0": {"excess_s": excess / 2}, "1": {"excess_s": excess / 2}}
    return row


def test_report_pairs_each_commit_and_differences_rounds() -> None:
    rows = [
        _row("base", 0, "tpl_scaled", 10.0, 11.0, 0.6), _row("base", 0, "videomae", 10.0, 10.0, 0.2),
        _row("head", 0, "tpl_scaled", 9.0, 10.0, 0.3), _row("head", 0, "videomae", 10.0, 10.0, 0.2),
        _row("base", 1, "tpl_scaled", 12.0, 11.0, 0.6), _row("base", 1, "videomae", 10.0, 10.0, 0.2),
        _row("head", 1, "tpl_scaled", 9.5, 10.0, 0.3), _row("head", 1, "videomae", 10.0, 10.0, 0.2),
        # a round the head never finished: not paired, not differenced
        _row("base", 2, "tpl_scaled", 10.0, 10.0, 0.6), _row("base", 2, "videomae", 10.0, 10.0, 0.2),
    ]
    args = argparse.Namespace(base="aaa", head="bbb", rounds=3, train=4, epochs=1.0,
                              variants="tpl_scaled,videomae")
    report = commit_ab.summarize(rows, args, (1.0, 1.0, 1.0))
    base = next(line for line in report.splitlines() if line.startswith("| base aaa"))
    head = next(line for line in report.splitlines() if line.startswith("| head bbb"))
    # base: ratios 1.0, 1.2, 1.0 -> mean 1.067; CPU 1.1, 1.1, 1.0; excess 0.60 vs 0.20
    assert "| 3 | 1.067 +- 0.067 | 1.000 (1.000-1.200) | 1.067 |" in base and "0.60, 0.20" in base
    # head: 0.9, 0.95 -> mean 0.925 +- 0.025
    assert "| 2 | 0.925 +- 0.025 | 0.925 (0.900-0.950) | 1.000 |" in head and "0.30, 0.20" in head
    # per round, rounds both commits ran: 0.9 - 1.0, 0.95 - 1.2
    assert "-0.175 +- 0.075 (-0.100, -0.250)" in report


def test_report_without_stage_records_says_so() -> None:
    rows = [_row(t, 0, v, 10.0, 10.0, None) for t in ("base", "head") for v in ("tpl_scaled", "videomae")]
    args = argparse.Namespace(base="aaa", head="bbb", rounds=1, train=4, epochs=1.0,
                              variants="tpl_scaled,videomae")
    report = commit_ab.summarize(rows, args, (1.0, 1.0, 1.0))
    assert report.count("not recorded") == 2
    assert "+0.000" in report
