"""Shared fixtures. Tests run on CPU with few threads: the CI machine has two cores."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see progvid/__init__.py

import pytest  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))  # test helpers (videos.py) import as modules
# two threads each, or one each when pytest-xdist runs two workers side by side (`make test`)
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic motion dataset (real mp4 files), written once per test session."""
    from progvid.data.synthetic import write_dataset

    out = tmp_path_factory.mktemp("synth")
    write_dataset(out, train=24, val=12, size=32, frames=16, classes=4, seed=0, workers=1)
    return out


@pytest.fixture(scope="session")
def tiny_run(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-step tiny pre-training run (checkpoint, metrics), shared by tests."""
    from engine_util import tiny_pretrain
    from progvid.tasks.pretrain import run_pretrain

    out = tmp_path_factory.mktemp("tiny_run")
    run_pretrain(tiny_pretrain(synth_dir, train__max_steps=2), out=str(out))
    return out
