"""bench/tpl_wallclock.py's accounting: where a run's loop time goes per stage, and the report's
paired verdict."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import tpl_wallclock  # noqa: E402


def _records(stage_steps: list[tuple[int, list[float]]]) -> list[dict]:
    """Metric records every 5 steps: for each stage, the seconds of its 5-step intervals."""
    recs, step, t = [], -1, 0.0
    for stage, intervals in stage_steps:
        for dt in intervals:
            step += 5
            t += dt
            recs.append({"step": step, "stage": stage, "time": t})
    return recs


def test_stage_times_split_steady_steps_from_the_excess() -> None:
    # stage 0: a slow first interval (0.3 s), then 0.1 s per 5 steps; stage 1: one slow interval
    recs = _records([(0, [0.3, 0.1, 0.1, 0.1]), (1, [0.2, 0.2, 0.5, 0.2, 0.2])])
    st = tpl_wallclock.stage_times(recs)
    assert st[0]["steps"] == 20 and st[1]["steps"] == 25
    assert st[0]["seconds"] == pytest.approx(0.6) and st[1]["seconds"] == pytest.approx(1.3)
    assert st[0]["steady_ms"] == pytest.approx(20.0) and st[1]["steady_ms"] == pytest.approx(40.0)
    assert st[0]["excess_s"] == pytest.approx(0.2) and st[1]["excess_s"] == pytest.approx(0.3)


def _row(variant: str, round_: int, seconds: float, stages: dict) -> dict:
    return {"variant": variant, "round": round_, "seconds": seconds, "cpu_seconds": seconds,
            "steps": 40, "pflops": 1.0 if variant == "videomae" else 0.9, "final_loss": 1.0,
            "data_wait": {0: 0.01}, "stages": stages}


def test_summary_pairs_rounds_and_tables_the_excess() -> None:
    base = tpl_wallclock.stage_times(_records([(0, [0.2] * 8)]))
    tpl = tpl_wallclock.stage_times(_records([(0, [0.4, 0.1, 0.1, 0.1]), (1, [0.1] * 4)]))
    rows = [_row("videomae", 0, 10.0, base), _row("tpl_scaled", 0, 9.0, tpl),
            _row("tpl_scaled", 1, 9.8, tpl), _row("videomae", 1, 10.0, base)]
    args = argparse.Namespace(train=4, epochs=1.0, rounds=2, size=32, variants="videomae,tpl_scaled",
                              model_steps=40, loader_batches=200, set=[])
    report = tpl_wallclock.summarize(rows, {16: {1: 100.0}}, args, (1.0, 1.0, 1.0), {16: 0.03})
    line = next(ln for ln in report.splitlines() if ln.startswith("| tpl_scaled | 40 |"))
    # paired ratios 0.90 and 0.98 (median 0.94) and the ratio of medians 0.94: both under 0.95
    assert "0.940 (0.900-0.980)" in line and "0.950 (met)" in line
    excess = next(ln for ln in report.splitlines() if ln.startswith("| tpl_scaled | 20, 0.70"))
    assert excess.endswith("| 0.30 |")  # the 0.4 s first interval against a steady 0.1 s
    assert "| videomae | 40, 1.60, 40.0, 0.00 | 0.00 |" in report
