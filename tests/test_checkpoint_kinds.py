"""A checkpoint of the wrong kind, given to any command, is one line naming the path, what it
is and what the command needs (exit 2); and the right kinds are accepted from every source."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ckpt_util import (
    DATA,
    finetune_checkpoint,
    pretrain_checkpoint,
    randomize,
    tiny_classifier,
    tiny_videomae,
)
from progvid.cli import main
from progvid.config import HCMLModelConfig
from progvid.engine.checkpoint import plain_state_dict, save_checkpoint
from progvid.models import videomae
from progvid.models.hcml import HCMLNet
from progvid.models.resnet3d import resnet3d_from_hparams
from progvid.tasks.hcml import hcml_hparams


@pytest.fixture(scope="module")
def kinds(tmp_path_factory) -> dict[str, Path]:
    """One source of each kind."""
    root = tmp_path_factory.mktemp("kinds")
    out = {"pre": pretrain_checkpoint(root / "pre"), "ft": finetune_checkpoint(root / "ft")}
    hp = hcml_hparams(HCMLModelConfig(width=0.25, levels=(1,)), 4)
    for name, model, kind in (("r3d", resnet3d_from_hparams(hp), "resnet3d"),
                              ("hcml", HCMLNet.from_hparams(hp), "hcml")):
        task = "finetune" if name == "r3d" else "hcml"
        save_checkpoint(root / name, 1, plain_state_dict(model), {"step": 1},
                        {"task": task, "model_kind": kind, "model": hp, "data": DATA,
                         "class_names": list("abcd"), "num_classes": 4})
        out[name] = root / name
    vmae = tiny_videomae()
    official = randomize(videomae("tiny", num_frames=4, img_size=32, patch_size=8, depth=1,
                                  decoder_depth=1))  # standard widths: heads are inferred
    torch.save({"model": official.state_dict()}, root / "official_pre.pth")
    out["official_pre"] = root / "official_pre.pth"
    cls = tiny_classifier()
    official_ft = {k.removeprefix("encoder."): v for k, v in cls.state_dict().items()}
    torch.save({"module": official_ft}, root / "official_ft.pth")
    out["official_ft"] = root / "official_ft.pth"
    transformers = pytest.importorskip("transformers")
    from progvid.interop.hf import export_hf, to_transformers

    export_hf(vmae, root / "hf_pre")
    to_transformers(vmae).videomae.save_pretrained(str(root / "hf_model"))  # VideoMAEModel
    out["hf_pre"], out["hf_model"] = root / "hf_pre", root / "hf_model"
    (root / "bert").mkdir()
    (root / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    out["bert"] = root / "bert"
    assert transformers
    return out


@pytest.mark.parametrize(("command", "source", "message"), [
    ("predict", "pre", "not a classifier checkpoint (task 'pretrain', model kind 'videomae'); "
                       "fine-tune it first"),
    ("predict", "hf_pre", "not a classifier checkpoint (a transformers VideoMAEForPreTraining "
                          "folder)"),
    ("predict", "official_pre", "not a classifier checkpoint (an official VideoMAE pre-training "
                                "file)"),
    ("eval", "pre", "not a classifier checkpoint (task 'pretrain'"),
    ("eval", "hf_model", "not a classifier checkpoint (a transformers VideoMAEModel folder)"),
    ("export", "r3d", "not a VideoMAE or ViT classifier checkpoint (task 'finetune', model kind "
                      "'resnet3d'); transformers has VideoMAE models only"),
    ("export", "hcml", "not a VideoMAE or ViT classifier checkpoint (task 'hcml'"),
    ("viz recon", "ft", "not a VideoMAE pre-training checkpoint (task 'finetune', model kind "
                        "'vit'); this needs the decoder of a pre-training model"),
    ("viz recon", "hf_model", "not a VideoMAE pre-training checkpoint (a transformers "
                              "VideoMAEModel folder)"),
    ("viz recon", "official_ft", "not a VideoMAE pre-training checkpoint (an official VideoMAE "
                                 "fine-tuned file)"),
    ("viz recon", "r3d", "not a VideoMAE pre-training checkpoint (task 'finetune', model kind "
                         "'resnet3d')"),
    ("viz flow", "pre", "not an HCML checkpoint (task 'pretrain', model kind 'videomae'); this "
                        "needs an HCML run"),
    ("viz flow", "hf_pre", "not an HCML checkpoint (a transformers VideoMAEForPreTraining"),
    ("deploy", "ft", "not an HCML checkpoint (task 'finetune', model kind 'vit')"),
    ("predict", "bert", "not a VideoMAE transformers folder (model_type 'bert')"),
])
def test_wrong_kind_is_one_line(kinds, synth_dir: Path, tmp_path: Path, capsys, command: str,
                                source: str, message: str) -> None:
    video = str(synth_dir / "videos" / "val_00000.mp4")
    args = {"predict": [str(kinds[source]), video], "eval": [str(kinds[source])],
            "export": [str(kinds[source]), str(tmp_path / "out")],
            "viz recon": [str(kinds[source]), video, "--out", str(tmp_path / "x.png")],
            "viz flow": [str(kinds[source]), video, "--out", str(tmp_path / "x.png")],
            "deploy": [str(kinds[source])]}[command]
    assert main([*command.split(), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith(f"progvid: error: {kinds[source]}"), err
    assert message in err, err
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "out").exists()


def test_right_kinds_from_every_source(kinds, synth_dir: Path, tmp_path: Path) -> None:
    video = str(synth_dir / "videos" / "val_00000.mp4")
    for i, source in enumerate(("pre", "hf_pre", "official_pre")):
        assert main(["viz", "recon", str(kinds[source]), video, "--out",
                     str(tmp_path / f"r{i}.png")]) == 0
    assert main(["predict", str(kinds["ft"]), video]) == 0
    assert main(["predict", str(kinds["r3d"]), video]) == 0
    assert main(["viz", "flow", str(kinds["hcml"]), video, "--out", str(tmp_path / "f.png")]) == 0
    for source in ("pre", "ft", "official_pre", "hf_pre"):
        assert main(["export", str(kinds[source]), str(tmp_path / f"hf_{source}")]) == 0
