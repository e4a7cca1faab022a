"""The layering of docs/ARCHITECTURE.md, enforced: imports point down, never in a cycle, and no
private name crosses a module boundary."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "progvid"

# floor of each module (longest dotted prefix wins); a module imports only lower floors, or
# modules of its own package on the same floor
FLOORS = {
    "progvid": 0, "progvid.errors": 0, "progvid.constants": 0,  # `progvid` = its __init__
    "progvid.config": 1, "progvid.metrics": 1,
    "progvid.figures": 2,
    "progvid.data": 3, "progvid.models": 3,
    "progvid.interop": 4, "progvid.engine": 4,
    "progvid.progressive": 5, "progvid.loading": 5,
    "progvid.tasks": 6, "progvid.viz": 6,
    "progvid.demo": 7,
    "progvid.cli": 8,
    "progvid.__main__": 9,
}


def module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def floor_of(module: str) -> tuple[int, str]:
    """(floor, the FLOORS key that decided it)."""
    best = max((k for k in FLOORS if module == k or module.startswith(k + ".")), key=len)
    return FLOORS[best], best


def imports(path: Path, src: Path = SRC) -> list[tuple[str, list[str], int]]:
    """(imported progvid module, names taken from it, line) for every import in the file,
    function-local ones included; relative imports resolved."""
    me = module_name(path, src)
    is_pkg = path.name == "__init__.py"
    base = me.split(".") if is_pkg else me.split(".")[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("progvid")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                root = base[: len(base) - node.level + 1]
                target = ".".join(root + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("progvid"):
                continue
            names = [a.name for a in node.names]
            # `from package import submodule` imports the submodule
            stem = [src.parent / (target + "." + n).replace(".", "/") for n in names]
            subs = [n for n, f in zip(names, stem, strict=True)
                    if f.with_suffix(".py").is_file() or (f / "__init__.py").is_file()]
            for n in subs:
                out.append((f"{target}.{n}", [], node.lineno))
            rest = [n for n in names if n not in subs]
            if rest or not subs:
                out.append((target, rest, node.lineno))
    return out


FILES = sorted(SRC.rglob("*.py"))


def test_floors_cover_every_module() -> None:
    for path in FILES:
        floor_of(module_name(path))  # raises ValueError (empty max) for an unknown module


def upward(files: list[Path], src: Path = SRC) -> list[str]:
    bad = []
    for path in files:
        me = module_name(path, src)
        my_floor, my_pkg = floor_of(me)
        for target, _, line in imports(path, src):
            floor, pkg = floor_of(target)
            if floor > my_floor or (floor == my_floor and pkg != my_pkg):
                bad.append(f"{path.relative_to(src)}:{line}: {me} (floor {my_floor}) imports "
                           f"{target} (floor {floor})")
    return bad


def test_imports_point_down() -> None:
    bad = upward(FILES)
    assert not bad, "upward or sideways imports:\n" + "\n".join(bad)


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {}
    known = {module_name(p) for p in FILES}
    for path in FILES:
        me = module_name(path)
        deps = set()
        for target, _, _ in imports(path):
            while target not in known and "." in target:
                target = target.rsplit(".", 1)[0]
            if target != me:
                deps.add(target)
        graph[me] = deps
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_no_private_names_cross_modules() -> None:
    bad = []
    for path in FILES:
        me = module_name(path)
        for target, names, line in imports(path):
            if target == me:
                continue
            bad += [f"{path.relative_to(SRC)}:{line}: {n} from {target}" for n in names
                    if n.startswith("_") and not n.startswith("__")]
    assert not bad, "private names imported across modules:\n" + "\n".join(bad)


def test_the_checker_catches_violations(tmp_path: Path) -> None:
    """The rules above are not vacuous: an engine module importing a task (also inside a
    function), or data importing models, is caught; an import from below is not."""
    src = tmp_path / "progvid"
    (src / "engine").mkdir(parents=True)
    (src / "data").mkdir()
    (src / "tasks").mkdir()
    for pkg in ("", "engine", "data", "tasks"):
        (src / pkg / "__init__.py").write_text("")
    (src / "tasks" / "pretrain.py").write_text("")
    (src / "engine" / "bad.py").write_text("def f():\n    from ..tasks import pretrain\n")
    (src / "data" / "side.py").write_text("from progvid.models.vit import Block\n")
    (src / "engine" / "good.py").write_text("from ..data import side\nfrom ..errors import X\n")
    bad = upward(sorted(src.rglob("*.py")), src)
    assert len(bad) == 2 and "data/side.py:1" in bad[0] and "engine/bad.py:2" in bad[1]
