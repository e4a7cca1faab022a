"""transformers interop with heads: a progvid ViT classifier <-> VideoMAEForVideoClassification
(logit parity both ways, in memory and through folders), exported folders (id2label,
preprocessor_config.json for AutoImageProcessor, progvid.json), and hub ids resolved offline
from a locally populated cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ckpt_util import (
    DATA,
    NAMES,
    finetune_checkpoint,
    hub_cache,
    pretrain_checkpoint,
    randomize,
    tiny_classifier,
    video_input,
)
from progvid.cli import main
from progvid.data.transforms import Normalize
from progvid.errors import CheckpointError, ProgvidError
from progvid.interop.hf import (
    classifier_from_transformers,
    classifier_to_transformers,
    export_hf,
)
from progvid.loading import classifier_from_pretrained, load_classifier, load_videomae

# fp32 round-off of two implementations of the same network (measured ~1e-6 on these logits)
ROUND_OFF = 1e-5
# a reloaded folder's fc_norm has transformers' fixed eps 1e-5 instead of progvid's 1e-6
EPS_GAP = 1e-4


@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers")


def hf_logits(hf, video: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return hf(pixel_values=video.permute(0, 2, 1, 3, 4)).logits  # (B, T, C, H, W)


def ours(model, video: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(video)


def test_progvid_to_transformers_in_memory(transformers) -> None:
    model = tiny_classifier()
    hf = classifier_to_transformers(model, NAMES)
    assert isinstance(hf, transformers.VideoMAEForVideoClassification)
    assert hf.config.id2label == dict(enumerate(NAMES))
    assert hf.config.label2id == {n: i for i, n in enumerate(NAMES)}
    assert hf.config.use_mean_pooling
    video = video_input(model)
    diff = (ours(model, video) - hf_logits(hf, video)).abs().max().item()
    print(f"progvid -> transformers (in memory): max abs logit difference {diff:.3g}")
    assert diff < ROUND_OFF


def test_transformers_to_progvid(transformers) -> None:
    config = transformers.VideoMAEConfig(
        image_size=32, patch_size=8, num_frames=4, tubelet_size=2, hidden_size=32,
        num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, layer_norm_eps=1e-6,
        use_mean_pooling=True, num_labels=3, id2label={0: "a", 1: "b", 2: "c"})
    torch.manual_seed(0)
    hf = randomize(transformers.VideoMAEForVideoClassification(config))
    model, names = classifier_from_transformers(hf)
    assert names == ["a", "b", "c"] and model.fc_norm.eps == 1e-5
    video = video_input(model)
    diff = (ours(model, video) - hf_logits(hf, video)).abs().max().item()
    print(f"transformers -> progvid (in memory): max abs logit difference {diff:.3g}")
    assert diff < ROUND_OFF
    back = classifier_to_transformers(model, names)  # and back: the very same weights
    sd, sd_back = hf.state_dict(), back.state_dict()
    assert sd.keys() == sd_back.keys()
    # a key bias (transformers 5.0-5.2x) cancels in softmax: dropped on the way in, zeros back
    assert all(torch.equal(sd[k], sd_back[k]) if not k.endswith("key.bias")
               else torch.count_nonzero(sd_back[k]) == 0 for k in sd)
    config.use_mean_pooling = False
    with pytest.raises(ProgvidError, match="use_mean_pooling=False"):
        classifier_from_transformers(transformers.VideoMAEForVideoClassification(config))


def test_export_folder_loads_in_transformers_with_processor(transformers, tmp_path: Path) -> None:
    model = tiny_classifier()
    out = export_hf(model, tmp_path / "hf", class_names=NAMES)
    hf = transformers.VideoMAEForVideoClassification.from_pretrained(out).eval()
    assert hf.config.id2label == dict(enumerate(NAMES))
    video = video_input(model)
    diff = (ours(model, video) - hf_logits(hf, video)).abs().max().item()
    print(f"progvid -> transformers folder: max abs logit difference {diff:.3g} (fc_norm eps)")
    assert diff < EPS_GAP
    # progvid reads the folder back as transformers computes it: fc_norm eps 1e-5
    back, ckpt = load_classifier(out)
    assert ckpt.task == "transformers" and ckpt.kind == "vit" and ckpt.class_names == NAMES
    diff = (ours(back, video) - hf_logits(hf, video)).abs().max().item()
    print(f"transformers folder -> progvid: max abs logit difference {diff:.3g}")
    assert diff < ROUND_OFF
    # the preprocessing: AutoImageProcessor gives progvid's normalized clip
    processor = transformers.AutoImageProcessor.from_pretrained(out)
    assert list(processor.image_mean) == pytest.approx(DATA["mean"])
    assert list(processor.image_std) == pytest.approx(DATA["std"])
    frames = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    pixels = processor(list(frames), return_tensors="pt")["pixel_values"]  # (1, T, C, H, W)
    mine = Normalize(DATA["mean"], DATA["std"])(torch.from_numpy(frames))  # (C, T, H, W)
    torch.testing.assert_close(pixels[0].permute(1, 0, 2, 3), mine, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        a = hf(pixel_values=pixels).logits
        b = model(mine[None])
    assert (a - b).abs().max().item() < EPS_GAP


def test_export_cli_of_a_finetuned_run(transformers, tmp_path: Path, capsys) -> None:
    model = tiny_classifier()
    run = finetune_checkpoint(tmp_path / "ft", model)
    assert main(["export", str(run), str(tmp_path / "out")]) == 0
    assert "VideoMAEForVideoClassification.from_pretrained" in capsys.readouterr().out
    out = tmp_path / "out"
    hf = transformers.VideoMAEForVideoClassification.from_pretrained(out).eval()
    assert hf.config.id2label == dict(enumerate(NAMES))
    assert (out / "preprocessor_config.json").is_file()
    side = json.loads((out / "progvid.json").read_text())
    assert side["data"]["sampling_rate"] == 2 and side["eval"]["clips"] == 1
    video = video_input(model)
    assert (ours(model, video) - hf_logits(hf, video)).abs().max().item() < EPS_GAP
    # read back, the folder keeps the run's data and eval settings
    _, ckpt = load_classifier(out)
    assert ckpt.data.sampling_rate == 2 and ckpt.data.input_size == 32
    assert list(ckpt.data.mean) == pytest.approx(DATA["mean"])
    assert (ckpt.eval.clips, ckpt.eval.crops) == (1, 1)
    # damaged: truncated weights or bad eval settings are one line naming the file, exit 2
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    (bad / "model.safetensors").write_bytes((out / "model.safetensors").read_bytes()[:5000])
    capsys.readouterr()
    assert main(["export", str(bad), str(tmp_path / "again")]) == 2
    assert f"{bad}: cannot load the transformers VideoMAEForVideoClassification" in capsys.readouterr().err
    shutil.copy(out / "model.safetensors", bad / "model.safetensors")
    (bad / "progvid.json").write_text(json.dumps({**side, "eval": {"crops": 2}}))
    with pytest.raises(CheckpointError, match=r"bad/progvid.json: bad `eval` settings"):
        _ = load_classifier(bad)[1].eval


def test_pretraining_export_has_a_preprocessor(transformers, tmp_path: Path, capsys) -> None:
    run = pretrain_checkpoint(tmp_path / "pre")
    assert main(["export", str(run), str(tmp_path / "out")]) == 0
    assert "VideoMAEForPreTraining.from_pretrained" in capsys.readouterr().out
    processor = transformers.AutoImageProcessor.from_pretrained(tmp_path / "out")
    assert processor.crop_size["height"] == 32 and processor.size["shortest_edge"] == 32
    assert load_videomae(tmp_path / "out").hparams["embed_dim"] == 32


def test_finetune_init_keeps_a_matching_head(transformers, tmp_path: Path) -> None:
    model = tiny_classifier()
    export_hf(model, tmp_path / "hf", class_names=NAMES)
    same, report = classifier_from_pretrained(tmp_path / "hf", num_classes=4, class_names=NAMES)
    assert report.head == "kept (4 classes)" and "head kept" in str(report)
    assert torch.equal(same.head.weight, model.head.weight)
    assert same.fc_norm.eps == 1e-5  # as the transformers weights were trained / exported
    other, report = classifier_from_pretrained(tmp_path / "hf", num_classes=3)
    assert report.head.startswith("new (the source's has 4 classes")
    assert report.unexpected == ["head.bias", "head.weight"]
    renamed, report = classifier_from_pretrained(tmp_path / "hf", num_classes=4,
                                                 class_names=list("abcd"))
    assert report.head.startswith("new") and "names differ" in report.head
    # a progvid fine-tuned run works as model.init too
    run = finetune_checkpoint(tmp_path / "ft", model)
    again, report = classifier_from_pretrained(run, num_classes=4)
    assert report.kind == "progvid" and report.head == "kept (4 classes)"
    video = video_input(model)
    assert torch.equal(ours(again.eval(), video), ours(model, video))


# -- hub ids, offline, from a local cache ---------------------------------------------------------


@pytest.fixture
def offline_cache(tmp_path: Path, monkeypatch) -> Path:
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_hub_id_loads_from_the_cache(transformers, offline_cache: Path, tmp_path: Path,
                                     synth_dir: Path, capsys) -> None:
    pytest.importorskip("huggingface_hub")
    model = tiny_classifier()
    export_hf(model, tmp_path / "hf", class_names=NAMES)
    hub_cache(offline_cache, "someone/tiny-videomae-ft", tmp_path / "hf")
    loaded, ckpt = load_classifier("someone/tiny-videomae-ft")
    assert ckpt.class_names == NAMES and ckpt.path.parent.name == "snapshots"
    video = video_input(model)
    assert (ours(loaded, video) - ours(model, video)).abs().max().item() < EPS_GAP
    _, report = classifier_from_pretrained("someone/tiny-videomae-ft@main", num_classes=2)
    assert report.kind == "transformers"
    clip = synth_dir / "videos" / "val_00000.mp4"
    assert main(["predict", "someone/tiny-videomae-ft", str(clip), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["predictions"][0]["labels"][0] in NAMES
    # not cached while offline: one line naming the id, exit 2
    with pytest.raises(CheckpointError, match="not in the Hugging Face cache") as err:
        load_classifier("someone/absent")
    assert "\n" not in str(err.value) and "HF_HUB_OFFLINE" in str(err.value)
    assert main(["predict", "someone/absent", str(clip)]) == 2
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1 and "someone/absent: checkpoint not found" in err_lines[0]
    assert main(["viz", "recon", "someone/tiny-videomae-ft", str(clip), "--out",
                 str(tmp_path / "r.png")]) == 2
    assert "not a VideoMAE pre-training checkpoint (a transformers VideoMAEForVideoClassification" \
        in capsys.readouterr().err


def test_hub_id_through_the_installed_cli(transformers, tmp_path: Path, synth_dir: Path) -> None:
    """The hub's own environment variables, read at start-up, as a user sets them."""
    pytest.importorskip("huggingface_hub")
    pretrain_checkpoint(tmp_path / "pre")
    assert main(["export", str(tmp_path / "pre"), str(tmp_path / "hf")]) == 0
    hub_cache(tmp_path / "home" / "hub", "org/tiny-videomae", tmp_path / "hf")
    env = {**os.environ, "HF_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    clip = synth_dir / "videos" / "val_00000.mp4"
    run = [sys.executable, "-m", "progvid", "viz", "recon"]
    r = subprocess.run([*run, "org/tiny-videomae", str(clip), "--out", str(tmp_path / "r.png")],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "r.png").stat().st_size > 1000
    r = subprocess.run([*run, "org/missing", str(clip), "--out", str(tmp_path / "x.png")],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "not in the Hugging Face cache" in r.stderr


def test_eval_of_a_transformers_classifier(transformers, tmp_path: Path, synth_dir: Path,
                                           monkeypatch, capsys) -> None:
    export_hf(tiny_classifier(), tmp_path / "hf", class_names=NAMES)
    monkeypatch.chdir(tmp_path)
    assert main(["eval", str(tmp_path / "hf")]) == 2
    assert "no validation list recorded (data.val); give one with --set" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "hf"), "--views", "1x1", "--json", "--set",
                 f"data.root={synth_dir}", "--set", "data.val=val.csv"]) == 0
    assert json.loads(capsys.readouterr().out)["num_videos"] == 12
    assert (tmp_path / "eval.json").is_file() and (tmp_path / "confusion.png").is_file()
    assert main(["eval", str(tmp_path / "hf"), "--set", "optim.base_lr=1"]) == 2
    assert "only data.* settings" in capsys.readouterr().err
