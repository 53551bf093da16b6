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


def plain(value: Any) -> Any:
    """Tensors and numpy values as Python numbers and lists (non-finite floats kept as floats): what crosses from
    the worker process to the CLI, which never imports torch. Other objects become their ``str``."""
    if value is None or isinstance(value, (bool, int, float, str, Enum)):
        return value
    if isinstance(value, dict):
        return {k if isinstance(k, (str, int, float, bool)) else str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [plain(v) for v in value]
    for method in ("tolist", "item"):
        fn = getattr(value, method, None)
        if fn is not None:
            try:
                return plain(fn())
            except Exception:  # pragma: no cover - exotic array types
                pass
    return str(value)


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
         "marks": {"your LR": 0.001, "suggested": 0.003},   # optional vertical lines at these x values
         "refs": {"goal": 0.08}}                            # optional horizontal reference lines at these y values

    An image grid (``kit.image_grid``: a conv layer's filters) is ``{"title": ..., "kind": "images", "caption": ...,
    "panels": {"at init": {"images": [...], "count": N}, ...}}``, each image (H, W) grey or (H, W, 3) RGB in [0, 1].
    For "bar" plots x may hold strings: module names (``net.2``) when the xlabel names a module or a layer, which the
    HTML report shows as code (``model.net[2]``). Renderers (HTML) draw every plot they find; a few spikes (a loss that
    diverges) do not set the axis: the HTML report clips them and marks the clipped points.
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

    def plain(self) -> Result:
        """This result with only plain Python values in measured / expected / series (see ``plain``)."""
        return self.replace(measured=plain(self.measured), expected=plain(self.expected), series=plain(self.series))

    def __repr__(self) -> str:
        msg = self.message if len(self.message) <= 100 else self.message[:97] + "..."
        return f"Result({self.status.value} {self.id or '?'}: {msg!r})"


def passed(message: str, **kw: Any) -> Result:
    return Result(Status.PASS, message, **kw)


def warned(message: str, **kw: Any) -> Result:
    return Result(Status.WARN, message, **kw)


def failed(message: str, **kw: Any) -> Result:
    return Result(Status.FAIL, message, **kw)


def skipped(message: str, **kw: Any) -> Result:
    return Result(Status.SKIP, message, **kw)


# The phases of a setup, as a stop message names them (SetupReport.stopped['phase']).
PHASES = {
    "load": "the import of the setup file",
    "preflight": "the preflight (first batches, first forward, step timing)",
    "probe": "a probe",
    "step timing": "the final step timing",
}


def stop_message(path: str, stopped: dict[str, Any], configured: bool) -> str:
    """The sentence of a stopped setup (``SetupReport.error``): where, after how long, the user's line, what to do."""
    phase = PHASES.get(stopped["phase"], stopped["phase"])
    if stopped.get("probe"):
        phase = f"probe `{stopped['probe']}`"
    where = f" at {stopped['where']}" if stopped.get("where") else ""
    how = stopped.get("how")
    if how == "died":
        return (
            f"{path}: its process died in {phase} after {stopped['after_s']:.1f} s ({stopped.get('exit', 'unknown')})"
            f"{where}: your code, or a library it calls, ended the process (a crash in C code, `os._exit`, the "
            "system's out-of-memory killer). Run the setup with plain Python to see the crash."
        )
    limit = f"{stopped['limit_s']:g} s" + ("" if configured else " by default")
    did = "blocked even nncheck's timeout (its process was killed)" if how == "killed" else "did not return"
    return (
        f"{path}: stopped after {stopped['after_s']:.1f} s in {phase} (limit {limit}): your code {did}{where}. "
        "Look there for a call that waits forever (a lock, an event or a queue nobody fills, a retry loop that "
        "catches every exception); if it is only slow, raise the limit with --time-budget SECONDS."
    )


def _round(x: float | None, digits: int) -> float | None:
    return None if x is None else round(x, digits)


@dataclass
class SetupReport:
    """All results for one setup (one file, or one ``nncheck.check(...)`` call)."""

    path: str
    results: list[Result] = field(default_factory=list)
    duration_s: float = 0.0
    step_time_s: float | None = None  # one training step: the smaller of the two measurements below
    step_time_start_s: float | None = None  # the fastest step of the first half of the steps timed (runner.py)
    step_time_end_s: float | None = None  # the fastest step of the second half
    steps: float = 0.0  # training-step equivalents run in all (preflight, probes, step timing)
    seed: int = 0
    device: str = "cpu"
    budget: str = "full"
    strict: bool = False  # this setup's configuration turns warnings into failures
    error: str | None = None  # set when the setup itself could not be loaded / run (a sentence)
    # set when the setup was stopped before its end (a hung phase, a process that died): phase, probe, after_s,
    # limit_s, how ("timeout": nncheck's deadline stopped it, "killed": its worker process was killed, "died": the
    # process ended by itself), where (the user's line it was running, when known). ``error`` says it in words.
    stopped: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)  # facts about the run worth showing (a step timing that failed)

    def counts(self) -> dict[str, int]:
        c = {s.value: 0 for s in Status}
        for r in self.results:
            c[r.status.value] += 1
        return c

    def is_ok(self, strict: bool = False) -> bool:
        bad = {Status.FAIL, Status.ERROR} | ({Status.WARN} if strict or self.strict else set())
        return self.error is None and self.stopped is None and not any(r.status in bad for r in self.results)

    def exit_code(self, strict: bool = False) -> int:
        """3 stopped (a hung phase, a process that died), 2 not loadable / unusable, 1 a probe failed or errored (or
        warned under strict), 0 otherwise (README, "Exit codes")."""
        if self.stopped is not None:
            return 3
        if self.error is not None:
            return 2
        return 0 if self.is_ok(strict) else 1

    def plain(self) -> SetupReport:
        """This report with plain values only (``Result.plain``): what the worker process sends to the CLI."""
        return dataclasses.replace(self, results=[r.plain() for r in self.results], stopped=plain(self.stopped))

    def summary(self, strict: bool = False) -> str:
        """``examples/mlp.py: NOT OK: 12 pass, 1 fail in 1.2 s``."""
        c = self.counts()
        parts = ", ".join(f"{c[k]} {k}" for k in ("pass", "warn", "fail", "error", "skip") if c[k])
        verdict = "OK" if self.is_ok(strict) else "NOT OK"
        if self.error:
            verdict = "STOPPED" if self.stopped else "SETUP ERROR"
        return f"{self.path}: {verdict}" + (f": {parts}" if parts else "") + f" in {self.duration_s:.1f} s"

    def text(self, strict: bool = False) -> str:
        """A short plain-text account: the summary line, then every result that is not a pass or a skip with its
        message and fix, the setup error and the notes (``str(report)``)."""
        lines = [self.summary(strict)]
        if self.error:
            lines.append(f"  {'STOPPED' if self.stopped else 'SETUP ERROR'}: {self.error}")
        shown = {Status.FAIL, Status.ERROR, Status.WARN}
        for r in self.results:
            if r.status in shown:
                lines.append(f"  {r.status.value.upper():<5} {r.id}: {r.message}")
                if r.hint:
                    lines.append(f"        fix: {r.hint}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.text()

    def __repr__(self) -> str:
        bad = [f"{r.status.value} {r.id}" for r in self.results if r.status in (Status.FAIL, Status.ERROR, Status.WARN)]
        state = "stopped" if self.stopped else "setup error" if self.error else "ok" if self.is_ok() else "not ok"
        return f"SetupReport({self.path!r}: {state}" + (f"; {', '.join(bad)}" if bad else "") + ")"

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
            "notes": list(self.notes),
        }
        if self.error is not None:
            d["error"] = self.error
        if self.stopped is not None:
            d["stopped"] = jsonable(self.stopped)
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
        """The largest of the setups' exit codes: 3 a setup was stopped, 2 a setup could not be loaded, 1 a probe
        failed or errored (or warned under strict), 0 otherwise."""
        return max((s.exit_code(self.strict) for s in self.setups), default=0)

    def __str__(self) -> str:
        """A readable account (``assert report.ok, report`` shows it): a verdict line, then per setup its summary and
        every fail / error / warn with its fix."""
        n = len(self.setups)
        head = f"nncheck: {'OK' if self.ok else 'NOT OK'} ({n} setup{'' if n == 1 else 's'})"
        return "\n".join([head, *(s.text(self.strict) for s in self.setups)])

    def __repr__(self) -> str:
        """One line (pytest shows the repr of an assertion message, cut at 240 characters): the verdict first."""
        inner = "; ".join(repr(s)[len("SetupReport(") : -1] for s in self.setups)
        return f"Report({'OK' if self.ok else 'NOT OK'}: {inner})"

    def to_dict(self, with_series: bool = True) -> dict[str, Any]:
        return {
            "nncheck_version": __version__,
            "schema": SCHEMA_VERSION,
            "setups": [s.to_dict(with_series, self.strict) for s in self.setups],
        }
