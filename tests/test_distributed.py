"""Two CPU processes (gloo) with the same global batch follow the 1-process loss curve."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine_util import losses, tiny_pretrain
from progvid.config import save_config
from progvid.tasks.pretrain import run_pretrain


@pytest.mark.slow
def test_two_processes_match_one(synth_dir: Path, tmp_path: Path) -> None:
    one = tiny_pretrain(synth_dir, train__batch_size=4)
    run_pretrain(one, out=str(tmp_path / "one"))
    two = tiny_pretrain(synth_dir, train__batch_size=2)  # 2 processes x 2 = the same global batch
    save_config(two, tmp_path / "two.yaml")
    r = subprocess.run(
        [sys.executable, "-m", "progvid", "pretrain", str(tmp_path / "two.yaml"), "--nproc", "2",
         "--out", str(tmp_path / "two")],
        capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(6))
    for (_, x), (_, y) in zip(a, b, strict=True):
        assert x == pytest.approx(y, rel=1e-4)
    plan = (tmp_path / "two" / "plan.json").read_text()
    assert '"world": 2' in plan
