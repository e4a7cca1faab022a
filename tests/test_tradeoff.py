from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from progvid.config import PretrainConfig, save_config, validate
from progvid.errors import ProgvidError
from progvid.progressive.tradeoff import collect_points, plot_tradeoff

TPL = [{"frames": 2, "share": 0.125}, {"frames": 4, "share": 0.125},
       {"frames": 8, "share": 0.5}, {"frames": 16, "share": 0.25}]


def fake_run(root: Path, name: str, stages: list[dict[str, Any]], epochs: float, flops: float,
             result: dict[str, Any] | None, file: str = "probe.json", **plan: Any) -> Path:
    run = root / name
    cfg = validate(PretrainConfig, {"task": "pretrain", "budget": {"epochs": epochs},
                                    "plan": {"stages": stages, **plan}}, "t")
    save_config(cfg, run / "config.yaml")
    records = [{"step": 0, "loss": 1.0, "flops": flops / 2}, {"step": 1, "loss": 0.9, "flops": flops}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + "{cut")
    if result is not None:
        (run / file).write_text(json.dumps(result))
    return run


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    one = [{"frames": 16, "share": 1.0}]
    return [
        fake_run(tmp_path, "vm400", one, 400, 4e17, {"top1": 0.60}),
        fake_run(tmp_path, "vm200", one, 200, 2e17, {"top1": 0.55}),
        fake_run(tmp_path, "tpl400", TPL, 400, 2.5e17, {"top1": 61.5}, file="eval.json"),
        fake_run(tmp_path, "tpl200", TPL, 200, 1.2e17, {"top1": 0.57, "method": "tpl-searched"}),
        fake_run(tmp_path, "mg", TPL, 400, 2.2e17, {"top1": 0.58}, multigrid=True),
        fake_run(tmp_path, "unevaluated", one, 800, 8e17, None),
    ]


def test_collect_points(runs: list[Path]) -> None:
    warnings: list[str] = []
    (runs[2] / "probe.json").write_text(json.dumps({"top1": 0.1}))  # eval.json wins
    points = {p["name"]: p for p in collect_points(runs, warn=warnings.append)}
    assert set(points) == {"vm400", "vm200", "tpl400", "tpl200", "mg"}
    assert len(warnings) == 1 and "unevaluated" in warnings[0]
    assert {n: p["method"] for n, p in points.items()} == {
        "vm400": "videomae", "vm200": "videomae", "tpl400": "tpl", "tpl200": "tpl-searched",
        "mg": "multigrid"}
    assert points["vm400"]["pflops"] == pytest.approx(400)
    assert points["vm200"]["epochs_at_16"] == 200 and points["tpl400"]["stages"] == [2, 4, 8, 16]
    assert points["tpl400"]["top1_pct"] == pytest.approx(61.5) and points["tpl400"]["source"] == "eval.json"
    assert points["vm400"]["top1_pct"] == pytest.approx(60.0)


def test_plot_and_errors(runs: list[Path], tmp_path: Path) -> None:
    out = plot_tradeoff(runs, tmp_path / "plots" / "tradeoff.png", warn=lambda _m: None)
    assert out.is_file() and out.stat().st_size > 5000
    assert plot_tradeoff(runs[:2], tmp_path / "m.png", group_by="model", warn=lambda _m: None).is_file()
    with pytest.raises(ProgvidError, match="no run has an evaluation result") as err:
        plot_tradeoff([runs[-1]], tmp_path / "none.png", warn=lambda _m: None)
    assert "\n" not in str(err.value)
    with pytest.raises(ProgvidError, match="run folder not found"):
        collect_points([tmp_path / "missing"])
    with pytest.raises(ProgvidError, match="unknown grouping"):
        plot_tradeoff(runs, tmp_path / "x.png", group_by="colour")
    import progvid.progressive.tradeoff as tradeoff

    figs = []
    save = tradeoff.save_figure
    tradeoff.save_figure = lambda fig, path: figs.append(fig) or save(fig, path)
    try:
        plot_tradeoff(runs, tmp_path / "levels.png", warn=lambda _m: None,
                      levels={"chance": 0.1, "random-init encoder": 0.3})
    finally:
        tradeoff.save_figure = save
    for ax in figs[0].axes:  # both panels carry the two reference lines, labelled, in percent
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert {"chance (10%)", "random-init encoder (30%)"} <= set(labels)
        flat = sorted(line.get_ydata()[0] for line in ax.get_lines()
                      if line.get_label().startswith(("chance", "random-init")))
        assert flat == pytest.approx([10.0, 30.0])  # on the points' scale (top-1 in %)
    from progvid.cli import main

    assert main(["plot", "tradeoff", *map(str, runs), "--out", str(tmp_path / "c.png"),
                 "--level", "zero output=0.99"]) == 0
    assert main(["plot", "tradeoff", *map(str, runs), "--out", str(tmp_path / "c.png"),
                 "--level", "chance"]) == 2
    (runs[0] / "probe.json").write_text("{")
    with pytest.raises(ProgvidError, match="probe.json: not valid JSON"):
        collect_points(runs[:1])
