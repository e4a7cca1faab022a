"""Reading configs: YAML into the typed models, dotted overrides, one-line errors, saving.

A config is validated completely before anything runs. Mistakes come back as one-line
`ConfigError`s that name the file and the dotted field ("unknown key `optim.lrr` (did you mean
`optim.lr_rule`?)"). Dotted overrides (`--set optim.base_lr=3e-4`) are applied to the raw
mapping before validation, so they are checked exactly like the file. Names of shipped recipes
and `base:` chains are resolved by `recipes`.
"""

from __future__ import annotations

import copy
import difflib
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import ConfigError
from .recipes import read_config, resolve_config
from .schema import TASKS


def _dotted(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc)


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The section class that owns the last element of `loc` (for "did you mean")."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(str(part))
        if field is None:
            return None
        current = _unwrap(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """The BaseModel inside Optional[...] / list[...] / tuple[...], if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _unwrap(arg)
        if found is not None:
            return found
    return None


def _format_error(cls: type[BaseModel], err: dict[str, Any]) -> str:
    loc = tuple(p for p in err["loc"] if p not in ("function-after",))
    # pydantic puts tagged-union / validator names into loc; keep only plain names and indices
    name = _dotted(loc)
    if err["type"] == "extra_forbidden":
        owner = _model_at(cls, loc)
        hint = ""
        if owner is not None:
            close = difflib.get_close_matches(str(loc[-1]), list(owner.model_fields), n=1)
            if close:
                hint = f" (did you mean `{_dotted(loc[:-1] + (close[0],))}`?)"
        return f"unknown key `{name}`{hint}"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if not name:
        return msg
    got = err.get("input")
    shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
    return f"`{name}`: {msg}{shown}"


def validate(cls: type[BaseModel], raw: Any, source: str) -> Any:
    """Validate a raw mapping into `cls`; the first problem becomes a one-line ConfigError."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping of keys to values")
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        errors = _merge_union_errors(cls, exc.errors())
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(f"{source}: {_format_error(cls, errors[0])}{more}") from None


def _merge_union_errors(cls: type[BaseModel], errors: list[Any]) -> list[Any]:
    """One error per field: pydantic reports a value that fits no member of a union (e.g.
    `int | 'auto'`) once per member, the member's tag appended to the field's location."""
    out: list[Any] = []
    for err in errors:
        loc = tuple(err["loc"])
        owner = _model_at(cls, loc[:-1]) if len(loc) >= 2 and isinstance(loc[-1], str) else None
        field = owner.model_fields.get(str(loc[-2])) if owner is not None else None
        leaf = field is not None and not (isinstance(_unwrap(field.annotation), type)
                                          and issubclass(_unwrap(field.annotation), BaseModel))
        if not leaf:
            out.append(err)
            continue
        msg = err["msg"].removeprefix("Input should be ").split(", ")[0]
        same = next((o for o in out if tuple(o["loc"]) == loc[:-1] and o.get("union")), None)
        if same is None:
            out.append({**err, "loc": loc[:-1], "msg": f"Input should be {msg}", "union": True})
        else:
            same["msg"] += f" or {msg}"
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override `{text}`: expected KEY=VALUE, e.g. optim.base_lr=3e-4")
    key, value = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override `{text}`: empty key")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    # YAML reads "3e-4" as a string (it wants a dot); numbers are what users mean
    if isinstance(parsed, str):
        try:
            parsed = float(parsed) if any(c in parsed for c in ".eE") else int(parsed)
        except ValueError:
            pass
    return parts, parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `raw` with dotted overrides applied (list items by integer index)."""
    out = copy.deepcopy(raw)
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = out
        for i, part in enumerate(parts[:-1]):
            key: Any = int(part) if isinstance(node, list) and part.isdigit() else part
            if isinstance(node, list):
                if not isinstance(key, int) or not -len(node) <= key < len(node):
                    raise ConfigError(f"override `{text}`: no item {part} in `{'.'.join(parts[:i])}`")
                node = node[key]
            else:
                if key not in node or node[key] is None:
                    if parts[i + 1].isdigit():  # an index into a list the file does not set
                        raise ConfigError(
                            f"override `{text}`: `{'.'.join(parts[: i + 1])}` is not set in the "
                            f"config; set the whole list, e.g. {'.'.join(parts[: i + 1])}=[...]")
                    node[key] = {}
                node = node[key]
            if not isinstance(node, dict | list):
                raise ConfigError(f"override `{text}`: `{'.'.join(parts[: i + 1])}` is not a section")
        last: Any = parts[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise ConfigError(f"override `{text}`: no item {last} in `{'.'.join(parts[:-1])}`")
            node[int(last)] = value
        else:
            node[last] = value
    return out


def load_config(
    path: str | Path, overrides: list[str] | None = None, cls: type[BaseModel] | None = None
) -> Any:
    """Load, override and validate a config: a file, or a shipped recipe's name (a file that
    exists wins). Its `base:` chain is merged first, then the overrides apply. `cls` defaults to
    the model named by `task`. Errors name the config as given."""
    source = str(path)
    raw = read_config(resolve_config(path), source)
    raw = apply_overrides(raw, overrides or [])
    if cls is None:
        task = raw.get("task")
        if task is None:  # a data-only config, unless it holds a run's sections
            runs = {k for name, c in TASKS.items() if name != "data" for k in c.model_fields}
            extra = sorted(k for k in raw if k not in TASKS["data"].model_fields and k in runs)
            if extra:
                raise ConfigError(f"{source}: `task` is not set, but `{extra[0]}` belongs to a "
                                  f"run's config: add `task: pretrain`, `finetune` or `hcml`")
            task = "data"
        cls = config_class(task, source)
    return validate(cls, raw, source)


def config_class(task: Any, source: str) -> type[BaseModel]:
    if not isinstance(task, str) or task not in TASKS:
        known = ", ".join(sorted(TASKS))
        raise ConfigError(f"{source}: `task`: unknown task {task!r} (known: {known})")
    return TASKS[task]


def to_plain(cfg: BaseModel) -> dict[str, Any]:
    """The config as plain YAML-able data (tuples as lists)."""
    return cfg.model_dump(mode="json")


def save_config(cfg: BaseModel, path: str | Path) -> None:
    """Write the fully resolved config (every default spelled out) next to a run."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(to_plain(cfg), sort_keys=False))
    tmp.replace(path)
