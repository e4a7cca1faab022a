from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine_util import tiny_finetune
from progvid.cli import main
from progvid.config import FinetuneConfig, validate
from progvid.data.loader import ShardSampler
from progvid.loading import load_classifier
from progvid.tasks.evaluate import classification_metrics, video_probabilities
from progvid.tasks.finetune import run_finetune


@pytest.fixture(scope="module")
def ft_run(synth_dir: Path, tiny_run: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ft")
    run_finetune(tiny_finetune(synth_dir, model__init=str(tiny_run)), out=str(out))
    return out


def test_finetune_from_pretrained_then_eval(ft_run: Path) -> None:
    ev = json.loads((ft_run / "eval.json").read_text())
    assert ev["num_videos"] == 12 and ev["views"] == "2x3"
    assert ev["indices_evaluated"] == list(range(12))
    assert 0 <= ev["top1"] <= ev["top5"] <= 1
    assert (ft_run / "confusion.png").stat().st_size > 0
    model, ckpt = load_classifier(ft_run)
    meta = ckpt.meta
    assert meta["class_names"] and len(meta["class_names"]) == 4
    assert model.head.out_features == 4


def test_encoder_weights_come_from_pretraining(synth_dir: Path, tiny_run: Path) -> None:
    from progvid.loading import load_videomae
    from progvid.tasks.finetune import build_classifier

    cfg = tiny_finetune(synth_dir, model__init=str(tiny_run))
    model = build_classifier(cfg, 4)
    ref = load_videomae(tiny_run).encoder.state_dict()
    got = model.encoder.state_dict()
    for k, v in got.items():
        assert torch.equal(v, ref[k]), k


def test_predict_cli(ft_run: Path, synth_dir: Path, tmp_path: Path, capsys) -> None:
    video = synth_dir / "videos" / "val_00001.mp4"
    assert main(["predict", str(ft_run), str(video), "--topk", "2", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["predictions"][0]
    assert row["path"] == str(video)
    assert len(row["scores"]) == 2 and row["scores"][0] >= row["scores"][1]
    assert row["labels"][0] in (synth_dir / "classes.txt").read_text().split()
    (tmp_path / "text.mp4").write_text("not a video")
    assert main(["predict", str(ft_run), str(tmp_path / "text.mp4")]) == 2
    assert "cannot open as a video container" in capsys.readouterr().err


def test_predict_needs_a_classifier(tiny_run: Path, synth_dir: Path, capsys) -> None:
    assert main(["predict", str(tiny_run), str(synth_dir / "videos" / "val_00001.mp4")]) == 2
    assert "not a classifier checkpoint" in capsys.readouterr().err


def test_multiview_aggregation_by_hand() -> None:
    class Fixed(torch.nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :3]  # logits = first three numbers of each view

    views = torch.tensor([[1.0, 0, 0], [0, 2.0, 0], [0, 0, 0], [3.0, 1.0, 0]])
    batch = {"video": views.view(4, 3, 1, 1, 1), "views": 2, "index": torch.tensor([7, 9]),
             "label": torch.tensor([1, 1, 1, 1])}
    idx, probs, labels = video_probabilities(Fixed(), [batch], torch.device("cpu"))
    expected = views.softmax(dim=1).view(2, 2, 3).mean(dim=1)
    assert torch.allclose(probs, expected) and idx.tolist() == [7, 9] and labels.tolist() == [1, 1]
    # by hand: video 0 averages to (0.341, 0.500, 0.159) -> class 1 (right); video 1 to
    # (0.59, 0.22, 0.19) -> class 0 (wrong)
    assert torch.allclose(expected[0], torch.tensor([0.3413, 0.4995, 0.1592]), atol=1e-3)
    m = classification_metrics(expected, labels, 3)
    assert m["top1"] == 0.5 and m["confusion"][1] == [1, 1, 0]


def test_shard_sampler_covers_each_once() -> None:
    seen = [i for r in range(3) for _, i in ShardSampler(10, rank=r, world=3)]
    assert sorted(seen) == list(range(10))


@pytest.mark.slow
def test_distributed_eval_covers_each_video_once(ft_run: Path, tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node", "2", "-m", "progvid", "eval", str(ft_run),
                        "--views", "1x1", "--device", "cpu", "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["num_videos"] == 12  # one rank prints: the output parses
    ev = json.loads((ft_run / "eval.json").read_text())
    assert ev["indices_evaluated"] == list(range(12)) and ev["num_videos"] == 12


def test_eval_from_config_and_bad_views(ft_run: Path, synth_dir: Path, tmp_path: Path, capsys) -> None:
    from progvid.config import save_config

    cfg = validate(FinetuneConfig, {**tiny_finetune(synth_dir).model_dump(mode="json"),
                                    "out": str(ft_run)}, "t")
    save_config(cfg, tmp_path / "ft.yaml")
    assert main(["eval", str(tmp_path / "ft.yaml"), "--views", "1x1"]) == 0
    assert "12 videos, 1x1 views" in capsys.readouterr().out
    assert main(["eval", str(ft_run), "--views", "5by3"]) == 2
    assert "--views: expected CLIPSxCROPS" in capsys.readouterr().err


def test_eval_and_predict_device_option(ft_run: Path, synth_dir: Path, capsys, monkeypatch) -> None:
    import torch

    assert main(["eval", str(ft_run), "--views", "1x1", "--device", "cpu"]) == 0
    assert "12 videos, 1x1 views" in capsys.readouterr().out
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without CUDA
    video = str(synth_dir / "videos" / "val_00000.mp4")
    for argv in (["eval", str(ft_run)], ["predict", str(ft_run), video]):
        assert main([*argv, "--device", "cuda"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == ["progvid: error: --device: cuda requested but no CUDA device is available"]
    with pytest.raises(SystemExit) as e:  # argparse: exit 2, naming the option and the choices
        main(["eval", str(ft_run), "--device", "gpu"])
    assert e.value.code == 2 and "--device: invalid choice: 'gpu'" in capsys.readouterr().err


def test_probes_are_deterministic(tiny_run: Path, synth_dir: Path) -> None:
    from progvid.config import DataConfig
    from progvid.loading import load_videomae
    from progvid.tasks.evaluate import probe_encoder

    enc = load_videomae(tiny_run).encoder
    d = DataConfig(root=str(synth_dir), train="train.csv", val="val.csv", classes="classes.txt",
                   num_frames=4, sampling_rate=2, input_size=32, flip=False, workers=0)
    for method in ("linear", "knn"):
        a = probe_encoder(enc, d, num_frames=4, method=method, seed=3)
        b = probe_encoder(enc, d, num_frames=4, method=method, seed=3)
        assert a == b and 0.0 <= a.top1 <= a.top5 <= 1.0


def test_init_from_a_finetuned_run_keeps_its_head(ft_run: Path, synth_dir: Path,
                                                  tmp_path: Path, capsys) -> None:
    from progvid.tasks.finetune import build_classifier

    source, _ = load_classifier(ft_run)
    cfg = tiny_finetune(synth_dir, model__init=str(ft_run))
    model = build_classifier(cfg, 4)
    assert "head kept (4 classes)" in capsys.readouterr().err
    assert torch.equal(model.head.weight, source.head.weight)
    # exported to transformers, the same run continues with its head too
    assert main(["export", str(ft_run), str(tmp_path / "hf")]) == 0
    model = build_classifier(tiny_finetune(synth_dir, model__init=str(tmp_path / "hf")), 4)
    assert "head kept (4 classes)" in capsys.readouterr().err
    assert torch.equal(model.head.weight, source.head.weight)


def test_validation_each_epoch_keeps_the_best(synth_dir: Path, tmp_path: Path) -> None:
    """Validation every half epoch: top-1, top-5 and loss in metrics.jsonl, the best top-1 as
    checkpoints/best, whose own 1x1 evaluation gives exactly the logged top-1."""
    from progvid.engine.checkpoint import list_checkpoints
    from progvid.tasks.evaluate import evaluate_checkpoint

    cfg = tiny_finetune(synth_dir, epochs=2, eval__every_epochs=0.5, eval__at_end=False)
    run_finetune(cfg, out=str(tmp_path / "ft"))
    rows = [json.loads(x) for x in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if "val_top1" in r]
    steps = max(r["step"] for r in rows) + 1  # 24 videos, batch 4: 6 steps per epoch
    assert [r["step"] + 1 for r in val] == [3, 6, 9, 12] and steps == 12
    for r in val:
        assert 0 <= r["val_top1"] <= r["val_top5"] <= 1 and r["val_loss"] > 0
    best = max(val, key=lambda r: r["val_top1"])  # the first of equals is kept
    best_dir = tmp_path / "ft" / "checkpoints" / "best"
    assert best_dir.is_dir() and best_dir not in list_checkpoints(tmp_path / "ft")
    got = evaluate_checkpoint(best_dir, views=(1, 1), device="cpu", out_dir=str(tmp_path / "e"))
    assert got["top1"] == pytest.approx(best["val_top1"])
    assert got["top5"] == pytest.approx(best["val_top5"])


def test_no_validation_without_labels_or_when_off(synth_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_finetune(synth_dir, eval__every_epochs=0, eval__at_end=False)
    run_finetune(cfg, out=str(tmp_path / "ft"))
    text = (tmp_path / "ft" / "metrics.jsonl").read_text()
    assert "val_top1" not in text and not (tmp_path / "ft" / "checkpoints" / "best").exists()


def test_unlabelled_training_video_is_a_clear_error(synth_dir: Path, tmp_path: Path) -> None:
    """A training list with a video that has no label (allowed for `predict`) stops fine-tuning
    with one line naming the field; the check runs on the host, before the labels move to
    the training device."""
    from progvid.errors import ConfigError
    from progvid.tasks.finetune import run_finetune

    lines = (synth_dir / "train.csv").read_text().splitlines()
    lines[2] = lines[2].rsplit(" ", 1)[0]  # no label
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    cfg = tiny_finetune(synth_dir, data__train=str(tmp_path / "train.csv"), data__val=None)
    with pytest.raises(ConfigError, match="needs a label on every training video"):
        run_finetune(cfg, out=str(tmp_path / "run"))


def test_tied_scores_give_one_prediction_everywhere() -> None:
    """top-1, the confusion matrix and the per-class accuracies take the same class among tied
    scores (top-1 once said 0 with a correct video on the confusion's diagonal)."""
    probs = torch.full((4, 10), 0.1)
    m = classification_metrics(probs, torch.tensor([0, 1, 8, 9]), 10)
    diag = sum(m["confusion"][i][i] for i in range(10))
    assert m["top1"] == diag / 4
    assert m["mean_class_accuracy"] == pytest.approx(
        sum(m["per_class_accuracy"][c] for c in (0, 1, 8, 9)) / 4)
    assert m["per_class_accuracy"][5] is None  # a class absent from the split


def test_eval_refuses_labels_it_cannot_score_and_writes_beside_the_caller(
        ft_run: Path, synth_dir: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    import shutil

    from progvid.engine.checkpoint import list_checkpoints, load_weights

    unl = tmp_path / "unl"
    unl.mkdir()
    shutil.copy(synth_dir / "videos" / "val_00000.mp4", unl / "a.mp4")
    assert main(["eval", str(ft_run), "--views", "1x1", "--set", "data.format=unlabeled",
                 "--set", f"data.val={unl}", "--set", "data.root=/"]) == 2
    assert "a.mp4: has no label" in capsys.readouterr().err
    # a checkpoint folder kept outside its run: results go to the current folder, and a file
    # of the folder stands for the folder
    shelf = tmp_path / "shelf" / "models" / "good"
    shutil.copytree(list_checkpoints(ft_run)[-1], shelf)
    monkeypatch.chdir(tmp_path)
    assert main(["eval", str(shelf / "model.safetensors"), "--views", "1x1"]) == 0
    assert (tmp_path / "eval.json").is_file() and not (tmp_path / "shelf" / "eval.json").exists()
    capsys.readouterr()
    # an official-layout fine-tuned file is named for what it is, not half-loaded
    torch.save(load_weights(shelf), tmp_path / "ft.pth")
    assert main(["export", str(tmp_path / "ft.pth"), str(tmp_path / "x")]) == 2
    assert "reads official files whole as pre-training models only" in capsys.readouterr().err


def test_an_init_of_another_size_than_the_config_names_is_reported(
        synth_dir: Path, tiny_run: Path, capsys) -> None:
    from progvid.tasks.finetune import build_classifier

    cfg = tiny_finetune(synth_dir, model__init=str(tiny_run), model__embed_dim=None, model__depth=None,
                        model__size="small")
    model = build_classifier(cfg, 4)
    assert model.hparams["embed_dim"] == 32  # the init's geometry
    err = capsys.readouterr().err
    assert "describe a 384-wide, 12-deep encoder (small), but model.init's is 32 wide, 2 deep" in err
    build_classifier(tiny_finetune(synth_dir, model__init=str(tiny_run)), 4)
    assert "model.init's is" not in capsys.readouterr().err  # the same geometry: nothing said
