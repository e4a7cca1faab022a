"""Shipped recipes: names, `base:` chains, `config list` / `config show`, and that rewriting the
recipes on bases changed none of them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from progvid.cli import build_parser, main
from progvid.config import (
    TASKS,
    find_recipe,
    list_recipes,
    load_config,
    merge,
    read_config,
    recipes_root,
    resolve_config,
    to_plain,
    validate,
)
from progvid.errors import ConfigError

FIXTURE = Path(__file__).parent / "fixtures" / "recipes_resolved.yaml"
RESOLVED = yaml.safe_load(FIXTURE.read_text())


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --------------------------------------------------------------------------------------------
# the rewrite on `base:` changed nothing


def test_every_recipe_is_in_the_fixture() -> None:
    assert sorted(r.name for r in list_recipes()) == sorted(RESOLVED)


@pytest.mark.parametrize("name", sorted(RESOLVED))
def test_recipe_resolves_as_before(name: str) -> None:
    """Each recipe resolves to exactly the config its flat file gave before the rewrite (captured
    with `progvid config validate FILE --print`). Both sides are validated by today's models, so
    a field added later with a default shows up on both and does not break the comparison; any
    value a recipe changed does."""
    before = RESOLVED[name]
    now = load_config(name)
    assert to_plain(now) == to_plain(validate(TASKS[before["task"]], before, "fixture"))
    assert _restrict(to_plain(now), before) == before  # every key the capture had: identical


def _restrict(now: object, like: object) -> object:
    """`now` with only the keys `like` has, at every depth (fields added since are dropped)."""
    if isinstance(now, dict) and isinstance(like, dict):
        return {k: _restrict(now[k], like[k]) for k in like if k in now}
    if isinstance(now, list) and isinstance(like, list) and len(now) == len(like):
        return [_restrict(a, b) for a, b in zip(now, like, strict=True)]
    return now


def test_families_sit_on_few_bases() -> None:
    """The near-copies are a few lines on one or two bases per family."""
    roots: dict[str, set[str]] = {}
    for recipe in list_recipes():
        root = recipe
        while root.base() is not None:
            root = find_recipe(root.base())  # type: ignore[arg-type,assignment]
        roots.setdefault(recipe.name.split("/")[0], set()).add(root.name)
    assert roots["pretrain"] == {"pretrain/tiny_videomae", "pretrain/videomae_base_k400"}
    assert roots["finetune"] == {"finetune/tiny_vit", "finetune/vit_base_k400"}
    based = [r for r in list_recipes() if r.base() is not None]
    assert len(based) == 25  # 14 of the 16 pre-training near-copies, 7 of the 8 fine-tuning ones,
    # and the pan setting (bench/evidence.md): pan_videomae, pan_tpl, pan_search, pan_vit
    for recipe in based:  # a few lines each
        body = [ln for ln in recipe.text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        assert len(body) <= 20, recipe.name


# --------------------------------------------------------------------------------------------
# names


def test_recipes_come_from_the_package() -> None:
    root = recipes_root()
    assert root.parent == Path(__import__("progvid").__file__).parent
    assert all(r.path.is_relative_to(root) for r in list_recipes())


def test_names_full_short_and_suffix() -> None:
    full = find_recipe("pretrain/tiny_tpl")
    assert full is not None and full.path == recipes_root() / "pretrain" / "tiny_tpl.yaml"
    assert find_recipe("tiny_tpl") == full and find_recipe("pretrain/tiny_tpl.yaml") == full
    assert find_recipe("nope") is None and find_recipe("configs/pretrain/tiny_tpl.yaml") is None
    assert load_config("tiny_tpl") == load_config(full.path)


def test_ambiguous_short_name(tmp_path: Path) -> None:
    write(tmp_path, "pretrain/x.yaml", "task: pretrain\n")
    write(tmp_path, "finetune/x.yaml", "task: finetune\n")
    with pytest.raises(ConfigError, match=r"^x: several recipes have this name \(finetune/x, "
                       r"pretrain/x\); give the full name$"):
        find_recipe("x", tmp_path)
    assert find_recipe("pretrain/x", tmp_path).path == tmp_path / "pretrain" / "x.yaml"  # type: ignore[union-attr]


def test_existing_file_wins(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "tiny_tpl", "task: finetune\n")
    assert resolve_config("tiny_tpl") == Path("tiny_tpl")
    assert load_config("tiny_tpl").task == "finetune"
    assert resolve_config("tiny_videomae") == recipes_root() / "pretrain" / "tiny_videomae.yaml"


def test_unknown_name_lists_close_matches(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # no configs/ link here
    with pytest.raises(ConfigError) as exc:
        resolve_config("tiny_tlp")
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith("tiny_tlp: config file not found, nor a shipped recipe (did you mean ")
    assert "pretrain/tiny_tpl" in msg
    with pytest.raises(ConfigError, match=r"did you mean pretrain/tiny_tpl"):
        resolve_config("configs/pretrain/tiny_tpl.yaml")  # the old path, from another folder
    with pytest.raises(ConfigError, match=r"^zzzz: .*\(`progvid config list` shows the recipes\)$"):
        resolve_config("zzzz")


# --------------------------------------------------------------------------------------------
# base:


def test_merge_mappings_deep_lists_whole() -> None:
    base = {"a": {"b": 1, "c": [1, 2, 3], "d": {"e": 1}}, "f": 1}
    over = {"a": {"c": [9], "d": {"g": 2}}, "h": None}
    out = merge(base, over)
    assert out == {"a": {"b": 1, "c": [9], "d": {"e": 1, "g": 2}}, "f": 1, "h": None}
    assert base == {"a": {"b": 1, "c": [1, 2, 3], "d": {"e": 1}}, "f": 1}  # inputs untouched


def test_base_by_name_and_relative_path_with_chain(tmp_path: Path) -> None:
    write(tmp_path, "bases/mine.yaml", "base: tiny_tpl\ntrain:\n  batch_size: 4\n")
    child = write(tmp_path, "exp/child.yaml",
                  "base: ../bases/mine.yaml\noptim:\n  lr_rule: global\n"
                  "plan:\n  stages: [{frames: 16, share: 1.0}]\n")
    cfg = load_config(child)
    tpl = load_config("tiny_tpl")
    assert cfg.train.batch_size == 4 and cfg.optim.lr_rule == "global"
    assert [s.frames for s in cfg.plan.stages] == [16]  # lists replace whole
    assert cfg.model == tpl.model and cfg.optim.base_lr == tpl.optim.base_lr  # merged, not lost
    assert "base" not in read_config(child)
    # overrides apply after the merge
    assert load_config(child, ["train.batch_size=2"]).train.batch_size == 2


def test_base_file_next_to_config_wins_over_recipe(tmp_path: Path) -> None:
    write(tmp_path, "tiny_tpl.yaml", "task: pretrain\nseed: 7\n")
    child = write(tmp_path, "c.yaml", "base: tiny_tpl.yaml\n")
    assert load_config(child).seed == 7 and load_config(child).model.size == "base"


def test_resolved_config_is_saved_in_full(tmp_path: Path) -> None:
    from progvid.config import save_config

    child = write(tmp_path, "c.yaml", "base: tiny_tpl_global_lr\nseed: 3\n")
    save_config(load_config(child), tmp_path / "run" / "config.yaml")
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert "base" not in saved and saved["seed"] == 3 and saved["optim"]["lr_rule"] == "global"
    assert saved["plan"]["stages"][0] == {"frames": 2, "share": 0.125, "batch_size": None,
                                          "warmup_epochs": None, "clips_per_decode": None}
    assert load_config(tmp_path / "run" / "config.yaml") == load_config(child)


def test_base_cycle_names_the_files(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", "base: b.yaml\n")
    write(tmp_path, "b.yaml", "base: c.yaml\n")
    write(tmp_path, "c.yaml", "base: b.yaml\n")
    with pytest.raises(ConfigError) as exc:
        load_config(a)
    msg = str(exc.value)
    assert msg == f"{a}: `base` cycle: {tmp_path / 'b.yaml'} -> {tmp_path / 'c.yaml'} -> {tmp_path / 'b.yaml'}"
    self_ = write(tmp_path, "s.yaml", "base: s.yaml\n")
    with pytest.raises(ConfigError, match=r"s.yaml: `base` cycle: .*s.yaml -> .*s.yaml$"):
        load_config(self_)


def test_base_errors_are_one_line(tmp_path: Path) -> None:
    bad = write(tmp_path, "c.yaml", "base: tiny_tlp\n")
    with pytest.raises(ConfigError, match=r"^.*c.yaml: `base`: 'tiny_tlp' is neither a file next to "
                       r"this config nor a shipped recipe \(did you mean pretrain/tiny_tpl"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"c.yaml: `base`: expected a recipe name or a path "
                       r"relative to this file \(got \[1, 2\]\)"):
        load_config(write(tmp_path, "c.yaml", "base: [1, 2]\n"))
    write(tmp_path, "broken.yaml", "data:\n  num_frames: [1\n")
    with pytest.raises(ConfigError, match=r"broken.yaml:\d+: "):
        load_config(write(tmp_path, "c.yaml", "base: broken.yaml\n"))
    # a bad key that comes from the merge is reported against the config as given
    write(tmp_path, "b.yaml", "task: pretrain\noptim:\n  lrr: 1\n")
    with pytest.raises(ConfigError, match=r"c.yaml: unknown key `optim.lrr`"):
        load_config(write(tmp_path, "c.yaml", "base: b.yaml\n"))


# --------------------------------------------------------------------------------------------
# the CLI


def test_config_list(capsys) -> None:
    assert main(["config", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "TASK", "DESCRIPTION"]
    rows = {ln.split()[0]: ln.split()[1] for ln in lines[1:]}
    assert set(rows) == {r.name for r in list_recipes()}
    assert rows["pretrain/tiny_tpl"] == "pretrain" and rows["hcml/tiny_pretrain"] == "hcml"
    assert rows["finetune/vit_small_ssv2"] == "finetune"  # the task comes through its bases
    tpl = next(ln for ln in lines if ln.startswith("pretrain/tiny_tpl "))
    assert "TPL default plan" in tpl


def test_config_list_json(capsys) -> None:
    import json

    assert main(["config", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["pretrain/tiny_tpl"]["base"] == "pretrain/tiny_videomae"
    assert rows["pretrain/tiny_videomae"]["base"] is None
    assert set(rows["pretrain/tiny_tpl"]) == {"name", "task", "base", "description"}


def test_config_show_writes_the_file_as_written(tmp_path: Path, capsys) -> None:
    assert main(["config", "show", "tiny_tpl"]) == 0
    out = capsys.readouterr().out
    assert out == (recipes_root() / "pretrain" / "tiny_tpl.yaml").read_text()
    assert out.startswith("#")  # comments kept
    mine = tmp_path / "my.yaml"
    mine.write_text(out)
    assert load_config(mine) == load_config("pretrain/tiny_tpl")  # its base resolves anywhere
    assert main(["config", "show", "tiny_tlp"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did you mean pretrain/tiny_tpl" in err[0]


def test_commands_take_recipe_names(capsys) -> None:
    assert main(["config", "validate", "tiny_tpl", "--no-data"]) == 0  # its data is not here
    assert capsys.readouterr().out.strip() == "tiny_tpl: ok (PretrainConfig)"
    assert main(["plan", "tpl_base_k400", "--dataset-size", "240000", "--json"]) == 0
    capsys.readouterr()
    for cmd in (["pretrain", "tiny_tlp"], ["finetune", "tiny_vti"], ["plan", "tiny_tlp"],
                ["search", "tiny_serch"], ["config", "validate", "tiny_tlp"],
                ["eval", "tiny_vti.yaml"]):
        assert main(cmd) == 2, cmd
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "nor a shipped recipe (did you mean" in err[0], (cmd, err)
    assert main(["finetune", "tiny_tpl"]) == 2  # a name of the wrong task: the usual message
    assert "`task` is 'pretrain'; `progvid finetune` needs task: finetune" in capsys.readouterr().err


def test_eval_takes_a_recipe_name(tmp_path: Path, monkeypatch, capsys) -> None:
    """`eval NAME` evaluates the run the recipe writes by default (runs/<name>)."""
    import progvid.tasks.evaluate as evaluate

    seen = []
    monkeypatch.setattr(evaluate, "evaluate_checkpoint",
                        lambda target, **kw: seen.append(target) or {"num_videos": 0, "views": "1x1",
                                                                     "top1": 0, "top5": 0,
                                                                     "mean_class_accuracy": 0})
    monkeypatch.chdir(tmp_path)
    assert main(["eval", "tiny_vit"]) == 0
    assert seen == [str(Path("runs") / "tiny_vit")]
    (tmp_path / "tiny_vit").mkdir()  # an existing run folder of that name wins
    assert main(["eval", "tiny_vit"]) == 0
    assert seen[-1] == "tiny_vit"


def _run_options_help(cmd: list[str]) -> str:
    """The help string of `--set` of a (sub)command."""
    node = build_parser()
    for name in cmd:
        sub = next(a for a in node._actions if a.__class__.__name__ == "_SubParsersAction")
        node = sub.choices[name]
    return next(a.help for a in node._actions if "--set" in a.option_strings)


@pytest.mark.parametrize("cmd,recipe", [
    (["pretrain"], "pretrain/tiny_tpl"), (["pretrain"], "hcml/tiny_pretrain"),
    (["finetune"], "finetune/tiny_vit"), (["plan"], "pretrain/tpl_base_k400"),
    (["search"], "pretrain/tiny_search"), (["eval"], "finetune/vit_base_k400"),
    (["config", "validate"], "pretrain/tiny_videomae"),
])
def test_help_example_is_accepted(cmd: list[str], recipe: str) -> None:
    """The `--set` example in each command's --help validates against a config of its task, and
    sets what it says."""
    import re

    examples = re.findall(r"e\.g\. --set (\S+?=[^\s)]+)", _run_options_help(cmd))
    assert examples
    for example in examples:
        key, value = example.split("=", 1)
        node = load_config(recipe, [example])
        for part in key.split("."):
            node = getattr(node, part)
        assert node == pytest.approx(float(value))
