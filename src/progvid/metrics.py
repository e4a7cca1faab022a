"""The metrics file of a run (`metrics.jsonl`: one JSON object per logged step), read back.

Ground floor: the engine's logger writes the file, and plots, the search and the trade-off
reader use these functions to read it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import ProgvidError

METRICS_FILE = "metrics.jsonl"


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Records of a metrics.jsonl (or of a run folder holding one); lines cut by a crash and
    non-object lines are skipped."""
    file = Path(path)
    if file.is_dir():
        file = file / METRICS_FILE
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
    """Where the `stage` field changes: {"stage": the new stage, "step": the step after the
    old stage's last record, "flops": the cumulative FLOPs at that record}. The trainer writes a
    record at each stage's last step, so that is the boundary itself (the new stage's first
    record comes up to `log_every` steps later)."""
    out, prev = [], None
    for rec in records:
        stage = rec.get("stage")
        if stage is not None and prev is not None and stage != prev.get("stage"):
            out.append({"stage": stage, "step": prev["step"] + 1, "flops": prev.get("flops")})
        prev = rec if stage is not None else prev
    return out


def training_seconds(records: Sequence[dict[str, Any]]) -> float:
    """Wall-clock seconds a run spent in its training loop, over every resumed segment: each
    process logs `time` from its own loop start, so a segment ends where `time` falls; the sum
    of the segments' last times (the last `log_every` steps before a kill are not counted)."""
    total, last = 0.0, None
    for rec in records:
        t = rec.get("time")
        if not isinstance(t, int | float) or isinstance(t, bool):
            continue
        if last is not None and t < last:
            total += last
        last = float(t)
    return total + (last or 0.0)
