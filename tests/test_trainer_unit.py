"""The engine on a toy task (no video): stage hooks, optimizer reset, schedule-driven lr."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from progvid.data.loader import EpochSampler
from progvid.engine.schedule import ConstantLR, Schedule, Stage
from progvid.engine.trainer import StepContext, Trainer, TrainSettings


class Numbers(Dataset):
    def __len__(self) -> int:
        return 16

    def __getitem__(self, key):
        _, i = key
        return torch.tensor([float(i)])


class ToyTask:
    def __init__(self) -> None:
        self.stages_seen: list[int] = []
        self.lrs: list[float] = []

    def loader(self, stage_index, stage, shape, *, dist, device):
        return DataLoader(Numbers(), batch_size=stage.batch_size,
                          sampler=EpochSampler(16, shuffle=True, seed=0, rank=0, world=1),
                          drop_last=True)

    def on_stage(self, model, stage_index, stage) -> None:
        self.stages_seen.append(stage_index)

    def step(self, model, batch, ctx: StepContext):
        self.lrs.append(ctx.stage.lr(0))
        return {"loss": ((model(batch) - 1.0) ** 2).mean()}

    def clips(self, batch) -> int:
        return batch.shape[0]


def _trainer(tmp: Path, reset: bool) -> tuple[Trainer, ToyTask]:
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1)
    stages = (Stage(3, 2, 4, ConstantLR(0.1)), Stage(3, 2, 4, ConstantLR(0.05), reset_optimizer=reset))
    task = ToyTask()
    tr = Trainer(model, task, Schedule(stages), tmp, TrainSettings(log_every=1, tensorboard=False,
                                                                     progress=False),
                 device=torch.device("cpu"))
    return tr, task


def test_stage_hook_and_optimizer_reset(tmp_path: Path) -> None:
    tr, task = _trainer(tmp_path / "reset", reset=True)
    tr.fit(stop_at=3)
    steps_before = [int(s["step"]) for s in tr.optimizer.state.values()]
    assert steps_before == [3, 3]
    tr.fit(stop_at=4)  # first step of stage 2: moments cleared, then one AdamW step
    assert [int(s["step"]) for s in tr.optimizer.state.values()] == [1, 1]
    assert task.stages_seen == [0, 1]
    keep, _ = _trainer(tmp_path / "keep", reset=False)
    keep.fit(stop_at=4)
    assert [int(s["step"]) for s in keep.optimizer.state.values()] == [4, 4]  # moments carry over


def test_lr_follows_the_schedule(tmp_path: Path) -> None:
    tr, task = _trainer(tmp_path / "lr", reset=False)
    tr.fit()
    assert task.lrs == [0.1] * 3 + [0.05] * 3
    assert tr.optimizer.param_groups[0]["lr"] == 0.05


class RecordingTask(ToyTask):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[float]] = []

    def step(self, model, batch, ctx: StepContext):
        self.batches.append(batch.flatten().tolist())
        return super().step(model, batch, ctx)


def _run(tmp: Path, prefetch: bool, accum: int, stops: tuple[int, ...]) -> tuple[list, torch.Tensor]:
    """Two stages of 5 steps (epochs of 4 batches wrap inside them); `stops`: fit in pieces,
    a fresh trainer resumed from the checkpoint after each."""
    seen: list[list[float]] = []
    weights = None
    for end in (*stops, None):
        torch.manual_seed(0)
        model = torch.nn.Linear(1, 1)
        stages = (Stage(5, 2, 4, ConstantLR(0.1)), Stage(5, 2, 4, ConstantLR(0.05)))
        task = RecordingTask()
        tr = Trainer(model, task, Schedule(stages), tmp,
                     TrainSettings(log_every=1, tensorboard=False, progress=False, prefetch=prefetch,
                                   accum_steps=accum, ckpt_every=100),
                     device=torch.device("cpu"))
        from progvid.engine.checkpoint import list_checkpoints

        found = list_checkpoints(tmp)
        if found:
            tr.restore(found[-1])
        tr.fit(stop_at=end)
        seen += task.batches
        weights = torch.cat([p.detach().flatten() for p in model.parameters()])
    return seen, weights


def test_prefetch_yields_the_same_batches_and_weights(tmp_path: Path, monkeypatch) -> None:
    from progvid.engine import feed

    served = []
    ready = feed._Ahead.ready
    monkeypatch.setattr(feed._Ahead, "ready", lambda self, device: served.append(self.pos) or ready(self, device))
    _run(tmp_path / "count", True, 1, ())
    # within each 5-step stage, batches 1-3 of the first epoch came ahead; batch 0 of an epoch
    # and of a stage is fetched when needed
    assert served == [1, 2, 3] * 2
    for accum in (1, 2):
        plain, w_plain = _run(tmp_path / f"off{accum}", False, accum, ())
        ahead, w_ahead = _run(tmp_path / f"on{accum}", True, accum, ())
        assert len(plain) == 10 * accum
        assert ahead == plain
        assert torch.equal(w_ahead, w_plain)
        # stopped and resumed mid-epoch and mid-stage: still the same batches
        pieces, w_pieces = _run(tmp_path / f"pieces{accum}", True, accum, (3, 7))
        assert pieces == plain
        assert torch.equal(w_pieces, w_plain)


def test_stage_iterators_end_with_what_their_stage_reads(tmp_path: Path, monkeypatch) -> None:
    """Each iterator the feed starts is bounded by the micro-steps its stage has left (a
    continuous loader's workers then stop at the stage's end): 5 steps x 2 micro-steps per
    stage, epochs of 4 batches, the next stage's iterator started early."""
    from progvid.engine import feed

    bounds = []
    iterate = feed._iterate
    monkeypatch.setattr(feed, "_iterate", lambda loader, n: bounds.append(n) or iterate(loader, n))
    monkeypatch.setattr(feed, "WARM_SECONDS", 1e9)
    _run(tmp_path / "bounds", True, 2, ())
    # stage 0 at micro-steps 0, 4, 8; stage 1's first iterator warmed after stage 0's first
    # step; stage 1 at micro-steps 4 and 8
    assert bounds == [10, 10, 6, 2, 6, 2]


def test_next_stage_loaders_start_early_and_serve_the_same_batches(tmp_path: Path, monkeypatch) -> None:
    """With the next stage's loaders started before it begins (here from the first step of a
    stage on), the batches and weights are those of loaders built at the stage change, also
    when the run is cut and resumed around the change."""
    from progvid.engine import feed, trainer

    made = []
    build = trainer.Trainer._stage_loaders
    monkeypatch.setattr(trainer.Trainer, "_stage_loaders",
                        lambda self, index, stage: made.append((index, self.step)) or build(self, index, stage))
    plain, w_plain = _run(tmp_path / "off", False, 1, ())
    assert made == [(0, 0), (1, 5)]
    made.clear()
    monkeypatch.setattr(feed, "WARM_SECONDS", 1e9)
    early, w_early = _run(tmp_path / "on", True, 1, ())
    assert made == [(0, 0), (1, 1)]  # built after the first step of stage 0, used at step 5
    assert early == plain and torch.equal(w_early, w_plain)
    pieces, w_pieces = _run(tmp_path / "pieces", True, 1, (4, 5))
    assert pieces == plain and torch.equal(w_pieces, w_plain)


class PhasedTask(ToyTask):
    """A loss term per stage, as HCML's phases have: `term_a` in stage 0, `term_b` in stage 1,
    each equal to its step number."""

    def step(self, model, batch, ctx: StepContext):
        out = super().step(model, batch, ctx)
        name = "term_a" if ctx.stage_index == 0 else "term_b"
        return {**out, name: torch.tensor(float(ctx.step))}


def test_each_loss_term_is_averaged_over_the_steps_that_gave_it(tmp_path: Path) -> None:
    import json

    torch.manual_seed(0)
    stages = (Stage(3, 2, 4, ConstantLR(0.1)), Stage(3, 2, 4, ConstantLR(0.05)))
    tr = Trainer(torch.nn.Linear(1, 1), PhasedTask(), Schedule(stages), tmp_path,
                 TrainSettings(log_every=4, tensorboard=False, progress=False),
                 device=torch.device("cpu"))
    tr.fit()
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    # a record at each stage's end (a window never spans two stages) and every 4 steps
    assert [(r["step"], r["stage"]) for r in rows] == [(2, 0), (3, 1), (5, 1)]
    assert rows[0]["term_a"] == 1.0 and "term_b" not in rows[0]  # steps 0, 1, 2
    assert rows[1]["term_b"] == 3.0 and rows[2]["term_b"] == 4.5  # step 3; steps 4, 5
