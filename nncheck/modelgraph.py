"""The model as a graph of modules: leaf modules, forward hooks, execution order, the output layer, the Python path
of a submodule for hints, and the module / op families several probes recognise (BatchNorm, dropout, shape ops)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn

from nncheck.tensors import SHAPE_OPS as SHAPE_OPS  # re-exported: probes import it from here

# Module families. BatchNorm: every running-statistics norm of torch (BatchNorm1d/2d/3d, SyncBatchNorm, Lazy*).
BATCHNORM_TYPES: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._BatchNorm,)
DROPOUT_TYPES: tuple[type[nn.Module], ...] = (nn.modules.dropout._DropoutNd,)
# Normalisation layers (BatchNorm mixes samples in train mode; the others never do).
NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)


# Normalisation layers of other libraries (Hugging Face's LlamaRMSNorm / T5LayerNorm, apex's FusedLayerNorm...) are
# recognised by their class name.
NORM_NAME = re.compile(r"Norm(?!al)")


def is_norm(m: nn.Module) -> bool:
    """A normalisation layer: torch's (``NORM_TYPES``) or a class named ``...Norm...`` (RMSNorm, T5LayerNorm)."""
    return isinstance(m, NORM_TYPES) or bool(NORM_NAME.search(type(m).__name__))


def is_dropout(m: nn.Module) -> bool:
    return isinstance(m, DROPOUT_TYPES)


def is_batchnorm(m: nn.Module) -> bool:
    return isinstance(m, BATCHNORM_TYPES)


def without_dropout(model: nn.Module) -> nn.Module:
    """Put every dropout module of ``model`` in eval mode (the rest stays as it is)."""
    for m in model.modules():
        if is_dropout(m):
            m.eval()
    return model


@contextlib.contextmanager
def preserved_buffers(model: nn.Module) -> Iterator[None]:
    """Run a block and put the model's buffers back as they were (a train-mode forward updates BatchNorm's running
    statistics even without gradient)."""
    saved = {k: v.detach().clone() for k, v in model.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for k, v in model.named_buffers():
                if k in saved and v.shape == saved[k].shape:
                    v.copy_(saved[k])


def leaf_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Named modules without children (the model itself if it has none)."""
    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]
    return leaves or [("", model)]


@contextlib.contextmanager
def forward_hooks(
    named_modules: Iterable[tuple[str, nn.Module]],
    hook: Callable[..., Any] | None = None,
    *,
    pre: Callable[..., Any] | None = None,
    with_kwargs: bool = False,
) -> Iterator[None]:
    """While the block runs, call ``hook(module, args, [kwargs,] output, name)`` after and
    ``pre(module, args, [kwargs,] name)`` before the forward of every module of ``named_modules``; their return
    values act as in ``register_forward_hook`` / ``register_forward_pre_hook``. Every hook is removed on exit, even
    on error. This is the one place nncheck registers module hooks."""
    handles = []
    try:
        for name, m in named_modules:
            if pre is not None:
                handles.append(
                    m.register_forward_pre_hook(lambda *a, name=name: pre(*a, name), with_kwargs=with_kwargs)
                )
            if hook is not None:
                handles.append(m.register_forward_hook(lambda *a, name=name: hook(*a, name), with_kwargs=with_kwargs))
        yield
    finally:
        for h in handles:
            h.remove()


def execution_order(model: nn.Module, run: Callable[[], Any]) -> list[tuple[str, nn.Module, Any]]:
    """Leaf modules in the order ``run()`` (one forward pass of ``model``, no grad) runs them, each with its output;
    a last entry ``("", model, output)`` holds what ``run()`` returned. The model's buffers are left as they were."""
    order: list[tuple[str, nn.Module, Any]] = []
    record = lambda mod, inp, out, name: order.append((name, mod, out))  # noqa: E731
    with forward_hooks(leaf_modules(model), record), torch.no_grad(), preserved_buffers(model):
        out = run()
    order.append(("", model, out))  # sentinel: the model output itself
    return order


def output_layer_of(
    runs: list[tuple[str, nn.Module, Any]], exact: bool = False, final: Any = None
) -> tuple[str, nn.Module] | None:
    """From an ``execution_order``: the last parameterised leaf module whose output has the model output's shape
    (else, unless ``exact``, the last parameterised leaf run). ``None`` when there is no such module (with ``exact``:
    the output is computed in forward after the last layer, e.g. a scaled cosine similarity). ``final``: the output
    tensor to match (one head of a multi-output model) instead of the model output."""
    final = runs[-1][2] if final is None else final
    with_params = [(n, m, o) for n, m, o in runs[:-1] if any(True for _ in m.parameters(recurse=False))]
    if not with_params:
        return None
    if isinstance(final, torch.Tensor):
        for n, m, o in reversed(with_params):
            if isinstance(o, torch.Tensor) and o.shape == final.shape:
                return n, m
    if exact:
        return None
    n, m, _ = with_params[-1]
    return n, m


def code_path(qualified_name: str, model: nn.Module | None = None, root: str = "model") -> str:
    """Python expression for a submodule, for hints: ``features.3.conv`` -> ``model.features[3].conv``.

    With ``model`` the path is walked: ``[i]`` for Sequential / ModuleList items, ``["key"]`` for ModuleDict keys,
    ``.name`` for identifiers, ``getattr(x, "name")`` otherwise. Without it, digits become ``[i]``.
    """
    out = root
    current = model
    for part in qualified_name.split(".") if qualified_name else []:
        if isinstance(current, nn.ModuleDict):
            out += f"[{part!r}]"
        elif part.isdigit() and (current is None or isinstance(current, (nn.Sequential, nn.ModuleList))):
            out += f"[{part}]"
        elif part.isidentifier():
            out += f".{part}"
        else:
            out = f"getattr({out}, {part!r})"
        current = current._modules.get(part) if current is not None else None
    return out
