"""Greedy TPL configuration search (seed 000): stages, then frames, then shares, then batch.

Each phase fixes what it found before the next one starts:
1. `stages`: one canonical plan per stage count n in `search.stages`;
2. `frames`: every strictly increasing choice of n clip lengths from `search.frames`;
3. `shares`: up to `search.max_share_trials` share tuples from `search.shares` summing to 1;
4. `recipe`: per stage (first to last) the batch sizes min(2^j, bz_max(f_i)); lr follows the
   scaling rule of `build_plan` (lr = base_lr * total_batch / 256).
Phases 1-3 rank trials by the cheap evaluation (top-1 of a linear probe or kNN on frozen
validation features, ties broken by the lower loss); phase 4 ranks by the final unsupervised
loss (seed: "inner search ... based on the unsupervised training loss"). The incumbent is the
first candidate of every phase, so a tie keeps it.

A trial is a short pre-training at the proxy budget (`search.proxy_epochs`, warmup scaled the
same way) in `out/trials/<trial_id>/`, then the probe. Every finished trial is appended to
`out/trials.jsonl` (flushed and fsynced); a rerun reads it first and runs only what is missing.
The id hashes the trial's whole config (effective plan: stages with share > 0, recipe, proxy
budget) and its probe, so equal trials met in two phases run once.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import PretrainConfig, to_plain, validate
from ..errors import ConfigError, ProgvidError
from .plan import SHARE_TOLERANCE

PHASES = ("stages", "frames", "shares", "recipe")
CANONICAL_FRAMES = (2, 4, 8, 16)
CANONICAL_SHARES = {1: (1.0,), 2: (0.5, 0.5), 3: (0.25, 0.25, 0.5), 4: (0.125, 0.125, 0.5, 0.25)}
CPU_BATCH_CAP = 64
CUDA_SAFETY = 0.9  # fraction of free GPU memory the trials may fill


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


@dataclass
class SearchResult:
    """What `run_search` found and wrote."""

    best: PretrainConfig  # the user's config with the best plan, at the user's budget
    best_trial: dict[str, Any]
    phases: dict[str, list[dict[str, Any]]]  # phase -> trial records, candidate order
    executed: int  # trials run by this call (not read back from trials.jsonl)
    best_yaml: Path
    results_md: Path
    plot: Path
    bz_max: dict[int, int] = field(default_factory=dict)


# ---------------------------------------------------------------------------- enumeration
def frame_combos(frames: Iterable[int], n: int) -> list[tuple[int, ...]]:
    """Every strictly increasing choice of n clip lengths: C(|F|, n) of them."""
    return list(itertools.combinations(sorted(set(frames)), n))


def share_tuples(shares: Iterable[float], n: int) -> list[tuple[float, ...]]:
    """Every length-n tuple of allowed shares summing to 1, in sorted order."""
    values = sorted(set(shares))
    return [t for t in itertools.product(values, repeat=n) if abs(sum(t) - 1.0) <= SHARE_TOLERANCE]


def pick_evenly(items: Sequence[Any], k: int, keep: Any) -> list[Any]:
    """`keep` first, then at most k - 1 of the other items, evenly spaced over their order."""
    others = [x for x in items if x != keep]
    m = k - 1
    if len(others) > m:
        idx = [round(i * (len(others) - 1) / (m - 1)) for i in range(m)] if m > 1 else [len(others) // 2]
        others = [others[i] for i in sorted(set(idx))] if m > 0 else []
    return [keep, *others]


def canonical_plan(n: int, frames: Iterable[int], shares: Iterable[float]) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Phase 1's plan for n stages: the last n of (2, 4, 8, 16) and the seed's shares.

    With a restricted space it falls back to the last n allowed lengths and to the allowed share
    tuple (positive shares preferred) closest to the canonical one."""
    allowed = sorted(set(frames))
    preferred = [f for f in CANONICAL_FRAMES if f in allowed]
    chosen = tuple(preferred[-n:] if len(preferred) >= n else allowed[-n:])
    target = CANONICAL_SHARES[n]
    options = share_tuples(shares, n)
    if not options:
        raise ConfigError(f"search.shares: no {n} values from {sorted(set(shares))} sum to 1")
    if target in options:
        return chosen, target
    dist = lambda t: (min(t) <= 0, sum(abs(a - b) for a, b in zip(t, target, strict=True)))  # noqa: E731
    return chosen, min(options, key=dist)


def batch_candidates(exponents: Iterable[int], bz_max: int) -> list[int]:
    """{min(2^j, bz_max)} for the exponents, sorted."""
    return sorted({min(2**j, bz_max) for j in exponents})


def check_search(cfg: PretrainConfig) -> None:
    """Up-front checks the section's own validation cannot do (they need the rest of the config)."""
    s, tub = cfg.search, cfg.model.tubelet_size
    if cfg.plan.multigrid:
        raise ConfigError("plan.multigrid: the search explores TPL plans; set plan.multigrid=false")
    for f in s.frames:
        if f % tub:
            raise ConfigError(f"search.frames: {f} is not a multiple of the tubelet size {tub} "
                              "(model.tubelet_size)")
    if s.probe_frames is not None and s.probe_frames % tub:
        raise ConfigError(f"search.probe_frames: {s.probe_frames} is not a multiple of the tubelet "
                          f"size {tub}")
    for n in s.stages:
        if not share_tuples(s.shares, n):
            raise ConfigError(f"search.shares: no {n} values from {sorted(s.shares)} sum to 1 "
                              f"(needed for {n} stage(s))")
    if cfg.data.val is None:
        raise ConfigError("data.val: the search ranks trials on the validation split; set data.val")
    if cfg.data.format == "unlabeled":
        raise ConfigError("data.format: the search's probe needs labels; `unlabeled` data has none")


def trial_id(cand: Candidate, cfg: PretrainConfig) -> str:
    """A stable hash of what the trial runs (its whole config) and how it is evaluated."""
    raw = to_plain(trial_config(cfg, cand))
    raw.pop("search")
    key = {"trial": raw, "metric": cfg.search.metric, "probe_frames": probe_frames(cfg)}
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def probe_frames(cfg: PretrainConfig) -> int:
    return cfg.search.probe_frames or max(cfg.search.frames)


def trial_config(cfg: PretrainConfig, cand: Candidate) -> PretrainConfig:
    """The user's config at the proxy budget (warmup scaled alike) with the candidate's plan."""
    raw = to_plain(cfg)
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


# ---------------------------------------------------------------------------- one trial
def tail_loss(records: Sequence[dict[str, Any]], fraction: float = 0.1) -> float:
    """Mean logged loss over the last `fraction` of the steps (the last record at least)."""
    by_step = {int(r["step"]): r.get("loss") for r in records if "step" in r}  # resumes: last wins
    if not by_step:
        return float("nan")
    last = max(by_step)
    vals = [v for s, v in by_step.items() if s >= last - fraction * (last + 1) and isinstance(v, int | float)]
    return float(sum(vals) / len(vals)) if vals else float("nan")


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def execute_trial(job: dict[str, Any]) -> dict[str, Any]:
    """Worker body: pre-train (resuming a half-done run), probe, return the trial record."""
    import torch

    from ..engine.distributed import resolve_device
    from ..engine.trainer import TrainingError
    from ..evaluate import probe_encoder
    from ..pretrain import load_videomae, run_pretrain
    from ..viz import read_metrics

    cfg = validate(PretrainConfig, job["config"], "search trial")
    run_dir = Path(job["dir"])
    rec = {k: job[k] for k in ("trial_id", "phase", "stages", "proxy_epochs")}
    t0 = time.time()
    try:
        result = run_pretrain(cfg, out=str(run_dir), resume="auto", progress=False)
    except (TrainingError, torch.cuda.OutOfMemoryError) as exc:
        return {**rec, "final_loss": None, "top1": None, "pflops": None, "seconds": None,
                "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    model = load_videomae(run_dir)
    probe = probe_encoder(model.encoder, cfg.data, num_frames=job["probe_frames"], method=job["metric"],
                          seed=cfg.seed, device=resolve_device(cfg.train.device))
    (run_dir / "probe.json").write_text(json.dumps(
        {"top1": probe.top1, "top5": probe.top5, "probe": probe.method, "frames": job["probe_frames"]}))
    return {**rec, "final_loss": tail_loss(read_metrics(run_dir)), "top1": probe.top1,
            "top5": probe.top5, "pflops": result.flops / 1e15, "seconds": time.time() - t0}


# ---------------------------------------------------------------------------- memory -> bz_max
def measure_memory(job: dict[str, Any]) -> dict[str, float]:
    """Bytes one clip adds to a training step at the job's frame count, and bytes available.

    CUDA: peak allocated during a batch-1 step minus the steady state; available = free memory
    (times a safety factor, less the other workers' models) / workers. CPU: the growth of the
    process's peak resident size over a batch-1 step; available = physical memory / 4 / workers.
    """
    import torch

    from ..engine.distributed import resolve_device
    from ..pretrain import build_model

    cfg = validate(PretrainConfig, job["config"], "search memory probe")
    device, workers = resolve_device(cfg.train.device), int(job["workers"])
    model = build_model(cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    size = cfg.data.input_size
    video = torch.randn(1, model.in_chans, job["frames"], size, size, device=device)

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.precision)

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = model(video).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # optimizer state and allocator warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        per_clip = torch.cuda.max_memory_allocated(device) - base
        free, _ = torch.cuda.mem_get_info(device)
        available = max(0.0, (free * CUDA_SAFETY - (workers - 1) * base) / workers)
        return {"per_clip": float(max(per_clip, 1 << 20)), "available": available, "cuda": 1.0}
    before = _rss(current=True)
    step()
    per_clip = _rss(current=False) - before
    available = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 4 / workers
    return {"per_clip": float(max(per_clip, 1 << 20)), "available": float(available), "cuda": 0.0}


def _rss(current: bool) -> int:
    """Resident bytes now (Linux /proc) or the peak so far (getrusage; also the fallback)."""
    import resource

    if current and os.path.exists("/proc/self/statm"):
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def bz_max_table(memory: dict[str, float], frames: Iterable[int], measured_at: int) -> dict[int, int]:
    """Largest batch per clip length: memory per clip scales with the clip length (linear in
    tokens, an over-estimate for shorter clips since attention is quadratic)."""
    out = {}
    for f in frames:
        bz = max(1, int(memory["available"] // (memory["per_clip"] * f / measured_at)))
        out[f] = bz if memory.get("cuda") else min(bz, CPU_BATCH_CAP)
    return out


# ---------------------------------------------------------------------------- the search
class TrialStore:
    """`trials.jsonl`: one record per finished trial, appended, flushed and fsynced."""

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


def _num(v: Any, bad: float) -> float:
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else bad


def rank_key(rec: dict[str, Any], by: str) -> tuple[float, ...]:
    """Smaller is better. `metric`: higher top-1, then lower loss; `loss`: the other way round."""
    failed = 1.0 if rec.get("error") else 0.0
    top1, loss = _num(rec.get("top1"), -math.inf), _num(rec.get("final_loss"), math.inf)
    return (failed, -top1, loss) if by == "metric" else (failed, loss, -top1)


class _Search:
    def __init__(self, cfg: PretrainConfig, out: Path, workers: int, say: Callable[[str], None]) -> None:
        self.cfg, self.out, self.workers, self.say = cfg, out, workers, say
        self.store = TrialStore(out / "trials.jsonl")
        self.phases: dict[str, list[dict[str, Any]]] = {p: [] for p in PHASES}
        self.executed = 0
        self._pool: Executor | None = None

    def pool(self) -> Executor:
        if self._pool is None:
            import multiprocessing

            threads = max(1, (os.cpu_count() or 1) // self.workers)
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_init_worker, initargs=(threads,))
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def job(self, cand: Candidate, phase: str) -> dict[str, Any]:
        tid = trial_id(cand, self.cfg)
        return {"trial_id": tid, "phase": phase, "stages": cand.stages(),
                "proxy_epochs": self.cfg.search.proxy_epochs, "metric": self.cfg.search.metric,
                "probe_frames": probe_frames(self.cfg), "dir": str(self.out / "trials" / tid),
                "config": to_plain(trial_config(self.cfg, cand))}

    def evaluate(self, phase: str, cands: list[Candidate], by: str) -> Candidate:
        """Run the candidates not yet recorded (in parallel), record them; return the best."""
        jobs = [self.job(c, phase) for c in cands]
        todo = {j["trial_id"]: j for j in jobs if j["trial_id"] not in self.store.records}
        self.say(f"[search] phase {PHASES.index(phase) + 1}/4 ({phase}): {len(jobs)} trial(s), "
                 f"{len(todo)} to run")
        if self.workers > 1 and len(todo) > 1:
            failure = None
            for fut in as_completed([self.pool().submit(execute_trial, j) for j in todo.values()]):
                try:
                    self._record(fut.result())
                except Exception as exc:  # record the others first, then fail
                    failure = failure or exc
            if failure is not None:
                raise failure
        else:
            for j in todo.values():
                self._record(execute_trial(j))
        rows = []
        for j in jobs:
            rec = dict(self.store.records[j["trial_id"]])
            if rec.get("phase") != phase:
                rec["first_phase"], rec["phase"] = rec.get("phase"), phase
            rows.append(rec)
        seen = {r["trial_id"] for r in self.phases[phase]}
        self.phases[phase].extend(r for r in rows if r["trial_id"] not in seen)
        i = min(range(len(rows)), key=lambda k: rank_key(rows[k], by))
        if rows[i].get("error"):
            raise ProgvidError(f"search: every trial of phase `{phase}` failed ({rows[i]['error']})")
        return cands[i]

    def _record(self, rec: dict[str, Any]) -> None:
        self.store.add(rec)
        self.executed += 1
        shown = "FAILED " + rec["error"] if rec.get("error") else (
            f"top-1 {rec['top1']:.3f}, loss {rec['final_loss']:.4f}, {rec['seconds']:.1f} s")
        self.say(f"[search]   {rec['trial_id']} {plan_label(rec['stages'])}: {shown}")

    def bz_max(self, cand: Candidate) -> dict[int, int]:
        """Largest batch per clip length: `search.bz_max` or measured; at most the train set."""
        from ..data.datasets import build_samples

        s, clips = self.cfg.search, len(build_samples(self.cfg.data, "train").samples)
        if s.bz_max is not None:
            return {f: min(s.bz_max, clips) for f in cand.frames}
        longest = max(cand.frames)
        cache = self.out / "memory.json"
        key = {"base": trial_id(Candidate((longest,), (1.0,), (1,)), self.cfg), "frames": longest,
               "workers": self.workers}
        memory = None
        if cache.is_file():
            saved = json.loads(cache.read_text())
            memory = saved.get("memory") if saved.get("key") == key else None
        if memory is None:
            self.say(f"[search] measuring memory of a batch-1 step at {longest} frames")
            torch = sys.modules.get("torch")
            if torch is not None and torch.cuda.is_initialized():
                torch.cuda.empty_cache()  # in-process trials' cached blocks are not in use
            probe_cfg = trial_config(self.cfg, Candidate((longest,), (1.0,), (1,)))
            job = {"config": to_plain(probe_cfg), "frames": longest, "workers": self.workers}
            memory = self.pool().submit(measure_memory, job).result()
            cache.write_text(json.dumps({"key": key, "memory": memory}))
        return {f: min(b, clips) for f, b in bz_max_table(memory, cand.frames, longest).items()}


def _sink(progress: Callable[[str], None] | bool | None) -> Callable[[str], None]:
    if callable(progress):
        return progress
    if progress is False:
        return lambda _msg: None
    return lambda msg: print(msg, file=sys.stderr, flush=True)


def run_search(cfg: PretrainConfig, *, out: str | Path, workers: int | None = None,
               config_path: str | None = None,
               progress: Callable[[str], None] | bool | None = None) -> SearchResult:
    """The greedy search; writes trials.jsonl, best.yaml, results.md and search.png under `out`.

    `workers` (default `search.workers`): trials run in parallel in spawned processes with
    cores // workers torch threads each; with 1 they run in this process. `progress`: a
    callable receiving one line per event, False for silence, None/True for stderr."""
    check_search(cfg)
    workers = workers or cfg.search.workers
    if workers < 1:
        raise ConfigError(f"--workers: must be at least 1 (got {workers})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    s, bs = cfg.search, cfg.train.batch_size
    search = _Search(cfg, out, workers, _sink(progress))
    try:
        # 1. number of stages: one canonical plan each
        cands = [Candidate(*canonical_plan(n, s.frames, s.shares), (bs,) * n) for n in sorted(s.stages)]
        best = search.evaluate("stages", cands, "metric")
        # 2. clip lengths, keeping the shares
        combos = [c for c in frame_combos(s.frames, len(best.frames)) if c != best.frames]
        cands = [best] + [Candidate(c, best.shares, best.batches) for c in combos]
        best = search.evaluate("frames", cands, "metric")
        # 3. shares, at most max_share_trials tuples, evenly spaced over the sorted ones
        tuples = pick_evenly(share_tuples(s.shares, len(best.frames)), s.max_share_trials, best.shares)
        best = search.evaluate("shares", [Candidate(best.frames, t, best.batches) for t in tuples], "metric")
        # 4. batch (lr by the scaling rule) stage by stage, small to large, ranked by the loss
        best = best.effective()
        limits = search.bz_max(best)
        for i, f in enumerate(best.frames):
            cands = [best] + [Candidate(best.frames, best.shares, best.batches[:i] + (b,) + best.batches[i + 1:])
                              for b in batch_candidates(s.batch_exponents, limits[f]) if b != best.batches[i]]
            best = search.evaluate("recipe", cands, "loss")
    finally:
        search.close()
    best_cfg = best_config(cfg, best)
    best_rec = search.store.records[trial_id(best, cfg)]
    from .search_report import write_best, write_plot, write_results

    paths = (write_best(out / "best.yaml", best_cfg, best_rec, config_path),
             write_results(out / "results.md", cfg, search.phases, best_rec, limits, config_path),
             write_plot(out / "search.png", search.phases, best_rec["trial_id"]))
    search.say(f"[search] best: {best.label()} -> {paths[0]} ({search.executed} trial(s) run now)")
    return SearchResult(best_cfg, best_rec, search.phases, search.executed, *paths, bz_max=limits)
