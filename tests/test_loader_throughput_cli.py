"""bench/loader_throughput.py's command line: a bad --main-threads is one line and exit 2."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import loader_throughput  # noqa: E402


@pytest.mark.parametrize("value", ["x", "0", "-1", "1.5"])
def test_main_threads_rejects_bad_values(value: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        loader_throughput.main(["--main-threads", value, "--rounds", "0"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--main-threads" in err and repr(value) in err


def test_main_threads_parses_auto_and_numbers() -> None:
    assert loader_throughput._auto_or_positive("auto") == "auto"
    assert loader_throughput._auto_or_positive("3") == 3
