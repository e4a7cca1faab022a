"""The search space and the trial records of the TPL search (seed 000): candidate plans,
their enumeration per phase, the trial config and id, the ranking, and `trials.jsonl`."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import PretrainConfig, to_plain, validate
from ..errors import ConfigError
from ..progressive.plan import SHARE_TOLERANCE

PHASES = ("stages", "frames", "shares", "recipe")
CANONICAL_FRAMES = (2, 4, 8, 16)
CANONICAL_SHARES = {1: (1.0,), 2: (0.5, 0.5), 3: (0.25, 0.25, 0.5), 4: (0.125, 0.125, 0.5, 0.25)}


@dataclass(frozen=True)
class Candidate:
    """A plan with its recipe: clip lengths, shares and per-stage batch sizes."""

    frames: tuple[int, ...]
    shares: tuple[float, ...]
    batches: tuple[int, ...]

    def effective(self) -> Candidate:
        """The stages that train (share > 0)."""
        keep = [i for i, s in enumerate(self.shares) if s > 0]
        return Candidate(*(tuple(v[i] for i in keep) for v in (self.frames, self.shares, self.batches)))

    def stages(self) -> list[dict[str, Any]]:
        e = self.effective()
        return [{"frames": f, "share": s, "batch_size": b}
                for f, s, b in zip(e.frames, e.shares, e.batches, strict=True)]

    def label(self) -> str:
        return plan_label(self.stages())


def plan_label(stages: Sequence[dict[str, Any]]) -> str:
    """`2f x 0.5 @ 8 | 4f x 0.5 @ 8`: frames x share @ batch per stage."""
    return " -> ".join(f"{d['frames']}f x {d['share']:g} @ {d['batch_size']}" for d in stages)



# ---------------------------------------------------------------------------- enumeration
def frame_combos(frames: Iterable[int], n: int, end: int | None = None) -> list[tuple[int, ...]]:
    """Every strictly increasing choice of n clip lengths: C(|F|, n) of them; with `end`, only
    those whose last stage trains at `end` frames (the target clip length)."""
    if end is None:
        return list(itertools.combinations(sorted(set(frames)), n))
    shorter = sorted(f for f in set(frames) if f < end)
    return [(*c, end) for c in itertools.combinations(shorter, n - 1)]


def share_tuples(shares: Iterable[float], n: int, last_trains: bool = False) -> list[tuple[float, ...]]:
    """Every length-n tuple of allowed shares summing to 1, in sorted order; `last_trains`: only
    those whose last share is positive (so that a plan still ends at its last stage)."""
    values = sorted(set(shares))
    return [t for t in itertools.product(values, repeat=n) if abs(sum(t) - 1.0) <= SHARE_TOLERANCE
            and (not last_trains or t[-1] > 0)]


def pick_evenly(items: Sequence[Any], k: int, keep: Any) -> list[Any]:
    """`keep` first, then at most k - 1 of the other items, evenly spaced over their order."""
    others = [x for x in items if x != keep]
    m = k - 1
    if len(others) > m:
        idx = [round(i * (len(others) - 1) / (m - 1)) for i in range(m)] if m > 1 else [len(others) // 2]
        others = [others[i] for i in sorted(set(idx))] if m > 0 else []
    return [keep, *others]


def canonical_plan(n: int, frames: Iterable[int], shares: Iterable[float],
                   end: int | None = None) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Phase 1's plan for n stages: the last n of (2, 4, 8, 16) and the seed's shares.

    With a restricted space it falls back to the last n allowed lengths and to the allowed share
    tuple (positive shares preferred) closest to the canonical one. With `end` the plan's last
    stage trains at `end` frames, after the longest n - 1 shorter lengths (canonical first)."""
    allowed = sorted(set(frames))
    if end is not None:
        shorter = [f for f in allowed if f < end]
        preferred = [f for f in CANONICAL_FRAMES if f in shorter]
        head = preferred[-(n - 1):] if len(preferred) >= n - 1 else shorter[-(n - 1):]
        chosen = (*(head if n > 1 else ()), end)
    else:
        preferred = [f for f in CANONICAL_FRAMES if f in allowed]
        chosen = tuple(preferred[-n:] if len(preferred) >= n else allowed[-n:])
    target = CANONICAL_SHARES[n]
    options = share_tuples(shares, n, last_trains=end is not None)
    if not options:
        raise ConfigError(f"search.shares: no {n} values from {sorted(set(shares))} sum to 1")
    if target in options:
        return chosen, target
    dist = lambda t: (min(t) <= 0, sum(abs(a - b) for a, b in zip(t, target, strict=True)))  # noqa: E731
    return chosen, min(options, key=dist)


def batch_candidates(exponents: Iterable[int], bz_max: int) -> list[int]:
    """{min(2^j, bz_max)} for the exponents, sorted."""
    return sorted({min(2**j, bz_max) for j in exponents})


def trial_id(cand: Candidate, cfg: PretrainConfig, seed: int | None = None) -> str:
    """A stable hash of what the trial runs (its whole config) and how it is evaluated."""
    raw = to_plain(trial_config(cfg, cand, seed))
    raw.pop("search")
    key = {"trial": raw, "metric": cfg.search.metric, "probe_frames": probe_frames(cfg)}
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def probe_frames(cfg: PretrainConfig) -> int:
    return cfg.search.probe_frames or max(cfg.search.frames)


def trial_config(cfg: PretrainConfig, cand: Candidate, seed: int | None = None) -> PretrainConfig:
    """The user's config at the proxy budget (warmup scaled alike) with the candidate's plan
    (and `seed` in place of the config's, for the repeats that measure the metric's noise)."""
    raw = to_plain(cfg)
    if seed is not None:
        raw["seed"] = seed
    user_budget = cfg.budget.epochs * cfg.budget.scale
    proxy = cfg.search.proxy_epochs
    raw["budget"].update(epochs=proxy, scale=1.0)
    raw["optim"]["warmup_epochs"] = cfg.optim.warmup_epochs * proxy / user_budget
    raw["plan"]["stages"] = cand.stages()
    raw["out"] = None
    return validate(PretrainConfig, raw, "search trial")


def best_config(cfg: PretrainConfig, cand: Candidate) -> PretrainConfig:
    """The user's config (budget untouched: the proxy plan scales by epochs) with the best plan."""
    raw = to_plain(cfg)
    raw["plan"]["stages"] = cand.stages()
    return validate(PretrainConfig, raw, "search best")



def tail_loss(records: Sequence[dict[str, Any]], fraction: float = 0.1) -> float:
    """Mean logged loss over the last `fraction` of the steps (the last record at least)."""
    by_step = {int(r["step"]): r.get("loss") for r in records if "step" in r}  # resumes: last wins
    if not by_step:
        return float("nan")
    last = max(by_step)
    vals = [v for s, v in by_step.items() if s >= last - fraction * (last + 1) and isinstance(v, int | float)]
    return float(sum(vals) / len(vals)) if vals else float("nan")



class TrialStore:
    """`trials.jsonl`: one record per finished trial, appended, flushed and fsynced. A trial
    that ran out of GPU memory is read back as not run, so a rerun tries it again (memory may be
    free then); one that failed on its own (non-finite losses) stays failed: it would again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[str, dict[str, Any]] = {}
        if path.is_file():
            text = path.read_text()
            for line in text.splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a crash
                if isinstance(rec, dict) and "trial_id" in rec:
                    if str(rec.get("error", "")).startswith("OutOfMemoryError"):
                        self.records.pop(rec["trial_id"], None)
                        continue
                    self.records[rec["trial_id"]] = rec
            if text and not text.endswith("\n"):
                with path.open("a") as fh:
                    fh.write("\n")

    def add(self, rec: dict[str, Any]) -> None:
        self.records[rec["trial_id"]] = rec
        with self.path.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def finite_or(v: Any, bad: float) -> float:
    """`v` as a float when it is a finite number, else `bad`."""
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else bad


def rank_key(rec: dict[str, Any], by: str) -> tuple[float, ...]:
    """Smaller is better. `metric`: higher top-1, then lower loss; `loss`: the other way round."""
    failed = 1.0 if rec.get("error") else 0.0
    top1, loss = finite_or(rec.get("top1"), -math.inf), finite_or(rec.get("final_loss"), math.inf)
    return (failed, -top1, loss) if by == "metric" else (failed, loss, -top1)
