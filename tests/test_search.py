from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from engine_util import tiny_pretrain
from progvid.config import PretrainConfig, load_config, to_plain, validate
from progvid.errors import ConfigError
from progvid.progressive.plan import validate_plan
from progvid.tasks import search as S
from progvid.tasks import trials as T

SHARES = (0.0, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_enumeration(n: int) -> None:
    combos = S.frame_combos((2, 4, 8, 12, 16), n)
    assert len(combos) == math.comb(5, n)
    assert all(list(c) == sorted(set(c)) for c in combos)  # strictly increasing
    tuples = S.share_tuples(SHARES, n)
    assert tuples and tuples == sorted(tuples)
    assert all(abs(sum(t) - 1) < 1e-9 and set(t) <= set(SHARES) for t in tuples)
    picked = S.pick_evenly(tuples, 12, tuples[len(tuples) // 2])
    assert picked[0] == tuples[len(tuples) // 2] and len(picked) == min(12, len(tuples))
    assert len(set(picked)) == len(picked) and S.pick_evenly(tuples, 12, tuples[0]) == \
        S.pick_evenly(tuples, 12, tuples[0])  # deterministic
    frames, shares = S.canonical_plan(n, (2, 4, 8, 12, 16), SHARES)
    assert frames == (2, 4, 8, 16)[-n:] and shares == T.CANONICAL_SHARES[n]
    cfg = validate(PretrainConfig, {"task": "pretrain", "plan": {"stages": [
        {"frames": f, "share": s} for f, s in zip(frames, shares, strict=True)]}}, "t")
    assert len(validate_plan(cfg)) == n


def test_plans_end_at_the_target_length() -> None:
    frames = (2, 4, 8, 12, 16)
    combos = S.frame_combos(frames, 3, end=16)
    assert len(combos) == math.comb(4, 2) and all(c[-1] == 16 for c in combos)
    assert S.frame_combos(frames, 1, end=8) == [(8,)]
    assert all(t[-1] > 0 for t in S.share_tuples(SHARES, 3, last_trains=True))
    assert (1.0, 0.0) in S.share_tuples(SHARES, 2) and (1.0, 0.0) not in S.share_tuples(SHARES, 2, True)
    for n in (1, 2, 3, 4):  # the canonical plans already end at 16
        assert S.canonical_plan(n, frames, SHARES, end=16) == S.canonical_plan(n, frames, SHARES)
    assert S.canonical_plan(2, frames, SHARES, end=8) == ((4, 8), (0.5, 0.5))
    assert S.canonical_plan(2, (2, 4), (0.0, 1.0), end=4) == ((2, 4), (0.0, 1.0))  # last trains
    cfg = validate(PretrainConfig, {"task": "pretrain", "search": {"frames": [2, 4, 8, 16]}}, "t")
    assert cfg.search.end_length() == 16
    assert validate(PretrainConfig, {"task": "pretrain", "search": {"end_frames": "any"}}, "t").search.end_length() is None
    for bad, msg in [({"end_frames": 6}, "not one of"),
                     ({"stages": [3], "frames": [2, 4, 8, 16], "end_frames": 4}, "ending at 4")]:
        with pytest.raises(ConfigError, match=msg):
            validate(PretrainConfig, {"task": "pretrain", "search": bad}, "t")


def test_noise_levels_and_verdicts(tmp_path: Path) -> None:
    from progvid.tasks.search_report import noise_levels

    best = {"top1": 0.5, "final_loss": 1.0}
    reps = [{"top1": 0.3, "final_loss": 1.2}, {"top1": 0.4, "final_loss": None},
            {"top1": None, "error": "x"}]
    lv = noise_levels(best, reps)
    assert lv["top1"] == pytest.approx((0.4, 0.1)) and lv["final_loss"] == pytest.approx((1.1, 0.1414), abs=1e-4)
    # seeds that agree exactly: the sampling error of a top-1 on 50 clips is the floor
    same = noise_levels({"top1": 0.08}, [{"top1": 0.08}, {"top1": 0.08}], val_clips=50)
    assert same["top1"] == pytest.approx((0.08, math.sqrt(0.08 * 0.92 / 50)))


def test_canonical_fallback_and_batches() -> None:
    assert S.canonical_plan(2, (2, 4), (0.0, 0.5, 1.0)) == ((2, 4), (0.5, 0.5))
    assert S.canonical_plan(3, (2, 4, 6), (0.0, 0.5, 1.0)) == ((2, 4, 6), (0.0, 0.5, 0.5))
    assert S.batch_candidates((3, 4, 5, 6), 20) == [8, 16, 20]
    assert S.batch_candidates((3, 4, 5, 6), 4) == [4]
    memory = {"per_clip": 100.0, "available": 1600.0, "cuda": 0.0}
    assert S.bz_max_table(memory, (4, 16), 16) == {4: 64, 16: 16}


def test_measure_memory_cpu(synth_dir: Path) -> None:
    cfg = tiny_pretrain(synth_dir)
    mem = S.measure_memory({"config": to_plain(cfg), "frames": 4, "workers": 1})
    assert mem["per_clip"] >= 1 << 20 and mem["available"] > 0 and mem["cuda"] == 0
    assert 1 <= S.bz_max_table(mem, (4,), 4)[4] <= 64


def test_search_config_errors(synth_dir: Path) -> None:
    def check(msg: str, **over) -> None:
        with pytest.raises(ConfigError, match=msg):
            S.check_search(tiny_pretrain(synth_dir, **{"data__val": "val.csv", **over}))

    check(r"search.frames: 3 is not a multiple", search={"stages": [1, 2], "frames": [2, 3]})
    check(r"data.val", data__val=None)
    check(r"search.shares: no 2 positive values", search={"stages": [2], "frames": [2, 4], "shares": [1.0]})
    # a 3-stage plan with a zero share is a 2-stage plan: phase 1 would rank no 3-stage plan
    check(r"search.shares: no 3 positive values .* phase 1 has no 3-stage plan",
          search={"stages": [3], "frames": [2, 4, 8], "shares": [0, 0.5, 1]})
    check(r"plan.multigrid", plan={"stages": [{"frames": 4, "share": 1.0}], "multigrid": True})
    for bad, msg in [({"stages": [5]}, r"search.stages.0"), ({"frames": []}, "search.frames"),
                     ({"stages": [3], "frames": [2, 4]}, "need at least"),
                     ({"shares": [0.5, 0.5]}, "twice")]:
        with pytest.raises(ConfigError, match=msg):
            validate(PretrainConfig, {"task": "pretrain", "search": bad}, "t")
    fractions = validate(PretrainConfig, {"task": "pretrain", "search": {"shares": ["1/16", 1]}}, "t")
    assert fractions.search.shares == (0.0625, 1.0)


def _search_cfg(synth_dir: Path) -> PretrainConfig:
    # 24 training clips, batch 4: a 4-frame stage at share 1 runs 2 steps of the proxy budget
    return tiny_pretrain(
        synth_dir, data__val="val.csv", data__classes="classes.txt", budget={"epochs": 800, "ref_frames": 4},
        search={"stages": [1, 2], "frames": [2, 4], "shares": [0, 0.5, 1], "batch_exponents": [2, 3],
                "bz_max": 8, "metric": "knn", "proxy_epochs": 0.33, "noise_seeds": 2})


def test_search_end_to_end_and_resume(synth_dir: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _search_cfg(synth_dir)
    out = tmp_path / "search"
    lines: list[str] = []
    t0 = time.time()
    res = S.run_search(cfg, out=out, workers=1, config_path="tiny.yaml", progress=lines.append)
    first = time.time() - t0
    records = [json.loads(x) for x in (out / "trials.jsonl").read_text().splitlines()]
    assert res.executed == len(records) == len({r["trial_id"] for r in records}) >= 4
    for r in records:
        assert set(r) >= {"trial_id", "phase", "stages", "proxy_epochs", "final_loss", "top1", "pflops",
                          "seconds"}
        assert r["pflops"] > 0 and 0 <= r["top1"] <= 1 and math.isfinite(r["final_loss"])
        assert (out / "trials" / r["trial_id"] / "probe.json").is_file()
    assert [p for p in S.PHASES if res.phases[p]] == list(S.PHASES)
    assert {st["batch_size"] for r in res.phases["recipe"] for st in r["stages"]} <= {4, 8}
    best = load_config(out / "best.yaml")
    # the fields the search chose, as the trial recorded them (the others keep their defaults)
    assert [s.model_dump(include=set(t)) for s, t in zip(best.plan.stages, res.best_trial["stages"],
                                                          strict=True)] == res.best_trial["stages"]
    assert best.budget.epochs == 800 and best.search == cfg.search and best.model == cfg.model
    text = (out / "results.md").read_text()
    assert "**best**" in text and "Phase 4: recipe" in text and res.best_trial["trial_id"] in text
    # every plan ends at the target length (the longest of search.frames), never 2 frames only
    assert all(r["stages"][-1]["frames"] == 4 for p in S.PHASES for r in res.phases[p])
    assert [r["seed"] for r in res.noise] == [cfg.seed + 1, cfg.seed + 2] and all(r["phase"] == "noise" for r in res.noise)
    assert {r["stages"] == res.best_trial["stages"] for r in res.noise} == {True}
    assert "## The ranking signal against its own noise" in text
    assert text.count("within noise**") + text.count("beyond noise**") + text.count("at chance**") >= 2
    assert (out / "search.png").stat().st_size > 1000
    assert any("phase 1/4" in x for x in lines)

    # resume: nothing runs again, the same best comes out
    calls: list[str] = []
    real = S.execute_trial
    monkeypatch.setattr(S, "execute_trial", lambda job: calls.append(job["trial_id"]) or real(job))
    t0 = time.time()
    again = S.run_search(cfg, out=out, workers=1, progress=False)
    assert calls == [] and again.executed == 0 and time.time() - t0 < first
    assert again.best_trial["trial_id"] == res.best_trial["trial_id"]
    assert len((out / "trials.jsonl").read_text().splitlines()) == len(records)

    # interrupted: the last record is lost (its run folder is finished) -> exactly that one reruns
    lines_ = (out / "trials.jsonl").read_text().splitlines()
    (out / "trials.jsonl").write_text("\n".join(lines_[:-1]) + "\n" + lines_[-1][:10])  # cut line
    third = S.run_search(cfg, out=out, workers=1, progress=False)
    lost = json.loads(lines_[-1])
    assert calls == [lost["trial_id"]] and third.executed == 1
    redo = [json.loads(x) for x in (out / "trials.jsonl").read_text().splitlines() if x.endswith("}")]
    assert redo[-1]["trial_id"] == lost["trial_id"]
    assert redo[-1]["final_loss"] == pytest.approx(lost["final_loss"])
    assert redo[-1]["pflops"] == pytest.approx(lost["pflops"])

    # parallel workers (spawned processes): the two phase-1 records are lost; both rerun in the
    # pool, resuming their finished runs, and agree with the first search
    monkeypatch.undo()  # the pool pickles the real function
    kept = (out / "trials.jsonl").read_text().splitlines()
    phase1 = [json.loads(x) for x in kept if x.endswith("}") and json.loads(x)["phase"] == "stages"]
    (out / "trials.jsonl").write_text("".join(x + "\n" for x in kept if x.endswith("}")
                                              and json.loads(x)["phase"] != "stages"))
    fourth = S.run_search(cfg, out=out, workers=2, progress=False)
    assert fourth.executed == 2 == len(phase1)
    assert {r["trial_id"]: r["final_loss"] for r in fourth.phases["stages"]} == pytest.approx(
        {r["trial_id"]: r["final_loss"] for r in phase1})


def test_search_cli_bad_config(tmp_path, capsys) -> None:
    from progvid.cli import main

    cfg = tmp_path / "s.yaml"
    cfg.write_text("task: pretrain\nsearch:\n  stages: [5]\n")
    assert main(["search", str(cfg), "--out", str(tmp_path / "s")]) == 2
    assert "search.stages" in capsys.readouterr().err


def test_candidates_that_are_one_plan_are_listed_once(synth_dir: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Two candidates that differ only in stages with share 0 are the same trial: one row in the
    phase (two copies made the noise verdict compare the winner with itself: a lead of 0)."""
    from progvid.tasks.trials import Candidate

    def fake(job):
        return {"trial_id": job["trial_id"], "phase": job["phase"], "stages": job["stages"],
                "proxy_epochs": 1, "final_loss": 1.0, "top1": 0.5, "top5": 1.0, "pflops": 1.0,
                "seconds": 0.0}

    monkeypatch.setattr(S, "execute_trial", fake)
    search = S._Search(_search_cfg(synth_dir), tmp_path, 1, lambda line: None)
    a, b = Candidate((2, 4), (0.0, 1.0), (4, 4)), Candidate((4,), (1.0,), (4,))
    assert search.job(a, "frames")["trial_id"] == search.job(b, "frames")["trial_id"]
    search.evaluate("frames", [a, b, Candidate((2, 4), (0.5, 0.5), (4, 4))], "top1")
    assert len(search.phases["frames"]) == 2


def test_a_trial_that_ran_out_of_memory_is_tried_again_on_a_rerun(tmp_path: Path) -> None:
    from progvid.tasks.trials import TrialStore

    path = tmp_path / "trials.jsonl"
    store = TrialStore(path)
    store.add({"trial_id": "a", "top1": 0.5})
    store.add({"trial_id": "b", "top1": None, "error": "OutOfMemoryError: CUDA out of memory"})
    store.add({"trial_id": "c", "top1": None, "error": "TrainingError: loss not finite"})
    again = TrialStore(path)
    assert set(again.records) == {"a", "c"}  # b runs again; c would fail the same way
