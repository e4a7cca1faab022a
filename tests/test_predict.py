"""`progvid predict`: many videos, folders and lists, batched; JSON / CSV rows; unreadable files
skipped and reported; one code path for one video (`predict_video`)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import torch

from ckpt_util import NAMES, finetune_checkpoint, pretrain_checkpoint, tiny_classifier
from progvid.cli import main
from progvid.data.clips import test_clip
from progvid.errors import DataError, ProgvidError
from progvid.loading import load_classifier
from progvid.tasks.evaluate import predict, predict_video


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return finetune_checkpoint(tmp_path_factory.mktemp("ft") / "run", tiny_classifier())


@pytest.fixture(scope="module")
def videos(synth_dir: Path) -> list[Path]:
    return sorted((synth_dir / "videos").glob("val_*.mp4"))[:5]


def test_batched_equals_one_by_one(run: Path, videos: list[Path]) -> None:
    report = predict(run, videos, topk=3, batch_size=2, progress=False)
    assert [p.path for p in report.predictions] == [str(v) for v in videos]
    assert report.failed == [] and report.views == "1x1"
    model, ckpt = load_classifier(run)
    for p, v in zip(report.predictions, videos, strict=True):
        with torch.no_grad():
            probs = model(test_clip(ckpt.data, v)).softmax(-1)[0]
        top = probs.topk(3)
        assert p.labels == [NAMES[i] for i in top.indices.tolist()]
        assert p.scores == pytest.approx(top.values.tolist(), abs=1e-6)
        assert p.scores == sorted(p.scores, reverse=True)
    one = predict_video(run, videos[0], topk=3)
    assert [n for n, _ in one] == report.predictions[0].labels


def test_folders_lists_and_bad_files(run: Path, videos: list[Path], synth_dir: Path,
                                     tmp_path: Path) -> None:
    folder = tmp_path / "clips"
    (folder / "sub").mkdir(parents=True)
    for v in videos[:2]:
        (folder / "sub" / v.name).write_bytes(v.read_bytes())
    (folder / "broken.mp4").write_bytes(b"not a video")
    (folder / "notes.txt").write_text("ignored: not a video")
    report = predict(run, [folder, synth_dir / "val.csv", tmp_path / "gone.mp4"],
                     batch_size=3, progress=False)
    listed = (synth_dir / "val.csv").read_text().split()
    assert len(report.predictions) == 2 + sum(1 for x in listed if x.endswith(".mp4"))
    failed = dict(report.failed)
    assert set(failed) == {str(folder / "broken.mp4"), str(tmp_path / "gone.mp4")}
    assert failed[str(tmp_path / "gone.mp4")] == "file not found"
    assert "cannot open" in failed[str(folder / "broken.mp4")]
    with pytest.raises(ProgvidError, match="--topk"):
        predict(run, videos, topk=0)
    with pytest.raises(DataError, match="broken.mp4"):
        predict_video(run, folder / "broken.mp4")


def test_cli_json_csv_text_and_exit_codes(run: Path, videos: list[Path], tmp_path: Path,
                                          capsys) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"nope")
    args = ["predict", str(run), str(videos[0]), str(bad), str(videos[1]), "--topk", "2"]
    assert main([*args, "--json", "--batch-size", "2"]) == 0
    cap = capsys.readouterr()
    out = json.loads(cap.out)
    assert [r["path"] for r in out["predictions"]] == [str(videos[0]), str(videos[1])]
    assert all(len(r["labels"]) == len(r["scores"]) == 2 for r in out["predictions"])
    assert out["failed"][0]["path"] == str(bad)
    assert f"skipped {bad}: " in cap.err and "predicted 2 of 3 video(s)" in cap.err
    assert main([*args, "--csv", str(tmp_path / "p.csv")]) == 0
    rows = list(csv.reader(io.StringIO((tmp_path / "p.csv").read_text())))
    assert rows[0] == ["path", "label_1", "score_1", "label_2", "score_2"]
    assert [r[0] for r in rows[1:]] == [str(videos[0]), str(videos[1])]
    assert rows[1][1] in NAMES and 0 < float(rows[1][2]) <= 1
    capsys.readouterr()
    assert main(["predict", str(run), str(videos[0]), "--views", "2x3"]) == 0
    cap = capsys.readouterr()
    assert cap.out.startswith(f"{videos[0]}: ") and "%" in cap.out and "2x3 views" in cap.err
    # nothing readable: exit 2, one error line after the per-file reports
    assert main(["predict", str(run), str(bad), str(tmp_path / "gone.mp4")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("progvid: error: ") and "no readable video among 2" in err[-1]
    assert main(["predict", str(run), str(videos[0]), "--views", "2by3"]) == 2
    assert "--views" in capsys.readouterr().err


def test_predict_refuses_a_pretraining_run(tmp_path: Path, videos: list[Path], capsys) -> None:
    pre = pretrain_checkpoint(tmp_path / "pre")
    assert main(["predict", str(pre), str(videos[0])]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not a classifier checkpoint (task 'pretrain'" in err


def test_malformed_list_names_the_line(run: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "list.txt").write_text("a.mp4 zero\n")
    assert main(["predict", str(run), str(tmp_path / "list.txt")]) == 2
    assert "list.txt:1: label 'zero' is not an integer" in capsys.readouterr().err
