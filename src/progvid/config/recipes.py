"""The shipped recipes, config names, and `base:` chains.

Recipes are YAML configs shipped inside the package (`progvid/recipes/<family>/<name>.yaml`,
package data, so every install carries them). A recipe is named by its path under that folder
without `.yaml` (`pretrain/tiny_tpl`), or by the part after the slash when no other recipe has it
(`tiny_tpl`). Wherever a config is expected, a file that exists wins over a recipe of that name.

A config may start from another one: `base: NAME_OR_PATH` names a shipped recipe or a file
relative to the config's own folder (a file that exists wins). The config is then the base with
the file's keys laid over it: mappings merge key by key, everything else (lists included) replaces
the base's value whole. Bases may have bases; a cycle is an error naming the files.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

SUFFIXES = (".yaml", ".yml")


def recipes_root() -> Path:
    """The folder of the shipped recipes, found through `importlib.resources` (so it is the
    installed package's, wherever that is, never a checkout's `configs/`)."""
    return Path(str(resources.files("progvid") / "recipes"))


@dataclass(frozen=True)
class Recipe:
    """One shipped recipe: its name (`pretrain/tiny_tpl`) and file."""

    name: str
    path: Path

    @property
    def short(self) -> str:
        """The name without its family (`tiny_tpl`)."""
        return self.name.rsplit("/", 1)[-1]

    def text(self) -> str:
        """The file as written, comments included."""
        return self.path.read_text()

    def description(self) -> str:
        """The first sentence of the file's leading comment ('' without one): up to its first
        full stop outside parentheses, across comment lines."""
        words: list[str] = []
        for line in self.text().splitlines():
            stripped = line.strip()
            if not stripped.startswith("#"):
                if words or stripped:
                    break
                continue
            text = stripped.lstrip("#").strip()
            if not text:
                if words:
                    break
                continue
            words.append(text)
        text, depth = " ".join(words), 0
        for i, ch in enumerate(text):
            depth += (ch == "(") - (ch == ")")
            if depth == 0 and ch == "." and (i + 1 == len(text) or text[i + 1] == " "):
                return text[: i + 1]
        return text

    def task(self) -> str:
        """The task it configures, its bases included (`data` when none says)."""
        task = read_config(self.path, self.name).get("task", "data")
        return str(task)

    def base(self) -> str | None:
        """The `base:` the file names (as written), if any."""
        raw = read_yaml(self.path, self.name)
        base = raw.get("base")
        return None if base is None else str(base)


def list_recipes(root: Path | None = None) -> list[Recipe]:
    """Every shipped recipe, sorted by name."""
    root = recipes_root() if root is None else root
    if not root.is_dir():
        return []
    found = [p for p in root.rglob("*") if p.suffix in SUFFIXES and p.is_file()]
    return sorted((Recipe(p.relative_to(root).with_suffix("").as_posix(), p) for p in found),
                  key=lambda r: r.name)


def _normalized(text: str) -> str:
    text = text.strip().replace("\\", "/")
    for suffix in SUFFIXES:
        if text.endswith(suffix):
            return text[: -len(suffix)]
    return text


def find_recipe(text: str, root: Path | None = None) -> Recipe | None:
    """The recipe `text` names (full name, or the short name when unique), else None.
    A short name that several families share is an error listing them."""
    want = _normalized(text)
    recipes = list_recipes(root)
    for recipe in recipes:
        if recipe.name == want:
            return recipe
    if "/" in want:
        return None
    same = [r for r in recipes if r.short == want]
    if len(same) > 1:
        raise ConfigError(f"{text}: several recipes have this name ({', '.join(r.name for r in same)}); "
                          "give the full name")
    return same[0] if same else None


def close_recipes(text: str, root: Path | None = None) -> list[str]:
    """Names of recipes close to `text` (also to the tail of a path such as
    configs/pretrain/tiny_tpl.yaml), best first."""
    recipes = list_recipes(root)
    by_key: dict[str, str] = {}
    for r in recipes:
        by_key.setdefault(r.name, r.name)
        by_key.setdefault(r.short, r.name)
    parts = _normalized(text).split("/")
    queries = ["/".join(parts[-2:]), parts[-1]] if len(parts) > 1 else [parts[0]]
    out: list[str] = []
    for query in queries:
        for key in difflib.get_close_matches(query, list(by_key), n=4, cutoff=0.6):
            if by_key[key] not in out:
                out.append(by_key[key])
    return out[:4]


def _hint(text: str, root: Path | None = None) -> str:
    close = close_recipes(text, root)
    if close:
        return f" (did you mean {', '.join(close[:-1]) + ' or ' if len(close) > 1 else ''}{close[-1]}?)"
    return " (`progvid config list` shows the recipes)"


def resolve_config(text: str | Path, root: Path | None = None) -> Path:
    """The file a CONFIG argument means: an existing file, else the shipped recipe of that name.
    Neither: one line naming it and the closest recipe names."""
    path = Path(text).expanduser()
    if path.is_file():
        return path
    recipe = find_recipe(str(text), root)
    if recipe is not None:
        return recipe.path
    raise ConfigError(f"{text}: config file not found, nor a shipped recipe{_hint(str(text), root)}")


def shown_name(path: Path) -> str:
    """How messages name a config file: a shipped recipe by its name, any other file by path."""
    try:
        rel = path.resolve().relative_to(recipes_root().resolve())
    except ValueError:
        return str(path)
    return rel.with_suffix("").as_posix()


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (YAML
    itself keeps the last one silently)."""


def _unique_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, str | int | float | bool) and key is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"a key must be a plain name, not a {type(key).__name__}",
                key_node.start_mark)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_yaml(path: str | Path, source: str | None = None) -> dict[str, Any]:
    """One YAML file as a mapping (empty file: {}); errors name `source` (default: the path).
    UTF-8 with or without a byte-order mark; a key twice in one mapping is an error."""
    path = Path(path)
    source = str(path) if source is None else source
    if not path.is_file():
        raise ConfigError(f"{source}: config file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read ({exc.strerror or exc})") from None
    try:
        raw = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        reason = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{source}{where}: {reason}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping of keys to values")
    return raw


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` laid over `base`: mappings merge key by key, anything else replaces (lists whole).
    Neither input is changed."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _base_path(base: Any, folder: Path, source: str) -> Path:
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{source}: `base`: expected a recipe name or a path relative to this "
                          f"file (got {base!r})")
    candidate = Path(base).expanduser()
    candidate = candidate if candidate.is_absolute() else folder / candidate
    if candidate.is_file():
        return candidate
    recipe = find_recipe(base)
    if recipe is not None:
        return recipe.path
    raise ConfigError(f"{source}: `base`: {base!r} is neither a file next to this config nor a "
                      f"shipped recipe{_hint(base)}")


def read_config(path: str | Path, source: str | None = None) -> dict[str, Any]:
    """A config file as one mapping, its `base:` chain resolved and merged (no `base` key left).
    `source` names the file in errors (default: the path)."""
    path = Path(path)
    chain: list[tuple[Path, str]] = []
    layers: list[dict[str, Any]] = []
    shown = str(path) if source is None else source
    while True:
        key = path.resolve()
        seen = [k for k, _ in chain]
        if key in seen:
            loop = [s for _, s in chain[seen.index(key):]] + [shown]
            raise ConfigError(f"{chain[0][1]}: `base` cycle: {' -> '.join(loop)}")
        chain.append((key, shown))
        raw = read_yaml(path, shown)
        base = raw.pop("base", None)
        layers.append(raw)
        if base is None:
            break
        path = _base_path(base, path.parent, shown)
        shown = shown_name(path)
    out: dict[str, Any] = {}
    for layer in reversed(layers):
        out = merge(out, layer)
    return out
