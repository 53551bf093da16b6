"""Helpers over trees of tensors (nested tuples, lists, dicts, namedtuples, dataclasses and Hugging Face
``ModelOutput`` objects): the shapes batches and outputs take."""

from __future__ import annotations

import dataclasses
import io
import linecache
import os
import sys
import tokenize
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

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


# ---------------------------------------------------------------------------------------------- batch-size changes
# Ops that regroup a tensor's values into another shape: the ones that can turn (25, 16, 4, 4) into (16, 400).
REGROUP_OPS = frozenset({"view", "reshape", "flatten", "unflatten", "view_as", "reshape_as"})
# frames skipped when naming the user's line: torch, the standard library and nncheck itself
_SKIP_DIRS = tuple(os.path.dirname(os.path.abspath(f)) + os.sep for f in (torch.__file__, os.__file__, __file__))


@dataclasses.dataclass
class BatchChange:
    """The first op of a forward pass that turns a tensor holding the batch (first dimension a multiple of the batch
    size) into one that does not: its name, the shapes before and after, the user's source line."""

    op: str
    before: tuple[int, ...]
    after: tuple[int, ...]
    where: str | None  # "file:line"
    code: str  # the source line, stripped ("" when unknown)
    regroup: bool  # a view / reshape / flatten (else another op: a reduction, an index, a cat)

    def describe(self) -> str:
        at = f" ({self.where})" if self.where else ""
        code = f"`{self.code}`{at}" if self.code else f"`{self.op}`{at}"
        return f"{code} turns the {self.before} tensor into {self.after}"


def _user_line() -> tuple[str | None, str]:
    """("file:line", source) of the innermost frame outside torch, the standard library and nncheck."""
    frame = sys._getframe(1)
    while frame is not None:
        path = os.path.abspath(frame.f_code.co_filename)
        if not path.startswith(_SKIP_DIRS) and not frame.f_code.co_filename.startswith("<"):
            rel = os.path.relpath(path)
            shown = path if rel.startswith("..") else rel
            return f"{shown}:{frame.f_lineno}", _without_comment(linecache.getline(path, frame.f_lineno).strip())
        frame = frame.f_back
    return None, ""


def _without_comment(code: str) -> str:
    """A source line without its trailing ``# comment`` (left as it is when it does not tokenize alone)."""
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            if tok.type == tokenize.COMMENT:
                return code[: tok.start[1]].rstrip()
    except (tokenize.TokenError, SyntaxError):
        pass
    return code


class _BatchWatch(TorchFunctionMode):
    """Follows the tensors that hold the batch through a forward pass; records the first op that loses it."""

    def __init__(self, n: int, inputs: Any) -> None:
        super().__init__()
        self.n = n
        self.keep = [t for t in iter_tensors(inputs) if t.dim() >= 1 and t.shape[0] == n]
        self.ids = {id(t) for t in self.keep}
        self.first: BatchChange | None = None
        self.first_regroup: BatchChange | None = None

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "") or ""
        if self.first_regroup is not None or name in ("__get__", "__set__"):
            return out
        held = [t for t in iter_tensors((args, kwargs)) if id(t) in self.ids]
        if not held:
            return out
        for t in iter_tensors(out):
            if t.dim() >= 1 and t.shape[0] > 0 and t.shape[0] % self.n == 0:
                self.ids.add(id(t))
                self.keep.append(t)
            elif t.dim() >= 1:
                where, code = _user_line()
                regroup = name in REGROUP_OPS and t.numel() == held[0].numel()
                change = BatchChange(name, tuple(held[0].shape), tuple(t.shape), where, code, regroup)
                if regroup:
                    self.first_regroup = change
                elif self.first is None:
                    self.first = change
                break
        return out


def batch_change(run: Callable[[], Any], n: int, inputs: Any) -> BatchChange | None:
    """Run ``run`` (a forward pass on a batch of ``n`` samples whose tensors are ``inputs``) and return the first
    view / reshape / flatten that turns a tensor holding the batch into one whose first dimension is not a multiple
    of ``n`` (else the first other op that does), or None (also when the run raises)."""
    watch = _BatchWatch(n, inputs)
    try:
        with torch.no_grad(), watch:
            run()
    except Exception:
        pass
    return watch.first_regroup or watch.first
