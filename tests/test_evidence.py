"""bench/evidence.py on a dataset it did not create: one seed, a tiny schedule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = ["model.embed_dim=32", "model.depth=2", "model.num_heads=2", "data.num_frames=4",
        "data.sampling_rate=2", "data.workers=0", "train.batch_size=4"]


@pytest.mark.slow
def test_protocol_runs_on_any_list_folder(synth_dir: Path, tmp_path: Path) -> None:
    sets = [a for s in TINY for a in ("--set", s)]
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "evidence.py"), "--data", str(synth_dir),
         "--seeds", "1", "--budget", "1", "--ft-epochs", "1", "--label-fraction", "0.5",
         "--work", "w", "--json", "--pre-set", "model.decoder_dim=32",
         "--pre-set", "model.decoder_depth=1", "--pre-set", "model.decoder_heads=2",
         "--ft-set", "optim.layer_decay=1.0", *sets],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        cwd=tmp_path)  # a relative --work: the subset lists must not be read against the data
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    for key in ("chance", "probe_pretrained", "probe_random", "knn_pretrained", "knn_random",
                "finetune_pretrained", "finetune_scratch", "paired_finetune_diffs", "val_loss",
                "val_loss_zero_predictor", "seconds"):
        assert key in out, key
    assert out["chance"] == 0.25 and len(out["paired_finetune_diffs"]) == 1
    assert out["overrides"]["ft_set"] == ["optim.layer_decay=1.0"]
    assert 0 <= out["probe_pretrained"] <= 1 and out["val_loss"] > 0
    # norm_pix targets: predicting zeros is predicting each token's mean, a loss near 1
    assert 0.8 < out["val_loss_zero_predictor"] < 1.1


@pytest.mark.slow
def test_rehearsal_preset_writes_its_data_and_runs(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "evidence.py"), "--preset", "rehearsal",
         "--work", "w", "--json", "--seeds", "1"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["preset"] == "rehearsal" and out["chance"] == 0.25 and out["train_clips"] == 16
    assert Path(out["data"]) == (tmp_path / "w" / "data_rehearsal").resolve()
    assert out["label_fraction"] == 0.5 and len(out["paired_finetune_diffs"]) == 1


def test_gpu_preset_is_a_valid_configuration() -> None:
    """The GPU preset's overrides load into both recipes (its run needs a GPU)."""
    sys.path.insert(0, str(ROOT / "bench"))
    import evidence

    from progvid.config import load_config

    g = evidence.PRESETS["gpu"]
    pre = load_config(g["pretrain"], [*g["set"], *g["pre_set"]])
    ft = load_config(g["finetune"], [*g["set"], *g["ft_set"]])
    assert pre.train.device == ft.train.device == "cuda" and pre.data.input_size == 64
    assert pre.model.embed_dim == ft.model.embed_dim == 192 and g["minutes"] <= 8
    # the learning setting's 8x8 token grid, on camera pans
    assert pre.data.input_size // pre.model.patch_size == 8 == ft.data.input_size // ft.model.patch_size
    assert g["synth"]["kind"] == "pan" and pre.model.mask_type == "random"


def test_missing_list_is_one_line(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "evidence.py"), "--data", str(tmp_path)],
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert r.returncode == 2 and r.stderr.strip() == (
        f"evidence: error: {tmp_path}/train.csv: not found (the list format needs train.csv, "
        "val.csv and classes.txt)")


def test_no_data_and_no_preset_is_one_line(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "evidence.py"), "--work", str(tmp_path)],
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert r.returncode == 2 and r.stderr.strip() == (
        "evidence: error: --data: give a dataset folder, or --preset to generate one")
