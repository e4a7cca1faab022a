"""Two CPU processes (gloo) with the same global batch follow the 1-process loss curve."""

from __future__ import annotations

import json
import subprocess
import sys
import time
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


def _bad_on_each_rank(synth_dir: Path, tmp_path: Path) -> Path:
    """A list whose two missing videos fall on different ranks in epoch 0 of stage 0."""
    from progvid.data.loader import EpochSampler

    lines = (synth_dir / "train.csv").read_text().splitlines()
    seed = 1 * 1000  # tiny_pretrain's seed 1, stage 0
    r0 = EpochSampler(len(lines), shuffle=True, seed=seed, rank=0, world=2, drop_last=True).order()
    r1 = EpochSampler(len(lines), shuffle=True, seed=seed, rank=1, world=2, drop_last=True).order()
    bad = {int(r0[0]), int(r1[0])}
    rows = [f"{tmp_path}/missing_{i}.mp4 0" if i in bad else f"{synth_dir}/{ln}"
            for i, ln in enumerate(lines)]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


@pytest.mark.slow
def test_bad_fraction_counts_every_rank(synth_dir: Path, tmp_path: Path) -> None:
    """2 of 24 videos missing, one per rank, max 6%: one process per rank sees 1 (4%) and
    trained on; the whole run sees 2 (8%) and must stop, on every rank, with one line; the
    skip log names each file once."""
    data = _bad_on_each_rank(synth_dir, tmp_path)
    cfg = tiny_pretrain(data, train__batch_size=2, data__on_error="skip",
                        data__max_bad_fraction=0.06, train__log_every=1)
    save_config(cfg, tmp_path / "c.yaml")
    r = subprocess.run(
        [sys.executable, "-m", "progvid", "pretrain", str(tmp_path / "c.yaml"), "--nproc", "2",
         "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "2 of 24 videos unreadable, more than data.max_bad_fraction=0.06" in r.stderr
    logged = [json.loads(x)["path"] for x in (tmp_path / "run" / "skipped.jsonl").read_text().splitlines()]
    assert sorted(logged) == sorted(set(logged)) and len(logged) == 2


@pytest.mark.slow
def test_a_bad_video_on_one_rank_is_one_line(synth_dir: Path, tmp_path: Path) -> None:
    """data.on_error=raise, a missing video in rank 1's share only: exit 2 and one line naming
    it; rank 0, whose collective fails when rank 1 leaves, adds nothing, nor does the launcher."""
    from progvid.data.loader import EpochSampler

    lines = (synth_dir / "train.csv").read_text().splitlines()
    r1 = EpochSampler(len(lines), shuffle=True, seed=1000, rank=1, world=2, drop_last=True).order()
    rows = [f"{tmp_path}/missing.mp4 0" if i == int(r1[0]) else f"{synth_dir}/{ln}"
            for i, ln in enumerate(lines)]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    cfg = tiny_pretrain(tmp_path, train__batch_size=2)
    save_config(cfg, tmp_path / "c.yaml")
    r = subprocess.run(
        [sys.executable, "-m", "progvid", "pretrain", str(tmp_path / "c.yaml"), "--nproc", "2",
         "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-3000:]
    said = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert said == [f"progvid: error: {tmp_path}/missing.mp4: file not found"], r.stderr[-3000:]


@pytest.mark.slow
def test_killing_the_launcher_stops_the_ranks(synth_dir: Path, tmp_path: Path) -> None:
    """`--nproc` launcher killed with SIGKILL: its ranks get SIGTERM, save and stop."""
    cfg = tiny_pretrain(synth_dir, train__batch_size=2, budget={"epochs": 60, "ref_frames": 4})
    save_config(cfg, tmp_path / "c.yaml")
    launcher = subprocess.Popen(
        [sys.executable, "-m", "progvid", "pretrain", str(tmp_path / "c.yaml"), "--nproc", "2",
         "--out", str(tmp_path / "run")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (metrics.is_file() and metrics.read_text().count("\n") >= 3):
        time.sleep(0.2)
    ranks = _children(launcher.pid)
    assert ranks, "the launcher started no ranks"
    launcher.kill()
    launcher.wait()
    deadline = time.time() + 120
    while time.time() < deadline and any(_alive(p) for p in ranks):
        time.sleep(0.2)
    assert not any(_alive(p) for p in ranks), "orphaned ranks kept running"
    from progvid.engine import checkpoint as ckpt

    assert ckpt.list_checkpoints(tmp_path / "run"), "the ranks saved before stopping"


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_each_local_rank_gets_its_own_gpu(monkeypatch) -> None:
    """Under torchrun a rank takes the GPU of its local rank, is bound to it before the process
    group starts (nccl otherwise puts every rank's communicator on GPU 0), and a rank without a
    GPU of its own is one clear error instead of nccl's. CUDA is faked: this runs everywhere."""
    import torch

    from progvid.engine import distributed as d
    from progvid.errors import ProgvidError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert d.resolve_device("cuda", 1) == torch.device("cuda", 1)
    assert d.resolve_device("auto") == torch.device("cuda", 0)
    with pytest.raises(ProgvidError, match=r"local rank 2 has no GPU of its own \(this node has 2 "
                                           r"CUDA devices\).*--nproc_per_node 2"):
        d.resolve_device("cuda", 2)
    bound, started = [], []
    monkeypatch.setattr(torch.cuda, "set_device", bound.append)
    monkeypatch.setattr(d.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(d.dist, "init_process_group", lambda **kw: started.append(kw["backend"]))
    monkeypatch.setattr(d, "_die_with_parent", lambda: None)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    info = d.init_distributed(torch.device("cuda", 0))  # what run_context passes before it knows
    assert (info.rank, info.world, info.local_rank) == (1, 2, 1)
    assert bound == [torch.device("cuda", 1)] and started == ["nccl"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_rank_whose_launcher_is_process_1_lives_on(monkeypatch) -> None:
    # in a container the launcher (torchrun, or --nproc) is often process 1: that alone must not
    # look like a dead launcher; a parent that changed while the death signal was set up must
    import ctypes
    import signal

    from progvid.engine import distributed as d

    class LibC:  # the test process itself keeps no death signal
        def prctl(self, *args) -> int:
            return 0

    parents, killed = [1, 1], []
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: LibC())
    monkeypatch.setattr(d.os, "getppid", lambda: parents.pop(0))
    monkeypatch.setattr(d.os, "kill", lambda pid, sig: killed.append(sig))
    d._die_with_parent()
    assert killed == []
    parents[:] = [4242, 1]  # the launcher died in between: re-parented to process 1
    d._die_with_parent()
    assert killed == [signal.SIGTERM]
