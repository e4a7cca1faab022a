"""bench/frozen_features.py: scores of a real (tiny) run and the report's seed pairing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import frozen_features  # noqa: E402


def _scores(knn_raw: float, probe: float) -> dict:
    return {8: {"classes": 4, "knn_raw": knn_raw, "knn_centred": knn_raw, "knn_std": knn_raw,
                "probe": probe, "cos_to_mean": 0.5}}


def test_report_pairs_groups_by_seed() -> None:
    groups = {"a": {0: _scores(0.5, 0.8), 1: _scores(0.6, 0.9)},
              "b": {1: _scores(0.4, 0.95), 2: _scores(0.1, 0.1)}}  # only seed 1 is shared
    text = frozen_features.report(groups, [8], "cmd")
    assert "chance 0.250" in text
    paired = next(line for line in text.splitlines() if line.startswith("| b - a"))
    assert paired.startswith("| b - a | 1 | -20.0 +- 0.0 |") and "+5.0 +- 0.0" in paired


def test_scores_a_run_and_its_untrained_twin(synth_dir: Path, tmp_path: Path) -> None:
    from engine_util import tiny_pretrain
    from progvid.tasks.pretrain import run_pretrain

    run = tmp_path / "run"
    run_pretrain(tiny_pretrain(synth_dir, data__val="val.csv", train__max_steps=2), out=str(run))
    seed, trained = frozen_features.score(run, [2])
    _, untrained = frozen_features.score(run, [2], untrained=True)
    assert seed == 1  # tiny_pretrain's
    for scores in (trained, untrained):
        assert set(scores[2]) == {"classes", "knn_raw", "knn_centred", "knn_std", "probe", "cos_to_mean"}
        assert all(0.0 <= scores[2][k] <= 1.0 for k in ("knn_raw", "knn_centred", "knn_std", "probe"))
    assert trained[2]["cos_to_mean"] != pytest.approx(untrained[2]["cos_to_mean"])


def test_a_group_matching_nothing_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as err:
        frozen_features.main(["--group", f"x={tmp_path}/nothing*"])
    assert err.value.code == 2


def test_a_run_without_a_validation_split_is_one_line(tiny_run: Path, capsys: pytest.CaptureFixture) -> None:
    assert frozen_features.main(["--group", f"x={tiny_run}", "--frames", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(tiny_run) in err and "data.val" in err
