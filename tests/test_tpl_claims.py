"""bench/tpl_claims.py: its plans are the shipped ones, its crossing point is right, and a tiny
sweep runs end to end, writes one result per run, resumes without redoing any and reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from progvid.config import load_config
from progvid.config.load import to_plain

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import tpl_claims  # noqa: E402


def test_the_cpu_plans_are_the_shipped_recipes() -> None:
    for variant, recipe in (("tpl", "pan_tpl"), ("videomae", "pan_videomae")):
        ours = load_config("pan_videomae", tpl_claims.variants(8)[variant])
        assert to_plain(ours) == to_plain(load_config(recipe))
    sixteen = tpl_claims.variants(16)
    assert to_plain(load_config("tiny_videomae", sixteen["tpl"]).plan) == to_plain(load_config("tiny_tpl").plan)
    assert set(sixteen) - set(tpl_claims.variants(8)) == {"stages_5"}  # 1-frame clips cannot exist


def test_first_reach_interpolates_and_says_never() -> None:
    assert tpl_claims.first_reach([(1.0, 0.5), (2.0, 0.7), (4.0, 0.9)], 0.8) == pytest.approx(3.0)
    assert tpl_claims.first_reach([(2.0, 0.7), (1.0, 0.9)], 0.8) == 1.0  # already at the cheapest
    assert tpl_claims.first_reach([(1.0, 0.5), (2.0, 0.6)], 0.8) is None


def test_loss_against_features_ranks_the_variants() -> None:
    """The report's Spearman correlation: +1 when every lower loss comes with a lower kNN, -1
    when with a higher one; nothing with fewer than three variants."""
    def groups(knn_sign: float) -> dict:
        return {f"{v}/15": [{"val_loss": 0.8 + 0.01 * i, "probe": 0.5, "knn": 0.5 + knn_sign * 0.01 * i}]
                for i, v in enumerate(["videomae", "tpl", "tpl_dual", "tpl_scaled"])}

    up = "\n".join(tpl_claims.loss_vs_features(groups(+1), 15, 8))
    down = "\n".join(tpl_claims.loss_vs_features(groups(-1), 15, 8))
    assert "kNN top-1 +1.00" in up and "over 4 variants" in up
    assert "probe top-1 +nan" in up  # the same probe everywhere ranks nothing
    assert "kNN top-1 -1.00" in down
    few = {k: v for k, v in list(groups(1).items())[:2]}
    assert tpl_claims.loss_vs_features(few, 15, 8) == []


@pytest.mark.slow
def test_tiny_sweep_runs_resumes_and_reports(tmp_path: Path) -> None:
    """The rehearsal preset (the GPU preset's logic at CPU-test size) writes its pan data, runs
    every reference and variant, reports, and a rerun redoes nothing."""
    cmd = [sys.executable, str(ROOT / "bench" / "tpl_claims.py"), "--preset", "rehearsal", "--work", "w"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    res = tmp_path / "w" / "results"
    assert (tmp_path / "w" / "data_rehearsal" / "train.csv").is_file()
    results = sorted(p.name for p in res.glob("*.json"))
    assert results == ["random_init_0.json", "scratch_0.json", "tpl_0.5_0.json", "videomae_0.5_0.json"]
    tpl = json.loads((res / "tpl_0.5_0.json").read_text())
    base = json.loads((res / "videomae_0.5_0.json").read_text())
    assert tpl["pflops"] < base["pflops"] and tpl["steps"] > base["steps"]  # short clips: more, cheaper steps
    for row in (tpl, base):
        assert 0 <= row["probe"] <= 1 and 0 <= row["knn"] <= 1 and 0 <= row["finetune"] <= 1
        assert row["val_loss"] > 0 and row["wall_seconds"] > 0 and row["cpu_seconds"] > 0
    report = (tmp_path / "w" / "tpl_claims.md").read_text()
    assert "| TPL 2/4/8 (0.25, 0.5, 0.25) | 0.5 |" in report and "first reaches it at" in report
    assert "deadline" not in report
    assert (tmp_path / "w" / "tpl_claims.png").stat().st_size > 0
    before = {p: p.stat().st_mtime_ns for p in res.glob("*.json")}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert r.returncode == 0 and "0 runs to do" in r.stderr
    assert {p: p.stat().st_mtime_ns for p in res.glob("*.json")} == before


def test_minutes_deadline_stops_runs_and_reports_what_finished(synth_dir: Path, tmp_path: Path) -> None:
    """At --minutes nothing more starts, running runs stop (their loader workers too), and the
    report says how many did not finish."""
    cmd = [sys.executable, str(ROOT / "bench" / "tpl_claims.py"), "--preset", "rehearsal", "--work", "w",
           "--data", str(synth_dir), "--minutes", "0.08", "--budgets", "50", "--ft-epochs", "50"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "stopped at the --minutes deadline" in r.stderr
    report = (tmp_path / "w" / "tpl_claims.md").read_text()
    assert "Stopped at the --minutes 0.08 deadline" in report
    finished = len(list((tmp_path / "w" / "results").glob("*.json")))
    assert f"{4 - finished} wanted run(s) did not finish" in report
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path / "w")], capture_output=True, text=True)
    assert leftover.stdout.strip() == ""  # no run or loader worker outlived the sweep


def test_gpu_preset_configs_resolve() -> None:
    """Every run of the GPU preset (16-frame plans at 64 px on cuda) has a valid config, without a GPU."""
    gpu = tpl_claims.PRESETS["gpu"]
    common = [*gpu["set"], "data.num_frames=16", "train.threads=1"]
    for variant in ("videomae", "tpl"):
        cfg = load_config("pan_videomae", [*common, *gpu["pre_set"], *tpl_claims.variants(16)[variant]])
        assert cfg.train.device == "cuda" and cfg.data.input_size == 64 and cfg.model.patch_size == 8
        assert cfg.plan.stages[-1].frames == 16
    assert load_config("pan_vit", [*common, *gpu["ft_set"]]).data.input_size == 64
    assert gpu["minutes"] <= 7.5 and gpu["frames"] == 16


def test_bad_data_is_one_line_exit_2(tmp_path: Path) -> None:
    """No --data and no preset, or a folder without its lists: one line naming what is missing, exit 2."""
    script = [sys.executable, str(ROOT / "bench" / "tpl_claims.py"), "--work", str(tmp_path / "w")]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    r = subprocess.run(script, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "tpl_claims: error: --data: give a dataset folder, or --preset to generate one"]
    r = subprocess.run([*script, "--data", str(tmp_path)], capture_output=True, text=True, timeout=120,
                       env=env, cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert str(tmp_path / "train.csv") in r.stderr and "not found" in r.stderr


def test_report_reads_only_the_seeds_asked_for(tmp_path: Path) -> None:
    """A results folder with more seeds of one variant than --seeds reports --seeds of them."""
    for seed in range(5):
        (tmp_path / f"tpl_15_{seed}.json").write_text(json.dumps({"key": f"tpl/15/{seed}", "seed": seed, "probe": seed}))
    args = tpl_claims.argparse.Namespace(results=str(tmp_path), seeds=3)
    assert [r["seed"] for r in tpl_claims.collect(args)["tpl/15"]] == [0, 1, 2]
    args.seeds = 5
    assert len(tpl_claims.collect(args)["tpl/15"]) == 5
