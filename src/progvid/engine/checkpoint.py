"""Checkpoints: weights as safetensors, training state beside them, written atomically.

A checkpoint is a folder `step_00001234/` holding `model.safetensors`, `state.pt` (optimizer,
step, RNG states, loader position: tensors and plain Python only) and `meta.json`. The folder is
assembled under a temporary name, every file flushed and fsynced, then renamed into place, so a
run killed mid-write never leaves a half checkpoint that `--resume auto` could pick. Loading never
executes code from a file: safetensors for weights, `torch.load(weights_only=True)` for state.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..errors import CheckpointError
from ..models.common import unwrap

WEIGHTS = "model.safetensors"
STATE = "state.pt"
META = "meta.json"
PREFIX = "step_"
TMP_PREFIX = ".tmp_"  # folders being written; left behind only by a killed process


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        fh.flush()
        os.fsync(fh.fileno())


def plain_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Weights without DDP / torch.compile wrappers, contiguous, ready for safetensors."""
    return {k: v.detach().contiguous().cpu() for k, v in unwrap(model).state_dict().items()}


def _short(keys: list[str], limit: int = 5) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return "[" + ", ".join(keys[:limit]) + "]" + more


def load_exact(model: torch.nn.Module, weights: dict[str, torch.Tensor], what: str) -> None:
    """Load `weights` into `model`, all keys and shapes exactly, or raise a one-line
    CheckpointError starting with `what` and listing the differences."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    shapes = sorted(f"{k} {tuple(weights[k].shape)} != {tuple(v.shape)}"
                    for k, v in expected.items() if k in weights and weights[k].shape != v.shape)
    # a float weight stored as integers (or the reverse) would be cast silently, values lost
    kinds = sorted(f"{k} {weights[k].dtype} for {v.dtype}" for k, v in expected.items()
                   if k in weights and weights[k].is_floating_point() != v.is_floating_point())
    if missing or unexpected or shapes or kinds:
        parts = [f"{name} {_short(keys)}" for name, keys in
                 (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes),
                  ("dtype mismatch", kinds)) if keys]
        raise CheckpointError(f"{what} ({'; '.join(parts)})")
    model.load_state_dict(weights, strict=True)


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    weights: dict[str, torch.Tensor],
    state: dict[str, Any],
    meta: dict[str, Any],
    keep_last: int = 3,
    name: str | None = None,
) -> Path:
    """Write checkpoint `step` atomically and prune all but the newest `keep_last`. With
    `name` (e.g. "best") the checkpoint goes to `checkpoints/<name>` instead: replaced by the
    next one of that name, never pruned, never picked by `--resume auto`."""
    ckpt_root = Path(run_dir) / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / (name or f"{PREFIX}{step:08d}")
    tmp = ckpt_root / f"{TMP_PREFIX}{final.name}_{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    # safetensors refuses tensors that share storage; clone those (tied weights are rare here)
    seen: dict[int, str] = {}
    clean = {}
    for k, v in weights.items():
        ptr = v.untyped_storage().data_ptr() if v.numel() else -1
        clean[k] = v.clone() if ptr in seen else v
        if ptr != -1:
            seen[ptr] = k
    try:
        save_file(clean, str(tmp / WEIGHTS), metadata={"format": "pt"})
        torch.save(state, tmp / STATE)
        (tmp / META).write_text(json.dumps({**meta, "step": step}, indent=2, default=str))
        for name in (WEIGHTS, STATE, META):
            _fsync_file(tmp / name)
        _fsync_dir(tmp)
    except (OSError, RuntimeError) as exc:  # a full disk: torch.save says "unexpected pos"
        shutil.rmtree(tmp, ignore_errors=True)
        free = shutil.disk_usage(ckpt_root).free
        why = (f"No space left on the device ({free} bytes free)" if free < (1 << 20)
               or getattr(exc, "errno", None) == errno.ENOSPC else str(exc).splitlines()[0])
        raise CheckpointError(f"{final}: could not write the checkpoint: {why}; the earlier "
                              "checkpoints are untouched") from None
    if final.exists():  # a re-save of the same step (e.g. final after periodic) replaces it
        old = final.with_name(f"{TMP_PREFIX}old_{final.name}_{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_dir(ckpt_root)
    for old in list_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def clean_leftovers(run_dir: str | Path) -> list[Path]:
    """Remove the temporary folders of checkpoint writes killed half-way (call it while holding
    the run folder's lock, so no live writer owns them); returns what was removed."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    # A re-save swaps the old copy aside, then the new one in: killed between the two renames,
    # both sit under temporary names. The new copy was complete (written and synced before the
    # swap), so it takes the name; else the old one gets it back.
    for old in sorted(root.glob(f"{TMP_PREFIX}old_*")):
        name, _, pid = old.name[len(TMP_PREFIX) + 4:].rpartition("_")
        final = root / name
        if not name or not pid.isdigit() or final.exists() or not old.is_dir():
            continue
        new = root / f"{TMP_PREFIX}{name}_{pid}"
        complete = new.is_dir() and all((new / f).is_file() for f in (WEIGHTS, STATE, META))
        os.replace(new if complete else old, final)
        print(f"[progvid] {final}: restored from a re-save that was killed half-way",
              file=sys.stderr)
    gone = sorted(p for p in root.glob(f"{TMP_PREFIX}*") if p.is_dir())
    for p in gone:
        shutil.rmtree(p, ignore_errors=True)
    return gone


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary folders are ignored)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX)
             and all((p / f).is_file() for f in (WEIGHTS, STATE, META))]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def set_aside_after(run_dir: str | Path, step: int) -> Path | None:
    """Move the run's step checkpoints past `step` into `checkpoints/superseded-<UTC time>/`
    (a run that goes on from an earlier checkpoint, e.g. `best`, leaves them behind: kept, they
    would count as its newest, so pruning would remove the new ones first and `--resume auto`
    would pick the abandoned branch). Returns the folder they went to (None: nothing to move)."""
    later = [p for p in list_checkpoints(run_dir) if int(p.name[len(PREFIX):]) > step]
    if not later:
        return None
    dest = Path(run_dir) / "checkpoints" / time.strftime("superseded-%Y%m%dT%H%M%SZ", time.gmtime())
    dest = dest.with_name(f"{dest.name}_{os.getpid()}") if dest.exists() else dest
    dest.mkdir()
    for p in later:
        os.replace(p, dest / p.name)
    _fsync_dir(dest.parent)
    return dest


def resolve_resume(run_dir: str | Path, resume: str | None) -> Path | None:
    """`auto` -> the newest complete checkpoint of the run with finite weights (None if there is
    none; non-finite ones, written by older versions, are skipped with a message); else the path
    (a run folder: its newest checkpoint), which must hold finite weights."""
    if resume is None:
        return None
    if resume == "auto":
        for found in reversed(list_checkpoints(run_dir)):
            if finite_weights(found):
                return found
            print(f"[progvid] {found}: skipped, its weights are not finite", file=sys.stderr)
        return None
    path = Path(resume)
    if path.is_dir() and (path / "checkpoints").is_dir():  # a run folder: its newest checkpoint
        found = list_checkpoints(path)
        if not found:
            raise CheckpointError(f"{path}: run folder has no complete checkpoint")
        path = found[-1]
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.is_dir() and (path / WEIGHTS).is_file() and not finite_weights(path):
        raise CheckpointError(f"{path}: its weights are not finite; resume from an earlier "
                              "checkpoint")
    return path


def finite_weights(path: str | Path) -> bool:
    """True when every floating-point tensor of a checkpoint's weights is finite."""
    for t in load_weights(path).values():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return False
    return True


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Weights from a checkpoint folder or a .safetensors file (never runs code)."""
    path = Path(path)
    file = path / WEIGHTS if path.is_dir() else path
    if not file.is_file():
        raise CheckpointError(f"{file}: weights file not found")
    if file.suffix != ".safetensors":
        return _safe_torch_load(file, what="weights")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{file}: not a valid safetensors file ({exc})") from None


def weight_shapes(path: str | Path) -> dict[str, tuple[int, ...]] | None:
    """Each weight's shape from a safetensors header, reading no tensor (None for other files)."""
    path = Path(path)
    file = path / WEIGHTS if path.is_dir() else path
    if file.suffix != ".safetensors" or not file.is_file():
        return None
    try:
        with safe_open(str(file), framework="pt") as fh:
            return {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{file}: not a valid safetensors file ({exc})") from None


def check_shapes(model: torch.nn.Module, shapes: dict[str, tuple[int, ...]], what: str) -> None:
    """The `load_exact` verdict on keys and shapes alone (e.g. for a model built on the meta
    device, before allocating a model that a damaged meta.json may have made enormous)."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = sorted(f"{k} {shapes[k]} != {tuple(v.shape)}" for k, v in expected.items()
                   if k in shapes and shapes[k] != tuple(v.shape))
    if missing or unexpected or wrong:
        parts = [f"{name} {_short(keys)}" for name, keys in
                 (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong)) if keys]
        raise CheckpointError(f"{what} ({'; '.join(parts)})")


def _safe_torch_load(file: Path, what: str) -> Any:
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message opens with the same paragraph for every refusal; the line naming a
        # GLOBAL says the file would run code, anything else that it is no PyTorch file at all
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        code = next((ln for ln in lines if "GLOBAL" in ln), None)
        if code is None and not _is_pickle(file):
            raise CheckpointError(f"{file}: cannot read {what}: not a PyTorch checkpoint file "
                                  "(no pickle in it)") from None
        raise CheckpointError(
            f"{file}: refused to load {what}: the file holds objects that would run code "
            f"({(code or 'a pickle torch refuses to load safely')[:160]})"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any other failure means a damaged or foreign file
        text = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        raise CheckpointError(f"{file}: cannot read {what}: damaged or not a PyTorch checkpoint "
                              f"file ({type(exc).__name__}{': ' + text if text else ''})") from None


def _is_pickle(file: Path) -> bool:
    """Whether `file` is a pickle (or a torch zip archive holding one), read opcode by opcode
    without running anything."""
    import io
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(file):
            with zipfile.ZipFile(file) as zf:
                name = next((n for n in zf.namelist() if n.endswith("data.pkl")), None)
                if name is None:
                    return False
                data = zf.read(name)
        else:
            data = file.read_bytes()
        for _ in pickletools.genops(io.BytesIO(data)):
            pass
        return True
    except Exception:  # noqa: BLE001 - any parse failure: not a pickle
        return False


def load_state(path: str | Path) -> dict[str, Any]:
    """Training state of a checkpoint folder (tensors and plain Python only)."""
    file = Path(path) / STATE
    if not file.is_file():
        raise CheckpointError(f"{file}: training state not found")
    state = _safe_torch_load(file, what="training state")
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{file}: malformed training state (no `step`)")
    return state


def load_meta(path: str | Path) -> dict[str, Any]:
    file = Path(path) / META
    if not file.is_file():
        raise CheckpointError(f"{file}: checkpoint metadata not found")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{file}: invalid JSON ({exc.msg})") from None
