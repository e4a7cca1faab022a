"""Helpers every model module and the engine share."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DistributedDataParallel (`.module`) and torch.compile
    (`._orig_mod`) wrappers, in either nesting order."""
    while True:
        inner = getattr(model, "module", None)
        if isinstance(inner, nn.Module):
            model = inner
            continue
        inner = getattr(model, "_orig_mod", None)
        if isinstance(inner, nn.Module):
            model = inner
            continue
        return model


def constructor_args(values: Mapping[str, Any]) -> dict[str, Any]:
    """A constructor's arguments from its `locals()` taken first thing, JSON-safe (sequences as
    lists): what `Model(**hparams)` needs to rebuild the model."""
    return {k: list(v) if isinstance(v, tuple | list) else v for k, v in values.items()
            if k not in ("self", "__class__")}


def accepted(fn: Callable[..., Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of `values` that `fn` takes as keyword arguments."""
    names = inspect.signature(fn).parameters
    return {k: v for k, v in values.items() if k in names}
