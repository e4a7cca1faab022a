from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from progvid.cli import build_parser, main


def _subcommands() -> list[list[str]]:
    parser = build_parser()
    out = []
    for action in parser._subparsers._group_actions:  # the one subparsers action
        for name, sub in action.choices.items():
            nested = [a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction"]
            if nested:
                out += [[name, child] for child in nested[0].choices]
            out.append([name])
    return out


@pytest.mark.parametrize("cmd", _subcommands(), ids=lambda c: " ".join(c))
def test_help_everywhere(cmd: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*cmd, "--help"])
    assert exc.value.code == 0
    assert "usage: progvid" in capsys.readouterr().out


def test_bad_usage_exits_2(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2


def test_probe_json(synth_dir: Path, capsys) -> None:
    video = synth_dir / "videos" / "train_00000.mp4"
    assert main(["data", "probe", str(video), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["frames"] == 16 and info["width"] == 32 and info["height"] == 32
    assert set(info) >= {"frames", "fps", "width", "height", "duration"}


def test_probe_missing_file_one_line(tmp_path: Path, capsys) -> None:
    assert main(["data", "probe", str(tmp_path / "gone.mp4")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gone.mp4: file not found" in err[0] and "Traceback" not in err[0]


def test_data_check(synth_dir: Path, tmp_path: Path, capsys) -> None:
    assert main(["data", "check", str(synth_dir / "val.csv"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"ok": 12, "bad": []}
    (tmp_path / "bad.mp4").write_bytes(b"nope")
    (tmp_path / "empty.mp4").write_bytes(b"")
    good = (synth_dir / "videos" / "val_00000.mp4").resolve()
    (tmp_path / "list.txt").write_text(f"{good} 0\nbad.mp4 1\nmissing.mp4 2\nempty.mp4 0\n")
    assert main(["data", "check", str(tmp_path / "list.txt"), "--json"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] == 1
    reasons = {Path(b["path"]).name: (b["line"], b["reason"]) for b in report["bad"]}
    assert reasons["bad.mp4"][0] == 2 and "cannot open" in reasons["bad.mp4"][1]
    assert reasons["missing.mp4"] == (3, "file not found")
    assert "empty" in reasons["empty.mp4"][1]


def test_data_check_malformed_list(tmp_path: Path, capsys) -> None:
    (tmp_path / "list.txt").write_text("a.mp4 zero\n")
    assert main(["data", "check", str(tmp_path / "list.txt")]) == 2
    assert "list.txt:1: label 'zero' is not an integer" in capsys.readouterr().err


def test_config_validate(tmp_path: Path, capsys) -> None:
    good = tmp_path / "ok.yaml"
    good.write_text(yaml.safe_dump({"task": "pretrain", "optim": {"base_lr": 1e-4},
                                    "data": {"train": "train.csv"}}))
    assert main(["config", "validate", str(good), "--no-data"]) == 0
    assert main(["config", "validate", str(good)]) == 2  # its list file does not exist
    assert "train.csv: list file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"task": "pretrain", "optim": {"lrr": 1e-4}}))
    assert main(["config", "validate", str(bad)]) == 2
    assert "unknown key `optim.lrr`" in capsys.readouterr().err
    assert main(["config", "validate", str(good), "--set", "optim.base_lr=-1"]) == 2
    assert "`optim.base_lr`: Input should be greater than 0" in capsys.readouterr().err
    # the loader's hand-over keys: one line naming the field
    for setting, said in (("data.transfer=int4", "`data.transfer`: Input should be 'auto', 'uint8'"),
                          ("data.transfer_batches=0", "`data.transfer_batches`: must be `auto` or at least 1"),
                          ("data.erase_prob=0.25", "transfer uint8 cannot go with erase_prob > 0")):
        extra = ["--set", "data.transfer=uint8"] if setting.startswith("data.erase") else []
        assert main(["config", "validate", str(good), "--no-data", *extra, "--set", setting]) == 2
        err = capsys.readouterr().err
        assert said in err and len(err.strip().splitlines()) == 1, err
    assert main(["config", "validate", str(good), "--no-data", "--set", "optim.base_lr=3e-4",
                 "--print"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["optim"]["base_lr"] == pytest.approx(3e-4)


def test_shipped_recipes_validate() -> None:
    from progvid.config import list_recipes

    recipes = list_recipes()
    assert len(recipes) >= 27
    for recipe in recipes:  # their datasets are not here: everything but the data files
        assert main(["config", "validate", recipe.name, "--no-data"]) == 0, recipe.name


def test_runtime_failure_exits_1(tmp_path: Path, capsys, monkeypatch) -> None:
    import progvid.data.video as video

    def boom(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(video, "probe", boom)
    assert main(["data", "probe", str(tmp_path / "x.mp4")]) == 1
    assert "runtime failure: RuntimeError: disk on fire" in capsys.readouterr().err


def test_synth_and_pretrain_cli(tmp_path: Path) -> None:
    """The console entry point end to end, in a subprocess like a user would run it."""
    exe = [sys.executable, "-m", "progvid"]
    data = tmp_path / "d"
    r = subprocess.run([*exe, "synth", str(data), "--train", "8", "--val", "4", "--size", "32",
                        "--frames", "8", "--classes", "4", "--workers", "1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (data / "train.csv").is_file() and (data / "classes.txt").is_file()
    cfg = "pretrain/tiny_videomae"  # a shipped recipe, by name
    r = subprocess.run([*exe, "pretrain", cfg, "--out", str(tmp_path / "run"),
                        "--set", f"data.root={data}", "--set", "train.max_steps=2",
                        "--set", "data.workers=0", "--set", "plan.stages=[{frames: 8, share: 1.0}]"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "done: 2 steps" in r.stdout
    assert (tmp_path / "run" / "config.yaml").is_file()
    r = subprocess.run([*exe, "pretrain", cfg, "--set", "optim.lrr=1"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown key `optim.lrr` (did you mean `optim.lr_rule`?)" in r.stderr
    r = subprocess.run([*exe, "pretrain", cfg, "--set", "plan.stages.0.frames=8"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "`plan.stages` is not set in the config" in r.stderr
