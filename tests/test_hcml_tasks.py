"""HCML on the engine: phases, freezing, exact resume, joint fine-tuning, deploy, viz."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine_util import losses
from progvid.cli import main
from progvid.config import FinetuneConfig, HCMLConfig, validate
from progvid.engine import checkpoint as ckpt
from progvid.loading import load_classifier
from progvid.tasks.finetune import run_finetune
from progvid.tasks.hcml import build_cnn_classifier, run_hcml_pretrain


def hcml_cfg(data: Path, **over) -> HCMLConfig:
    raw = {"task": "hcml", "seed": 0,
           "data": {"root": str(data), "train": "train.csv", "val": "val.csv",
                    "classes": "classes.txt", "num_frames": 4, "sampling_rate": 2,
                    "input_size": 32, "flip": False, "workers": 0},
           "model": {"width": 0.25, "levels": [1, 2], "num_samples": 4},
           "optim": {"base_lr": 0.05, "warmup_epochs": 0.2},
           "train": {"batch_size": 4, "device": "cpu", "log_every": 1, "tensorboard": False},
           "phases": {"flow_epochs": 0.5, "level_epochs": 0.5}}
    for k, v in over.items():
        sec, _, field = k.partition("__")
        raw.setdefault(sec, {})[field] = v
    return validate(HCMLConfig, raw, "test")


@pytest.fixture(scope="module")
def hcml_run(synth_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hcml")
    run_hcml_pretrain(hcml_cfg(synth_dir, train__ckpt_every=3), out=str(out))
    return out


def test_phases_log_their_losses(hcml_run: Path) -> None:
    rows = [json.loads(x) for x in (hcml_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows] == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # flow, level 1, level 2
    assert all("recon" in r for r in rows if r["stage"] == 0)
    assert all("contrastive_1" in r for r in rows if r["stage"] == 1)
    assert all("contrastive_2" in r for r in rows if r["stage"] == 2)


def test_each_phase_is_charged_what_it_runs(hcml_run: Path) -> None:
    """FLOPs per phase: the flow net alone in phase 0; level 1 the trunk up to it plus the flow
    net (its target); level 2 the trunk up to level 2 only; training = 3 x that forward."""
    import copy

    from progvid.models.hcml import HCMLNet, count_macs
    from progvid.tasks.hcml import hcml_hparams, phase_macs

    net = HCMLNet.from_hparams(hcml_hparams(hcml_cfg(Path(".")).model, 1))
    macs = phase_macs(net, 4, 32)
    frame = torch.empty(1, 3, 32, 32, device="meta")
    flow = 4 * count_macs(copy.deepcopy(net.flow_net).to("meta"), frame, frame)
    assert macs[0] == flow and macs[1] > flow and 0 < macs[2] < flow
    rows = [json.loads(x) for x in (hcml_run / "metrics.jsonl").read_text().splitlines()]
    per_step = [b["flops"] - a["flops"] for a, b in zip(rows, rows[1:], strict=False)]
    # steps 1, 2 (flow), 4, 5 (level 1), 7, 8 (level 2): 4 clips per step, 3 x forward, MACs
    for i, phase in ((0, 0), (1, 0), (3, 1), (4, 1), (6, 2), (7, 2)):
        assert per_step[i] == pytest.approx(4 * 3 * macs[phase], rel=1e-9), (i, phase)


def test_lower_levels_stay_frozen(hcml_run: Path) -> None:
    after_flow = ckpt.load_weights(hcml_run / "checkpoints" / "step_00000003")
    final = ckpt.load_weights(hcml_run / "checkpoints" / "step_00000009")
    after_level1 = ckpt.load_weights(hcml_run / "checkpoints" / "step_00000006")
    # the flow net trains in phase 0 only; level 1 (stem, layer1, its block) in phase 1 only
    for k, v in after_flow.items():
        if k.startswith("flow_net."):
            assert torch.equal(v, final[k]), k
    level1 = [k for k in final if k.startswith(("trunk.backbone.conv1", "trunk.backbone.bn1",
                                                "trunk.backbone.layer1", "trunk.pmb.1"))]
    assert level1 and all(torch.equal(after_level1[k], final[k]) for k in level1)  # incl. BN stats
    assert any(not torch.equal(after_level1[k], final[k]) for k in final if "layer2" in k)


def test_resume_inside_a_level_phase(synth_dir: Path, hcml_run: Path, tmp_path: Path) -> None:
    part = hcml_cfg(synth_dir, train__max_steps=5, train__ckpt_every=5)
    run_hcml_pretrain(part, out=str(tmp_path / "split"))
    run_hcml_pretrain(hcml_cfg(synth_dir), out=str(tmp_path / "split"), resume="auto")
    a, b = losses(hcml_run), losses(tmp_path / "split")
    assert [s for s, _ in a] == [s for s, _ in b]
    for (_, x), (_, y) in zip(a, b, strict=True):
        assert x == pytest.approx(y, rel=1e-5, abs=1e-6)


def ft_cfg(data: Path, name: str, init: str | None) -> FinetuneConfig:
    raw = {"task": "finetune", "epochs": 0.5,
           "data": {"root": str(data), "train": "train.csv", "val": "val.csv",
                    "classes": "classes.txt", "num_frames": 4, "sampling_rate": 2,
                    "input_size": 32, "flip": False, "workers": 0},
           "model": {"name": name, "init": init, "width": 0.25},
           "optim": {"base_lr": 0.05, "warmup_epochs": 0.1, "layer_decay": 1.0},
           "train": {"batch_size": 4, "device": "cpu", "log_every": 1, "tensorboard": False},
           "mixup": {"prob": 0.0}, "eval": {"clips": 1, "crops": 1},
           "hcml": {"width": 0.25, "levels": [1, 2], "num_samples": 4}}
    return validate(FinetuneConfig, raw, "test")


def test_joint_finetune_deploy_and_predict(synth_dir: Path, hcml_run: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "joint"
    run_finetune(ft_cfg(synth_dir, "hcml", str(hcml_run)), out=str(run))
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    rec = [r for r in rows if "loss" in r][-1]  # the last training record
    assert {"cls", "recon", "contrastive_1", "contrastive_2"} <= set(rec)
    assert {"val_top1", "val_top5", "val_loss"} <= set(rows[-1])  # the trunk alone validates
    assert json.loads((run / "eval.json").read_text())["num_videos"] == 12
    model, _ = load_classifier(run)
    assert not hasattr(model, "flow_net")  # evaluation runs the deployed network
    assert main(["deploy", str(run), "--json", "--out", str(tmp_path / "dep")]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["params_deploy"] > rep["params_backbone"] and 0 < rep["macs_overhead"] < 0.15
    assert (tmp_path / "dep" / "model.safetensors").is_file()
    video = synth_dir / "videos" / "val_00002.mp4"
    assert main(["predict", str(run), str(video), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["predictions"][0]["labels"]) == 4


def test_joint_weights_come_from_the_finetuning_config(synth_dir: Path, hcml_run: Path) -> None:
    """Over an HCML checkpoint the network is the checkpoint's, but the joint loss's weights and
    the head's dropout are the fine-tuning config's (`hcml.contrastive_weight=...` applies)."""
    cfg = ft_cfg(synth_dir, "hcml", str(hcml_run))
    cfg = cfg.model_copy(update={"hcml": cfg.hcml.model_copy(update={
        "contrastive_weight": 0.1, "recon_weight": 0.25, "dropout": 0.2, "levels": (1,)})})
    net = build_cnn_classifier(cfg, num_classes=4)
    assert (net.hparams["contrastive_weight"], net.hparams["recon_weight"], net.hparams["dropout"]) == (0.1, 0.25, 0.2)
    assert [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)] == [0.2]
    assert tuple(net.hparams["levels"]) == tuple(net.levels) == (1, 2)  # the network: the checkpoint's


def test_plain_backbone_baseline(synth_dir: Path, tmp_path: Path) -> None:
    run_finetune(ft_cfg(synth_dir, "resnet3d", None), out=str(tmp_path / "r3d"))
    assert json.loads((tmp_path / "r3d" / "eval.json").read_text())["num_videos"] == 12


def test_viz_flow_and_errors(hcml_run: Path, synth_dir: Path, tiny_run: Path, tmp_path: Path, capsys) -> None:
    video = synth_dir / "videos" / "val_00000.mp4"
    assert main(["viz", "flow", str(hcml_run), str(video), "--out", str(tmp_path / "f.png")]) == 0
    assert (tmp_path / "f.png").stat().st_size > 1000
    assert main(["deploy", str(tiny_run)]) == 2  # a VideoMAE run is not an HCML checkpoint
    assert "not an HCML checkpoint" in capsys.readouterr().err
