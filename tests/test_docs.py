"""Documentation that cannot drift: the config reference, and the README's runnable tour run as a
new user would, from an empty folder with only the installed package."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from progvid.config import list_recipes, recipes_root
from progvid.config.reference import reference

ROOT = Path(__file__).resolve().parent.parent


def test_config_reference_is_current() -> None:
    doc = (ROOT / "docs" / "CONFIG.md").read_text()
    assert doc == reference(), "regenerate: progvid config reference > docs/CONFIG.md"


def runnable_blocks(text: str) -> list[str]:
    """Code blocks right after a `<!-- runnable -->` line, in order."""
    return re.findall(r"<!-- runnable -->\s*\n```(?:bash|sh)\n(.*?)```", text, flags=re.S)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """progvid built as a wheel (`pip wheel --no-deps --no-build-isolation`, a few seconds) from a
    clean copy of what packaging reads (pyproject.toml, README.md, src/), so no build folder or
    egg-info of the checkout takes part and none is left in it."""
    work = tmp_path_factory.mktemp("build")
    shutil.copytree(ROOT / "src", work / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, work / name)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "--no-index", "-q", "-w", str(work / "dist"), str(work)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    (found,) = (work / "dist").glob("progvid-*.whl")
    return found


def test_wheel_carries_the_recipes(wheel: Path) -> None:
    """A non-editable install has every shipped recipe, byte for byte."""
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        recipes = list_recipes()
        assert len(recipes) >= 27
        for recipe in recipes:
            member = f"progvid/recipes/{recipe.name}.yaml"
            assert member in names, member
            assert z.read(member) == recipe.path.read_bytes(), member
    shipped = {n for n in names if n.startswith("progvid/recipes/")}
    assert len(shipped) == len(list(recipes_root().rglob("*.yaml")))


def install_in_throwaway_venv(wheel: Path, venv: Path) -> dict[str, str]:
    """A fresh venv with the wheel installed (not editable) and nothing of the checkout on its
    path; the heavy dependencies (torch, av, ...) come from this interpreter's site-packages
    through a .pth file rather than a download. Returns the environment to run it in."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    py = venv / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # (the project's own .venv lies inside the checkout, so only its source folder is kept out)
    deps = [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages")
            and not Path(p).resolve().is_relative_to(ROOT / "src")]
    # a plain path line: the dependency folder's own .pth files (an editable progvid) stay unread
    (Path(purelib) / "_progvid_test_deps.pth").write_text("\n".join(deps) + "\n")
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps",
                        "--no-index", "-q", str(wheel)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.mark.slow
def test_readme_examples_run(wheel: Path, tmp_path: Path) -> None:
    """Every `<!-- runnable -->` block of README.md, in order, in one empty folder, with the
    `progvid` of a throwaway venv into which the wheel was installed. What this guarantees: the
    tour needs nothing from the checkout (no configs/, no src/ on the path: the check below fails
    if `progvid` or its recipes resolve anywhere but the venv), only the installed package and
    its dependencies."""
    blocks = runnable_blocks((ROOT / "README.md").read_text())
    assert len(blocks) >= 4
    env = install_in_throwaway_venv(wheel, tmp_path / "venv")
    tour = tmp_path / "tour"
    tour.mkdir()
    probe = subprocess.run(
        ["python", "-c", "import shutil, progvid; from progvid.config import recipes_root; "
         "print(progvid.__file__); print(recipes_root()); print(shutil.which('progvid'))"],
        cwd=tour, env=env, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    for line in probe.stdout.split():
        assert Path(line).is_relative_to(tmp_path / "venv"), probe.stdout
    assert list(tour.iterdir()) == []
    for block in blocks:
        r = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tour, env=env,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"README block failed:\n{block}\n{r.stderr[-3000:]}"


def _leaf_parsers(parser, path: tuple[str, ...] = ()):
    """(command words, parser) for every runnable subcommand of the CLI."""
    import argparse

    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, child in subs[0].choices.items():
        yield from _leaf_parsers(child, (*path, name))


def test_readme_command_list_names_every_option() -> None:
    """The README's `## Commands` block has one line per subcommand, and each line names every
    option that subcommand takes (so a new flag cannot go unmentioned)."""
    from progvid.cli import build_parser

    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Commands\s*\n```\n(.*?)```", text, flags=re.S)
    assert block, "README.md lost its ## Commands block"
    lines = {}
    for line in block.group(1).splitlines():
        words = re.match(r"progvid ((?:[a-z]+ ?)+)", line)
        assert words, f"not a command line: {line!r}"
        lines[words.group(1).strip()] = line
    leaves = dict((" ".join(path), p) for path, p in _leaf_parsers(build_parser()))
    for command, parser in leaves.items():
        line = lines.get(command)
        assert line, f"README ## Commands has no line for `progvid {command}`"
        for action in parser._actions:
            longs = [o for o in action.option_strings if o.startswith("--") and o != "--help"]
            if longs:
                assert any(re.search(re.escape(o) + r"(?![\w-])", line) for o in longs), \
                    f"README ## Commands: `progvid {command}` does not name {longs[0]}"
    for command in lines:
        assert command in leaves, f"README ## Commands names `progvid {command}`, which the CLI does not have"
