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


@pytest.mark.parametrize("dual", [False, True])
def test_masked_pretraining_forward_is_one_graph(dual: bool) -> None:
    """The training forward (given masks and their counts, as the engine calls it) traces into
    one graph: no data-dependent shape breaks it (boolean indexing broke it into 12)."""
    import torch._dynamo as dynamo

    from progvid.models import videomae

    model = videomae("tiny", num_frames=4, img_size=32, patch_size=8, embed_dim=64, depth=2,
                     num_heads=4, decoder_embed_dim=32, decoder_num_heads=2, decoder_depth=1,
                     decoder_mask="running_cell" if dual else "none")
    gen = torch.Generator().manual_seed(0)
    mask = model.random_mask(2, 4, generator=gen)
    dmask = model.random_decoder_mask(2, 4, generator=gen)
    masked, kept = model.mask_counts(4)

    def loss(video: torch.Tensor, mask: torch.Tensor, dmask: torch.Tensor | None) -> torch.Tensor:
        return model(video, mask, num_masked=masked, decoder_mask=dmask, num_kept=kept).loss

    torch._dynamo.reset()
    ex = dynamo.explain(loss)(torch.randn(2, 3, 4, 32, 32), mask, dmask)
    assert (ex.graph_count, ex.graph_break_count) == (1, 0), [b.reason for b in ex.break_reasons]
