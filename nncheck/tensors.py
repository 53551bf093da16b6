"""Helpers over trees of tensors (nested tuples, lists, dicts, namedtuples, dataclasses and Hugging Face
``ModelOutput`` objects): the shapes batches and outputs take."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import torch

# Ops that only reshape, view, index or cast a tensor: a value passes through them unchanged in content. Names as
# torch.fx calls them (``getitem``) and as ``__torch_function__`` sees them (``__getitem__``).
SHAPE_OPS = frozenset({
    "view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "permute", "transpose", "contiguous",
    "movedim", "view_as", "reshape_as", "t", "float", "double", "half", "to", "type", "clone", "getitem",
    "__getitem__", "select", "narrow", "expand", "expand_as", "detach",
})  # fmt: skip

Path = tuple[Any, ...]  # the keys / indices / attribute names leading from a tree's root to one of its leaves


def _is_dataclass_instance(obj: Any) -> bool:
    return dataclasses.is_dataclass(obj) and not isinstance(obj, type)


def _rebuild_dict(obj: dict[Any, Any], items: dict[Any, Any]) -> Any:
    """A dict of ``obj``'s type holding ``items`` (a ``ModelOutput`` keeps its class and attribute access); a plain
    dict when the type cannot be rebuilt that way."""
    if type(obj) is dict:
        return items
    try:
        return type(obj)(**items) if _is_dataclass_instance(obj) else type(obj)(items)
    except Exception:
        return dict(items)


def map_tensors(obj: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    """Apply ``fn`` to every tensor inside nested tuples / lists / dicts / dataclasses; other leaves pass through."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*(map_tensors(o, fn) for o in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(map_tensors(o, fn) for o in obj)
    if isinstance(obj, dict):
        return _rebuild_dict(obj, {k: map_tensors(v, fn) for k, v in obj.items()})
    if _is_dataclass_instance(obj):
        changes = {f.name: map_tensors(getattr(obj, f.name), fn) for f in dataclasses.fields(obj) if f.init}
        try:
            return dataclasses.replace(obj, **changes)
        except Exception:
            return obj
    return obj


def iter_tensors(obj: Any) -> Iterable[torch.Tensor]:
    """Every tensor inside nested tuples / lists / dicts / dataclasses, in order."""
    for _, t in named_tensors(obj):
        yield t


def named_tensors(obj: Any, path: Path = ()) -> Iterable[tuple[Path, torch.Tensor]]:
    """``(path, tensor)`` for every tensor of a tree, in order; ``get_path(obj, path)`` gives the tensor back."""
    if isinstance(obj, torch.Tensor):
        yield path, obj
    elif isinstance(obj, (tuple, list)):
        for i, o in enumerate(obj):
            yield from named_tensors(o, (*path, i))
    elif isinstance(obj, dict):
        for k, o in obj.items():
            yield from named_tensors(o, (*path, k))
    elif _is_dataclass_instance(obj):
        for f in dataclasses.fields(obj):
            yield from named_tensors(getattr(obj, f.name), (*path, f.name))


def get_path(obj: Any, path: Path) -> Any:
    """The leaf of a tree at ``path`` (from ``named_tensors``)."""
    for key in path:
        obj = obj[key] if isinstance(obj, (dict, list, tuple)) else getattr(obj, key)
    return obj


def path_name(obj: Any, path: Path, root: str = "output") -> str:
    """How code reads the leaf at ``path``: ``output[0]``, ``output["logits"]``, ``output.logits`` (a dataclass or a
    Hugging Face ``ModelOutput``, which also allows attribute access)."""
    out = root
    for key in path:
        if isinstance(key, str) and key.isidentifier() and (_is_dataclass_instance(obj) or not isinstance(obj, dict)):
            out += f".{key}"
        else:
            out += f"[{key!r}]"
        obj = get_path(obj, (key,)) if obj is not None else None
    return out


def first_tensor(obj: Any) -> torch.Tensor | None:
    """The first tensor of a tree, or None."""
    return next(iter(iter_tensors(obj)), None)


def is_float(t: torch.Tensor) -> bool:
    """Floating-point or complex (the dtypes that carry gradients)."""
    return t.is_floating_point() or t.is_complex()
