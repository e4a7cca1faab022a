"""`train.compile`: the compiled model does not recompile step after step when the clip length
changes (multigrid draws it per step; TPL stages change it), so compiling pays off."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from engine_util import tiny_pretrain
from progvid.tasks.pretrain import run_pretrain


def _graphs(synth_dir: Path, out: Path, steps: int) -> int:
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    cfg = tiny_pretrain(synth_dir, train__compile=True, train__max_steps=steps,
                        plan={"stages": [{"frames": 2, "share": 0.5}, {"frames": 4, "share": 0.5}],
                              "multigrid": True},
                        budget={"epochs": 8, "ref_frames": 4})
    run_pretrain(cfg, out=str(out))
    return int(counters["stats"]["unique_graphs"])


@pytest.mark.slow
def test_multigrid_steps_do_not_recompile(synth_dir: Path, tmp_path: Path, monkeypatch) -> None:
    # the eager backend traces and guards exactly like inductor, without its C++ compile time
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    few = _graphs(synth_dir, tmp_path / "few", 4)
    many = _graphs(synth_dir, tmp_path / "many", 16)
    assert few > 0 and many == few  # every graph exists after the first steps; none per step
