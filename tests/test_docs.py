"""Documentation that cannot drift: the config reference and the README's runnable examples."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from progvid.config.reference import reference

ROOT = Path(__file__).resolve().parent.parent


def test_config_reference_is_current() -> None:
    doc = (ROOT / "docs" / "CONFIG.md").read_text()
    assert doc == reference(), "regenerate: progvid config reference > docs/CONFIG.md"


def runnable_blocks(text: str) -> list[str]:
    """Code blocks right after a `<!-- runnable -->` line, in order."""
    return re.findall(r"<!-- runnable -->\s*\n```(?:bash|sh)\n(.*?)```", text, flags=re.S)


@pytest.mark.slow
def test_readme_examples_run(tmp_path: Path) -> None:
    blocks = runnable_blocks((ROOT / "README.md").read_text())
    assert len(blocks) >= 3
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for block in blocks:
        r = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"README block failed:\n{block}\n{r.stderr[-3000:]}"
