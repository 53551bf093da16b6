"""The probe registry.

A probe is one function over the shared ``Context`` that returns a ``Result``, registered with its stable id::

    @probe("overfit-batch", title="Overfit one batch", order=30,
           params={"max_steps": 500}, fast={"max_steps": 200})
    def overfit_batch(ctx: Context) -> Result:
        '''What it does / Why is this bad? / Thresholds / How to fix / Example.'''
        steps = ctx.params["max_steps"]
        ...

``params`` are the defaults (overridable in ``[tool.nncheck.probes.<id>]``); ``fast`` overrides some of them
under ``--budget fast``. Every module in this package is imported by ``registry()``; one probe per module.
The docstring is what ``nncheck explain <id>`` prints.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nncheck.context import Context
    from nncheck.report import Result

ProbeFn = Callable[["Context"], "Result"]


@dataclass(frozen=True)
class Probe:
    id: str
    title: str
    fn: ProbeFn
    order: int = 100
    params: dict[str, Any] = field(default_factory=dict)
    fast: dict[str, Any] = field(default_factory=dict)
    default: bool = True  # part of the default battery

    @property
    def doc(self) -> str:
        return inspect.cleandoc(self.fn.__doc__ or "")

    @property
    def summary(self) -> str:
        """First line of the docstring."""
        return self.doc.splitlines()[0] if self.doc else self.title

    def resolved_params(self, budget: str = "full", overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        p = dict(self.params)
        if budget == "fast":
            p.update(self.fast)
        if overrides:
            p.update(overrides)
        return p


_REGISTRY: dict[str, Probe] = {}
_LOADED = False


def probe(
    id: str,
    *,
    title: str,
    order: int = 100,
    params: dict[str, Any] | None = None,
    fast: dict[str, Any] | None = None,
    default: bool = True,
) -> Callable[[ProbeFn], ProbeFn]:
    """Register a probe function under a stable id."""

    def deco(fn: ProbeFn) -> ProbeFn:
        if id in _REGISTRY and _REGISTRY[id].fn.__module__ != fn.__module__:
            raise RuntimeError(f"probe id {id!r} registered twice ({_REGISTRY[id].fn.__module__}, {fn.__module__})")
        unknown = set(fast or {}) - set(params or {})
        if unknown:
            raise RuntimeError(f"probe {id!r}: fast values for undeclared params {sorted(unknown)}")
        _REGISTRY[id] = Probe(id, title, fn, order, dict(params or {}), dict(fast or {}), default)
        fn.probe_id = id  # type: ignore[attr-defined]
        return fn

    return deco


def registry() -> dict[str, Probe]:
    """All probes, by id, in battery order (imports every module of this package once)."""
    global _LOADED
    if not _LOADED:
        for info in pkgutil.iter_modules(__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{__name__}.{info.name}")
        _LOADED = True
    return dict(sorted(_REGISTRY.items(), key=lambda kv: (kv[1].order, kv[0])))


def get(probe_id: str) -> Probe:
    return registry()[probe_id]
