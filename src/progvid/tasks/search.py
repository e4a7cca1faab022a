"""Greedy TPL configuration search (seed 000): stages, then frames, then shares, then batch.

Each phase fixes what it found before the next one starts:
1. `stages`: one canonical plan per stage count n in `search.stages`;
2. `frames`: every strictly increasing choice of n clip lengths from `search.frames` that ends
   at the target length (`search.end_frames`: the longest of `frames` unless set, `any` lifts it);
3. `shares`: up to `search.max_share_trials` share tuples from `search.shares` summing to 1 (the
   last one positive, so the plan still ends at the target length);
4. `recipe`: per stage (first to last) the batch sizes min(2^j, bz_max(f_i)); lr follows the
   scaling rule of `build_plan` (lr = base_lr * total_batch / 256).
Phases 1-3 rank trials by the cheap evaluation (top-1 of a linear probe or kNN on frozen
validation features, ties broken by the lower loss); phase 4 ranks by the final unsupervised
loss (seed: "inner search ... based on the unsupervised training loss"). The incumbent is the
first candidate of every phase, so a tie keeps it. With `search.noise_seeds` k the best trial
runs again with k other seeds, and results.md says which phase decisions were within that noise.

A trial is a short pre-training at the proxy budget (`search.proxy_epochs`, warmup scaled the
same way) in `out/trials/<trial_id>/`, then the probe. Every finished trial is appended to
`out/trials.jsonl` (flushed and fsynced); a rerun reads it first and runs only what is missing.
The id hashes the trial's whole config (effective plan: stages with share > 0, recipe, proxy
budget) and its probe, so equal trials met in two phases run once.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import PretrainConfig, to_plain, validate
from ..data.datasets import build_samples
from ..engine.distributed import resolve_device
from ..engine.trainer import TrainingError
from ..errors import ConfigError, ProgvidError
from ..loading import load_videomae
from ..metrics import read_metrics
from .evaluate import probe_encoder
from .pretrain import run_pretrain
from .search_memory import bz_max_table, measure_memory
from .search_report import write_best, write_plot, write_results
from .trials import (
    PHASES,
    Candidate,
    TrialStore,
    batch_candidates,
    best_config,
    canonical_plan,
    frame_combos,
    pick_evenly,
    plan_label,
    probe_frames,
    rank_key,
    share_tuples,
    tail_loss,
    trial_config,
    trial_id,
)


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
    noise: list[dict[str, Any]] = field(default_factory=list)  # the best trial, other seeds



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
        options = share_tuples(s.shares, n, last_trains=s.end_length() is not None)
        if not any(min(t) > 0 for t in options):  # zero shares would drop stages from the plan
            raise ConfigError(f"search.shares: no {n} positive values from {sorted(s.shares)} sum "
                              f"to 1, so phase 1 has no {n}-stage plan (search.stages lists {n})")
    if cfg.data.val is None:
        raise ConfigError("data.val: the search ranks trials on the validation split; set data.val")
    if cfg.data.format == "unlabeled":
        raise ConfigError("data.format: the search's probe needs labels; `unlabeled` data has none")



# ---------------------------------------------------------------------------- one trial
def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def execute_trial(job: dict[str, Any]) -> dict[str, Any]:
    """Worker body: pre-train (resuming a half-done run), probe, return the trial record."""
    cfg = validate(PretrainConfig, job["config"], "search trial")
    run_dir = Path(job["dir"])
    rec = {k: job[k] for k in ("trial_id", "phase", "stages", "proxy_epochs", "seed") if k in job}
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



# ---------------------------------------------------------------------------- the search
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

    def job(self, cand: Candidate, phase: str, seed: int | None = None) -> dict[str, Any]:
        tid = trial_id(cand, self.cfg, seed)
        return {"trial_id": tid, "phase": phase, "stages": cand.stages(),
                "proxy_epochs": self.cfg.search.proxy_epochs, "metric": self.cfg.search.metric,
                "probe_frames": probe_frames(self.cfg), "dir": str(self.out / "trials" / tid),
                "config": to_plain(trial_config(self.cfg, cand, seed)),
                **({"seed": seed} if seed is not None else {})}

    def evaluate(self, phase: str, cands: list[Candidate], by: str) -> Candidate:
        """Run the candidates not yet recorded (in parallel), record them; return the best."""
        jobs = [self.job(c, phase) for c in cands]
        todo = {j["trial_id"]: j for j in jobs if j["trial_id"] not in self.store.records}
        self.say(f"[search] phase {PHASES.index(phase) + 1}/4 ({phase}): {len(jobs)} trial(s), "
                 f"{len(todo)} to run")
        self._run(todo)
        rows = []
        for j in jobs:
            rec = dict(self.store.records[j["trial_id"]])
            if rec.get("phase") != phase:
                rec["first_phase"], rec["phase"] = rec.get("phase"), phase
            rows.append(rec)
        seen = {r["trial_id"] for r in self.phases[phase]}
        for r in rows:  # candidates that reduce to one plan (zero shares) are one trial
            if r["trial_id"] not in seen:
                seen.add(r["trial_id"])
                self.phases[phase].append(r)
        i = min(range(len(rows)), key=lambda k: rank_key(rows[k], by))
        if rows[i].get("error"):
            raise ProgvidError(f"search: every trial of phase `{phase}` failed ({rows[i]['error']})")
        return cands[i]

    def noise(self, cand: Candidate, seeds: int) -> list[dict[str, Any]]:
        """The same trial with `seeds` other seeds (data order, init, masks, probe): how much
        the ranking signal moves when nothing but chance changes."""
        base = self.cfg.seed
        jobs = [self.job(cand, "noise", base + k) for k in range(1, seeds + 1)]
        todo = {j["trial_id"]: j for j in jobs if j["trial_id"] not in self.store.records}
        self.say(f"[search] noise: the best trial with {seeds} other seed(s), {len(todo)} to run")
        self._run(todo)
        return [self.store.records[j["trial_id"]] for j in jobs]

    def _run(self, todo: dict[str, dict[str, Any]]) -> None:
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

    def _record(self, rec: dict[str, Any]) -> None:
        self.store.add(rec)
        self.executed += 1
        shown = "FAILED " + rec["error"] if rec.get("error") else (
            f"top-1 {rec['top1']:.3f}, loss {rec['final_loss']:.4f}, {rec['seconds']:.1f} s")
        self.say(f"[search]   {rec['trial_id']} {plan_label(rec['stages'])}: {shown}")

    def bz_max(self, cand: Candidate) -> dict[int, int]:
        """Largest batch per clip length: `search.bz_max` or measured; at most the train set."""
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
            if torch.cuda.is_initialized():
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
    workers = cfg.search.workers if workers is None else workers
    if workers < 1:
        raise ConfigError(f"--workers: must be at least 1 (got {workers})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    s, bs = cfg.search, cfg.train.batch_size
    search = _Search(cfg, out, workers, _sink(progress))
    try:
        end = s.end_length()  # every plan ends at the target clip length unless `any`
        # 1. number of stages: one canonical plan each
        cands = [Candidate(*canonical_plan(n, s.frames, s.shares, end), (bs,) * n)
                 for n in sorted(s.stages)]
        best = search.evaluate("stages", cands, "metric")
        # 2. clip lengths, keeping the shares
        combos = [c for c in frame_combos(s.frames, len(best.frames), end) if c != best.frames]
        cands = [best] + [Candidate(c, best.shares, best.batches) for c in combos]
        best = search.evaluate("frames", cands, "metric")
        # 3. shares, at most max_share_trials tuples, evenly spaced over the sorted ones
        tuples = pick_evenly(share_tuples(s.shares, len(best.frames), last_trains=end is not None),
                             s.max_share_trials, best.shares)
        best = search.evaluate("shares", [Candidate(best.frames, t, best.batches) for t in tuples], "metric")
        # 4. batch (lr by the scaling rule) stage by stage, small to large, ranked by the loss
        best = best.effective()
        limits = search.bz_max(best)
        for i, f in enumerate(best.frames):
            cands = [best] + [Candidate(best.frames, best.shares, best.batches[:i] + (b,) + best.batches[i + 1:])
                              for b in batch_candidates(s.batch_exponents, limits[f]) if b != best.batches[i]]
            best = search.evaluate("recipe", cands, "loss")
        noise = search.noise(best, s.noise_seeds) if s.noise_seeds else []
    finally:
        search.close()
    best_cfg = best_config(cfg, best)
    best_rec = search.store.records[trial_id(best, cfg)]
    val = build_samples(cfg.data, "val")
    paths = (write_best(out / "best.yaml", best_cfg, best_rec, config_path),
             write_results(out / "results.md", cfg, search.phases, best_rec, limits, config_path,
                           noise, val_clips=len(val.samples),
                           chance=1 / len(val.class_names) if val.class_names else None),
             write_plot(out / "search.png", search.phases, best_rec["trial_id"]))
    search.say(f"[search] best: {best.label()} -> {paths[0]} ({search.executed} trial(s) run now)")
    return SearchResult(best_cfg, best_rec, search.phases, search.executed, *paths, bz_max=limits,
                        noise=noise)
