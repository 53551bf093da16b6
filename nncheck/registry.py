"""The probe registry and typed probe parameters.

A probe is one function over the shared ``Context`` and its parameters, registered with its stable id::

    @dataclass(frozen=True)
    class Params:
        max_steps: int = param(500, fast=250, source="Karpathy's recipe: overfit one batch ...")

    @probe("overfit-batch", title="Overfit one batch", order=30, params=Params)
    def overfit_batch(ctx: Context, p: Params) -> Result:
        '''What it does / Why is this bad? / Thresholds / How to fix / Example.'''

Each parameter is a field of the probe's frozen dataclass: its default, its value under ``--budget fast``, and the
source of the value. They are the one place a threshold lives: ``[tool.nncheck.probes.<id>]`` is validated against
them, ``nncheck explain`` lists them, and a docstring names them as ``{max_steps}`` (replaced by the value when the
docstring is shown), never by a number written by hand. Every module of ``nncheck.probes`` whose name does not start
with ``_`` is imported by ``registry()``; one probe per module.

This module imports no torch, so ``nncheck list`` / ``explain`` can read the catalogue cheaply.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nncheck.context import Context
    from nncheck.report import Result

PROBE_PACKAGE = "nncheck.probes"


class _NoFast:
    def __repr__(self) -> str:
        return "<same as full>"


NO_FAST: Any = _NoFast()


def param(default: Any, *, source: str, fast: Any = NO_FAST) -> Any:
    """A probe parameter: its default (``--budget full``), its ``--budget fast`` value, and where the value comes from
    (a paper, a URL, a measurement on files of this repository)."""
    if not source.strip():
        raise ValueError("every probe parameter names its source")
    return dataclasses.field(default=default, metadata={"fast": fast, "source": " ".join(source.split())})


@dataclass(frozen=True)
class NoParams:
    """The parameters of a probe that has none."""


@dataclass(frozen=True)
class ParamInfo:
    name: str
    default: Any
    fast: Any
    source: str

    @property
    def kind(self) -> type:
        return type(self.default)

    def value(self, budget: str) -> Any:
        return self.fast if budget == "fast" and self.fast is not NO_FAST else self.default

    def check(self, value: Any, where: str) -> Any:
        """``value`` converted to this parameter's type (an int where a float is expected), or a ``TypeError`` whose
        message says what was expected."""
        kind = self.kind
        ok = (
            isinstance(value, bool)
            if kind is bool
            else (isinstance(value, (int, float)) and not isinstance(value, bool))
            if kind is float
            else (isinstance(value, int) and not isinstance(value, bool))
            if kind is int
            else isinstance(value, kind)
        )
        if not ok:
            raise TypeError(f"{where} must be {_kind_name(kind)} like its default {self.default!r}; got {value!r}.")
        return float(value) if kind is float else value


def _kind_name(kind: type) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(kind, kind.__name__)


ProbeFn = Callable[["Context", Any], "Result"]
_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


@dataclass(frozen=True)
class Probe:
    id: str
    title: str
    fn: ProbeFn
    params: type = NoParams
    order: int = 100
    default: bool = True  # part of the default battery

    @property
    def param_info(self) -> list[ParamInfo]:
        return [
            ParamInfo(f.name, f.default, f.metadata.get("fast", NO_FAST), f.metadata.get("source", ""))
            for f in dataclasses.fields(self.params)
        ]

    @property
    def doc(self) -> str:
        """The docstring, each ``{param}`` replaced by its value (and its fast value when it has one)."""
        info = {i.name: i for i in self.param_info}

        def value(m: re.Match[str]) -> str:
            i = info.get(m.group(1))
            if i is None:
                return m.group(0)
            text = f"{m.group(1)} = {i.default!r}"
            return text + (f", fast {i.fast!r}" if i.fast is not NO_FAST else "")

        return _PLACEHOLDER.sub(value, inspect.cleandoc(self.fn.__doc__ or ""))

    @property
    def summary(self) -> str:
        """First line of the docstring."""
        return self.doc.splitlines()[0] if self.doc else self.title

    def resolved_params(self, budget: str = "full", overrides: dict[str, Any] | None = None) -> Any:
        """The probe's parameters for a budget, with validated ``overrides`` (from the configuration) on top."""
        values = {i.name: i.value(budget) for i in self.param_info}
        values.update(overrides or {})
        return self.params(**values)


_REGISTRY: dict[str, Probe] = {}
_LOADED = False


def probe(
    id: str,
    *,
    title: str,
    order: int = 100,
    params: type = NoParams,
    default: bool = True,
) -> Callable[[ProbeFn], ProbeFn]:
    """Register ``fn(ctx, params) -> Result`` under a stable id; ``params``: a frozen dataclass of ``param`` fields."""

    def deco(fn: ProbeFn) -> ProbeFn:
        if id in _REGISTRY and _REGISTRY[id].fn.__module__ != fn.__module__:
            raise RuntimeError(f"probe id {id!r} registered twice ({_REGISTRY[id].fn.__module__}, {fn.__module__})")
        if not (dataclasses.is_dataclass(params) and params.__dataclass_params__.frozen):  # type: ignore[attr-defined]
            raise RuntimeError(f"probe {id!r}: params must be a frozen dataclass of param(...) fields")
        for f in dataclasses.fields(params):
            if not f.metadata.get("source"):
                raise RuntimeError(f"probe {id!r}: parameter {f.name!r} has no source (use param(..., source=...))")
        _REGISTRY[id] = Probe(id, title, fn, params, order, default)
        return fn

    return deco


def registry() -> dict[str, Probe]:
    """All probes, by id, in battery order (imports every module of ``nncheck.probes`` once)."""
    global _LOADED
    if not _LOADED:
        package = importlib.import_module(PROBE_PACKAGE)
        for info in pkgutil.iter_modules(package.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{PROBE_PACKAGE}.{info.name}")
        _LOADED = True
    return dict(sorted(_REGISTRY.items(), key=lambda kv: (kv[1].order, kv[0])))
