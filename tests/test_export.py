from __future__ import annotations

from pathlib import Path

import pytest
import torch

from progvid.cli import main
from progvid.loading import load_videomae


def test_export_hf_from_cli(tiny_run: Path, tmp_path: Path, capsys) -> None:
    transformers = pytest.importorskip("transformers")
    assert main(["export", str(tiny_run), str(tmp_path / "hf"), "--format", "hf"]) == 0
    hf = transformers.VideoMAEForPreTraining.from_pretrained(tmp_path / "hf").eval()
    ours = load_videomae(tiny_run)
    video = torch.randn(2, 3, 4, 32, 32)
    mask = ours.random_mask(2, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = ours(video, mask).loss
        b = hf(pixel_values=video.permute(0, 2, 1, 3, 4), bool_masked_pos=mask).loss
    assert float(a) == pytest.approx(float(b), rel=1e-4)


def test_export_bad_checkpoint(tmp_path: Path, capsys) -> None:
    assert main(["export", str(tmp_path / "nope"), str(tmp_path / "out")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_viz_recon_and_plot_cli(tiny_run: Path, synth_dir: Path, tmp_path: Path) -> None:
    video = synth_dir / "videos" / "val_00000.mp4"
    assert main(["viz", "recon", str(tiny_run), str(video), "--out", str(tmp_path / "r.png")]) == 0
    assert (tmp_path / "r.png").stat().st_size > 1000
    assert main(["plot", "losses", str(tiny_run), "--out", str(tmp_path / "l.png")]) == 0
    assert (tmp_path / "l.png").is_file()
    assert main(["viz", "recon", str(tiny_run), str(tmp_path / "none.mp4"), "--out",
                 str(tmp_path / "x.png")]) == 2
