"""Results and reports: the one data model that probes produce and renderers consume.

Probes know nothing of renderers and renderers know nothing of probes; both meet here.
The JSON form (``Report.to_dict``) is versioned by ``SCHEMA_VERSION``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from nncheck._version import __version__

SCHEMA_VERSION = 1


class Status(str, Enum):
    """Verdict of one probe."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


def jsonable(value: Any) -> Any:
    """Turn tensors, numpy values, tuples and non-finite floats into plain JSON values."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    item = getattr(value, "item", None)
    tolist = getattr(value, "tolist", None)
    if tolist is not None:
        try:
            return jsonable(tolist())
        except Exception:  # pragma: no cover - exotic array types
            pass
    if item is not None:
        try:
            return jsonable(item())
        except Exception:  # pragma: no cover
            pass
    return str(value)


@dataclass
class Result:
    """What one probe found.

    ``measured`` and ``expected`` hold plain JSON values (numbers, strings, lists, dicts).
    ``series`` holds plots, by name. Each plot is a dict::

        {"title": "Loss on the batch", "xlabel": "step", "ylabel": "loss",
         "xscale": "linear" | "log", "yscale": "linear" | "log", "kind": "line" | "bar",
         "curves": {"your optimizer": {"x": [...], "y": [...]}, "Adam 3e-4": {"x": [...], "y": [...]}},
         "marks": {"your LR": 0.001, "suggested": 0.003}}   # optional vertical lines at these x values

    For "bar" plots x may hold strings (layer names). Renderers (HTML) draw every plot they find.
    ``notes`` are extra lines worth showing even when the probe passes.
    """

    status: Status
    message: str
    measured: dict[str, Any] = field(default_factory=dict)
    expected: dict[str, Any] = field(default_factory=dict)
    hint: str = ""
    series: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    id: str = ""
    title: str = ""
    duration_s: float = 0.0
    steps: float = 0.0  # training-step equivalents the probe ran (a forward 1/3, a backward 2/3; Context.steps_spent)

    def __post_init__(self) -> None:
        self.status = Status(self.status)

    def to_dict(self, with_series: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "title": self.title,
            "status": self.status.value,
            "message": self.message,
            "measured": jsonable(self.measured),
            "expected": jsonable(self.expected),
            "hint": self.hint,
            "notes": list(self.notes),
            "duration_s": round(self.duration_s, 4),
            "steps": round(self.steps, 1),
        }
        if with_series and self.series:
            d["series"] = jsonable(self.series)
        return d

    def replace(self, **changes: Any) -> Result:
        return dataclasses.replace(self, **changes)


def passed(message: str, **kw: Any) -> Result:
    return Result(Status.PASS, message, **kw)


def warned(message: str, **kw: Any) -> Result:
    return Result(Status.WARN, message, **kw)


def failed(message: str, **kw: Any) -> Result:
    return Result(Status.FAIL, message, **kw)


def skipped(message: str, **kw: Any) -> Result:
    return Result(Status.SKIP, message, **kw)


def _round(x: float | None, digits: int) -> float | None:
    return None if x is None else round(x, digits)


@dataclass
class SetupReport:
    """All results for one setup (one file, or one ``nncheck.check(...)`` call)."""

    path: str
    results: list[Result] = field(default_factory=list)
    duration_s: float = 0.0
    step_time_s: float | None = None  # one training step: the smaller of the two measurements below
    step_time_start_s: float | None = None  # measured before the probes (preflight)
    step_time_end_s: float | None = None  # measured again after them
    steps: float = 0.0  # training-step equivalents run in all (preflight, probes, step timing)
    seed: int = 0
    device: str = "cpu"
    budget: str = "full"
    strict: bool = False  # this setup's configuration turns warnings into failures
    error: str | None = None  # set when the setup itself could not be loaded / run

    def counts(self) -> dict[str, int]:
        c = {s.value: 0 for s in Status}
        for r in self.results:
            c[r.status.value] += 1
        return c

    def is_ok(self, strict: bool = False) -> bool:
        bad = {Status.FAIL, Status.ERROR} | ({Status.WARN} if strict or self.strict else set())
        return self.error is None and not any(r.status in bad for r in self.results)

    @property
    def ok(self) -> bool:
        return self.is_ok()

    @property
    def step_equivalents(self) -> float | None:
        """The battery's cost: the training-step equivalents it ran (None when the setup never got to run)."""
        return self.steps if self.steps or self.step_time_s else None

    @property
    def wall_step_equivalents(self) -> float | None:
        """The battery's wall time in step times: the counted steps plus nncheck's own overhead (model copies,
        hooks, Python), which dominates for models whose step takes a millisecond."""
        if not self.step_time_s:
            return None
        return self.duration_s / self.step_time_s

    def result(self, probe_id: str) -> Result:
        for r in self.results:
            if r.id == probe_id:
                return r
        raise KeyError(probe_id)

    def to_dict(self, with_series: bool = True, strict: bool = False) -> dict[str, Any]:
        se, wall = self.step_equivalents, self.wall_step_equivalents
        d: dict[str, Any] = {
            "path": self.path,
            "ok": self.is_ok(strict),
            "duration_s": round(self.duration_s, 4),
            "step_time_s": _round(self.step_time_s, 6),
            "step_time_start_s": _round(self.step_time_start_s, 6),
            "step_time_end_s": _round(self.step_time_end_s, 6),
            "step_equivalents": _round(se, 1),
            "wall_step_equivalents": _round(wall, 1),
            "seed": self.seed,
            "device": self.device,
            "budget": self.budget,
            "results": [r.to_dict(with_series) for r in self.results],
        }
        if self.error is not None:
            d["error"] = self.error
        return d


@dataclass
class Report:
    """The outcome of a run over one or more setups."""

    setups: list[SetupReport] = field(default_factory=list)
    strict: bool = False

    @property
    def ok(self) -> bool:
        return all(s.is_ok(self.strict) for s in self.setups)

    @property
    def results(self) -> list[Result]:
        return [r for s in self.setups for r in s.results]

    def result(self, probe_id: str) -> Result:
        """The result of ``probe_id`` (in the first setup that ran it)."""
        for s in self.setups:
            for r in s.results:
                if r.id == probe_id:
                    return r
        raise KeyError(probe_id)

    def __getitem__(self, probe_id: str) -> Result:
        return self.result(probe_id)

    def exit_code(self) -> int:
        if any(s.error is not None for s in self.setups):
            return 2
        return 0 if self.ok else 1

    def to_dict(self, with_series: bool = True) -> dict[str, Any]:
        return {
            "nncheck_version": __version__,
            "schema": SCHEMA_VERSION,
            "setups": [s.to_dict(with_series, self.strict) for s in self.setups],
        }
