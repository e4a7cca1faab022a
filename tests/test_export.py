from __future__ import annotations

from pathlib import Path

import pytest
import torch
from engine_util import tiny_pretrain

from progvid.cli import main
from progvid.pretrain import load_videomae, run_pretrain


def test_export_hf_from_cli(synth_dir: Path, tmp_path: Path, capsys) -> None:
    transformers = pytest.importorskip("transformers")
    run_pretrain(tiny_pretrain(synth_dir, train__max_steps=2), out=str(tmp_path / "run"))
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "hf"), "--format", "hf"]) == 0
    hf = transformers.VideoMAEForPreTraining.from_pretrained(tmp_path / "hf").eval()
    ours = load_videomae(tmp_path / "run")
    video = torch.randn(2, 3, 4, 32, 32)
    mask = ours.random_mask(2, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = ours(video, mask).loss
        b = hf(pixel_values=video.permute(0, 2, 1, 3, 4), bool_masked_pos=mask).loss
    assert float(a) == pytest.approx(float(b), rel=1e-4)


def test_export_bad_checkpoint(tmp_path: Path, capsys) -> None:
    assert main(["export", str(tmp_path / "nope"), str(tmp_path / "out")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
