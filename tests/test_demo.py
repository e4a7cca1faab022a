"""`progvid demo --quick --with-hcml`: every file it promises, labelled as a smoke run, and a
rerun resumes to the same numbers (deterministic for a seed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from progvid.cli import main


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # a relative --out, as `make demo` gives (the label list must
    assert main(["demo", "--quick", "--with-hcml", "--out", "demo"]) == 0  # not be read against the data)
    tmp_path = tmp_path / "demo"
    out = tmp_path / "quick"
    for name in ("report.md", "results.json", "tradeoff.png", "tradeoff_top1.png", "recon.png",
                 "flow.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    report = (out / "report.md").read_text()
    assert "SMOKE RUN" in report and "| tpl |" in report and "| hcml |" in report
    assert "| *random init (no pre-training)* |" in report and "| *trivial level* |" in report
    assert "What this shows:" in report and "zero-output level" in report
    before = json.loads((out / "results.json").read_text())
    trained = {p: p.read_text() for p in out.glob("*/metrics.jsonl")}
    # 4 pre-training runs, 3 low-label fine-tunings (baseline, TPL, scratch), HCML phases and
    # its 2 fine-tunings
    assert len(trained) == 10
    ref = before["reference"]
    assert ref["chance"] == pytest.approx(1 / 8) and 0 <= ref["finetune_scratch"] <= 1
    assert {r["run"] for r in before["pretrain"] if "finetune_top1" in r} == {"videomae_1", "tpl_1"}
    assert main(["demo", "--quick", "--with-hcml", "--out", str(tmp_path)]) == 0
    # resumed: every run was complete, so no training step was taken or logged again
    assert {p: p.read_text() for p in out.glob("*/metrics.jsonl")} == trained
    after = json.loads((out / "results.json").read_text())
    for a, b in zip(before["pretrain"], after["pretrain"], strict=True):
        assert a["val_loss"] == pytest.approx(b["val_loss"]) and a["top1"] == b["top1"]
        assert a["wall_s"] == b["wall_s"] > 0  # the rerun kept the recorded training time
    assert after["reference"] == pytest.approx(before["reference"])
    assert [r["top1"] for r in before["hcml"]] == [r["top1"] for r in after["hcml"]]
