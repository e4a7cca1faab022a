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


# ------------------------------------------------------------- review findings (2026-12-06)
@pytest.mark.parametrize("argv", [
    ["plan", "tiny_tpl", "--world", "0"], ["plan", "tiny_tpl", "--world", "-2"],
    ["flops", "--patch", "0"], ["flops", "--tubelet", "0"], ["flops", "--size", "-224"],
    ["flops", "--decoder-depth", "0"], ["data", "probe", "x.mp4", "--threads", "0"],
    ["search", "tiny_search", "--workers", "0"], ["viz", "flow", "ck", "v.mp4", "--out", "o.png",
                                                  "--pairs", "0"],
], ids=lambda a: " ".join(a[:1] + a[-2:]))
def test_counts_below_one_are_usage_errors(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err


def test_config_errors_name_what_is_wrong(synth_dir: Path, tmp_path: Path, capsys) -> None:
    root = f"data.root={synth_dir}"
    cases = [
        # plan runs the same checks as a run (the field named, a huge model refused at once)
        (["plan", "tiny_tpl", "--set", root, "--set", "data.input_size=36"],
         "data.input_size: 36 is not a multiple of model.patch_size = 8"),
        (["plan", "tiny_tpl", "--set", "model.depth=1200", "--set", "model.embed_dim=8192",
          "--set", "model.num_heads=8", "--dataset-size", "100"], "over the 5G limit"),
        # what a run would refuse, validate refuses
        (["config", "validate", "tiny_vit", "--set", root, "--set", "data.classes=null"],
         "model.num_classes: not set and the data has no class names"),
        (["config", "validate", "hcml/tiny_finetune", "--set", root, "--set", "data.num_frames=2",
          "--set", "hcml.deltas=[2,3]"],
         "data.num_frames: 2 frames leave 2 time step(s) at HCML level 1, too few to predict 2"),
        (["config", "validate", "tiny_tpl", "--no-data", "--set", "task=[1]"], "unknown task [1]"),
        (["config", "validate", "tiny_tpl", "--no-data", "--set", "train.threads=abc"],
         "`train.threads`: Input should be a valid integer or 'auto' (got 'abc')"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (argv, err)
    bare = tmp_path / "notask.yaml"
    bare.write_text("model: {size: tiny}\n")
    assert main(["pretrain", str(bare)]) == 2
    assert "`task` is not set, but `model` belongs to a run's config" in capsys.readouterr().err
    (tmp_path / "key.yaml").write_text("? [a]\n: 1\n")
    assert main(["config", "validate", str(tmp_path / "key.yaml")]) == 2
    assert "key.yaml:1: a key must be a plain name, not a list" in capsys.readouterr().err


def test_eval_of_a_config_applies_its_data_overrides(monkeypatch, capsys) -> None:
    import progvid.tasks.evaluate as ev

    seen = {}

    def fake(target, **kw):
        seen.update(kw, target=target)
        return {"num_videos": 1, "views": 1, "top1": 1.0, "top5": 1.0, "mean_class_accuracy": 1.0}

    monkeypatch.setattr(ev, "evaluate_checkpoint", fake)
    assert main(["eval", "tiny_vit", "--set", "out=runs/ft", "--set", "data.val=train.csv"]) == 0
    assert seen["target"] == "runs/ft" and seen["data_overrides"] == ["data.val=train.csv"]


def test_nproc_is_stripped_however_it_was_spelt(monkeypatch) -> None:
    from progvid.cli import _launches, _strip_nproc

    for argv in (["--nproc", "2"], ["--nproc=2"], ["--npro", "2"], ["--np=2"]):
        assert _strip_nproc(["pretrain", "c", *argv, "--out", "o"]) == ["pretrain", "c", "--out", "o"]
    args = build_parser().parse_args(["pretrain", "tiny_tpl", "--npro", "2"])
    assert args.nproc == 2 and _launches(args)
    monkeypatch.setenv("LOCAL_RANK", "0")  # inside a rank: run its share, never launch again
    assert not _launches(args)


def test_pictures_go_where_the_message_says(tiny_run: Path, tmp_path: Path, capsys) -> None:
    metrics = str(tiny_run / "metrics.jsonl")
    assert main(["plot", "losses", metrics, "--out", str(tmp_path / "noext")]) == 0
    assert (tmp_path / "noext.png").is_file()
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'noext.png'}"
    assert main(["plot", "losses", metrics, "--out", str(tmp_path / "r.xyz")]) == 2
    assert "r.xyz: unknown picture format '.xyz'" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["export", str(tiny_run), str(tmp_path / "file")]) == 2
    assert "file: exists and is not a folder" in capsys.readouterr().err


def test_recipe_descriptions_are_whole_sentences() -> None:
    from progvid.config.recipes import list_recipes

    for r in list_recipes():
        d = r.description()
        assert d.endswith(".") and len(d) < 130, (r.name, d)  # not cut mid-phrase


def test_a_runs_saved_config_names_the_run(tiny_run: Path) -> None:
    from progvid.config import load_config
    from progvid.tasks.base import run_dir_for

    saved = tiny_run / "config.yaml"
    assert run_dir_for(load_config(saved), None, str(saved)) == tiny_run
