"""Hugging Face hub ids as checkpoint sources: `org/name` (optionally `org/name@revision`)
resolves through `huggingface_hub` to a local snapshot folder, which then loads like any local
folder. The hub's own settings apply (`HF_HOME`, `HF_HUB_CACHE`, `HF_HUB_OFFLINE`, token);
offline, only what is already in the cache is found.

huggingface_hub is optional (it comes with `progvid[hf]`): it is imported when a hub id is used.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from progvid.errors import CheckpointError

# `org/name`, each part as the hub allows it, optionally `@revision` (a branch, tag or commit).
HUB_ID = re.compile(r"^(?:hf://)?([A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95})(?:@([\w./-]+))?$")
# What a model folder needs: configs, weights (safetensors preferred by transformers), labels.
ALLOW = ["*.json", "*.safetensors", "*.bin", "*.pth", "*.pt", "*.txt"]


def hub_id(source: str | Path) -> tuple[str, str | None] | None:
    """(repo id, revision) when `source` is written as a hub id (`org/name[@revision]`, or
    `hf://org/name`) and is not a local path; a path whose first folder exists here
    (`runs/typo`) is taken as a local path."""
    text = str(source)
    m = HUB_ID.match(text)
    if m is None or ".." in text or "--" in m[1]:
        return None
    if not text.startswith("hf://") and (Path(text).exists() or Path(m[1].split("/")[0]).is_dir()):
        return None
    return m[1], m[2]


def _offline() -> bool:
    flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return flag.strip().upper() in {"1", "ON", "YES", "TRUE"}


def _cache_dir() -> str | None:
    """The cache the environment names now (read at call time, not import time)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def hub_folder(source: str | Path) -> Path | None:
    """The local snapshot folder of hub id `source` (downloaded when online and not cached);
    None when `source` is not written as a hub id or is a local path. Raises a one-line
    CheckpointError when the model cannot be had (offline and not cached, unknown repo...)."""
    parsed = hub_id(source)
    if parsed is None:
        return None
    repo, revision = parsed
    try:
        import huggingface_hub
        from huggingface_hub import constants, errors
    except ImportError:
        raise CheckpointError(f"{source}: no such local path; as a Hugging Face hub id it needs "
                              "huggingface_hub: pip install 'progvid[hf]'") from None
    offline = _offline() or bool(getattr(constants, "HF_HUB_OFFLINE", False))
    where = f"{repo}" + (f"@{revision}" if revision else "")
    try:
        folder = huggingface_hub.snapshot_download(
            repo, revision=revision, cache_dir=_cache_dir(), local_files_only=offline,
            allow_patterns=ALLOW)
    except getattr(errors, "IncompleteSnapshotError", ()):  # huggingface_hub >= 1.x
        raise CheckpointError(f"{source}: the cached snapshot of hub model {where} is incomplete "
                              "and the hub cannot be reached; download it again online") from None
    except errors.LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if offline else "the hub cannot be reached"
        cache = _cache_dir() or constants.HF_HUB_CACHE
        raise CheckpointError(f"{source}: checkpoint not found: no such local path, and hub model "
                              f"{where} is not in the Hugging Face cache {cache} while {why}"
                              ) from None
    except errors.RevisionNotFoundError:
        raise CheckpointError(f"{source}: hub model {repo} has no revision {revision!r}") from None
    except errors.RepositoryNotFoundError:
        raise CheckpointError(f"{source}: checkpoint not found: no such local path, nor a hub "
                              f"model {repo} (repository not found, or gated without a token)"
                              ) from None
    except (errors.HFValidationError, ValueError) as exc:
        raise CheckpointError(f"{source}: not a valid local path or hub id ({_first(exc)})") from None
    except (OSError, errors.HfHubHTTPError) as exc:  # incomplete snapshot, network, disk
        raise CheckpointError(f"{source}: cannot fetch hub model {where} ({_first(exc)})") from None
    return Path(folder)


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
