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
