"""Helpers over trees of tensors (nested tuples, lists, dicts, namedtuples): the shapes batches and outputs take."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch


def map_tensors(obj: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    """Apply ``fn`` to every tensor inside nested tuples / lists / dicts; other leaves pass through."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*(map_tensors(o, fn) for o in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(map_tensors(o, fn) for o in obj)
    if isinstance(obj, dict):
        return {k: map_tensors(v, fn) for k, v in obj.items()}
    return obj


def iter_tensors(obj: Any) -> Iterable[torch.Tensor]:
    """Every tensor inside nested tuples / lists / dicts, in order."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for o in obj:
            yield from iter_tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from iter_tensors(o)


def first_tensor(obj: Any) -> torch.Tensor | None:
    """The first tensor of a tree, or None."""
    return next(iter(iter_tensors(obj)), None)


def is_float(t: torch.Tensor) -> bool:
    """Floating-point or complex (the dtypes that carry gradients)."""
    return t.is_floating_point() or t.is_complex()
