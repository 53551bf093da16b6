"""The probe author's toolkit: collect findings into one Result, build plots, and the names a probe needs.

A probe module reads best as measure -> judge -> word::

    from nncheck.kit import Context, Findings, Result, line_plot, param, probe

    @dataclass(frozen=True)
    class Params:
        fail_ratio: float = param(2.0, source="...")

    def measure(ctx: Context, p: Params) -> Measurement: ...          # numbers only, in a small dataclass
    def judge(m: Measurement, p: Params) -> Findings: ...            # thresholds, in one place

    @probe("my-probe", title="...", params=Params)
    def my_probe(ctx: Context, p: Params) -> Result:
        '''What it does / Why is this bad? / Thresholds ({fail_ratio}) / How to fix / Example.'''
        return judge(measure(ctx, p), p).result("all good")

``Findings`` turns any number of fails and warnings into one Result with the worst status; the plot helpers build
the ``series`` entries that the renderers draw (see ``nncheck.report.Result``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nncheck.context import Context, ProbeSkip
from nncheck.modelgraph import code_path, forward_hooks, leaf_modules
from nncheck.registry import NoParams, param, probe
from nncheck.report import Result, Status

__all__ = [
    "Context",
    "Findings",
    "NoParams",
    "ProbeSkip",
    "Result",
    "Status",
    "bar_plot",
    "code_path",
    "forward_hooks",
    "image_grid",
    "leaf_modules",
    "line_plot",
    "param",
    "probe",
]


@dataclass
class Finding:
    status: Status
    message: str
    hint: str = ""


@dataclass
class Findings:
    """What a probe found, collected as it goes; ``result()`` makes one Result of it.

    ``fail`` / ``warn`` add a finding (a one-line message and how to fix it); ``note`` adds a line worth showing even
    when the probe passes; ``measured`` / ``expected`` / ``series`` are the Result's. The Result's status is the
    worst finding's (fail > warn > pass); its message lists the failures, then the warnings, joined by "; "; its hint
    joins their hints in the same order (each once).
    """

    measured: dict[str, Any] = field(default_factory=dict)
    expected: dict[str, Any] = field(default_factory=dict)
    series: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    items: list[Finding] = field(default_factory=list)

    def fail(self, message: str, hint: str = "") -> None:
        self.items.append(Finding(Status.FAIL, message, hint))

    def warn(self, message: str, hint: str = "") -> None:
        self.items.append(Finding(Status.WARN, message, hint))

    def add(self, status: Status | str, message: str, hint: str = "") -> None:
        status = Status(status)
        if status not in (Status.FAIL, Status.WARN):
            raise ValueError(f"a finding is a fail or a warning, not {status.value}")
        self.items.append(Finding(status, message, hint))

    def note(self, text: str) -> None:
        self.notes.append(text)

    @property
    def status(self) -> Status:
        statuses = {f.status for f in self.items}
        return Status.FAIL if Status.FAIL in statuses else Status.WARN if statuses else Status.PASS

    def ordered(self) -> list[Finding]:
        """The failures, then the warnings (each group in the order found)."""
        return [f for f in self.items if f.status is Status.FAIL] + [f for f in self.items if f.status is Status.WARN]

    def result(self, passed: str) -> Result:
        """One Result: ``passed`` as the message when nothing was found, else the findings (worst status)."""
        found = self.ordered()
        kw: dict[str, Any] = {
            "measured": self.measured,
            "expected": self.expected,
            "series": self.series,
            "notes": self.notes,
        }
        if not found:
            return Result(Status.PASS, passed, **kw)
        hints = [f.hint for f in found if f.hint]
        return Result(
            self.status,
            "; ".join(f.message for f in found),
            hint=" ".join(dict.fromkeys(hints)),
            **kw,
        )


Curve = Sequence[float | None] | tuple[Sequence[Any], Sequence[float | None]]


def _curve(c: Curve) -> dict[str, list[Any]]:
    if isinstance(c, tuple) and len(c) == 2 and isinstance(c[0], (list, tuple)):
        xs, ys = c
        return {"x": list(xs), "y": list(ys)}
    ys = list(c)  # type: ignore[arg-type]
    return {"x": list(range(len(ys))), "y": ys}


def _auto_scale(curves: dict[str, dict[str, list[Any]]]) -> str:
    values = [v for c in curves.values() for v in c["y"] if isinstance(v, (int, float)) and math.isfinite(v)]
    return "log" if values and min(values) > 0 else "linear"


def line_plot(
    title: str,
    curves: dict[str, Curve],
    *,
    xlabel: str = "step",
    ylabel: str = "loss",
    xscale: str = "linear",
    yscale: str = "linear",
    marks: dict[str, float | None] | None = None,
    refs: dict[str, float | None] | None = None,
) -> dict[str, Any]:
    """A line plot for ``Result.series``. A curve is a list of y values (x = 0, 1, ...) or an ``(xs, ys)`` pair.
    ``yscale="auto"`` picks log when every finite value is positive. ``marks`` are vertical lines at x values,
    ``refs`` horizontal reference lines at y values (a goal, a rule of thumb); ``None`` entries are dropped."""
    built = {name: _curve(c) for name, c in curves.items()}
    plot: dict[str, Any] = {
        "title": title,
        "xlabel": xlabel,
        "ylabel": ylabel,
        "xscale": xscale,
        "yscale": _auto_scale(built) if yscale == "auto" else yscale,
        "kind": "line",
        "curves": built,
    }
    if marks:
        plot["marks"] = {k: v for k, v in marks.items() if v is not None}
    if refs:
        plot["refs"] = {k: v for k, v in refs.items() if v is not None}
    return plot


def bar_plot(
    title: str,
    labels: Iterable[str],
    values: dict[str, Sequence[float | None]],
    *,
    xlabel: str,
    ylabel: str,
    yscale: str = "linear",
    refs: dict[str, float | None] | None = None,
) -> dict[str, Any]:
    """A bar plot for ``Result.series``: one bar per label for each named series of ``values``."""
    xs = list(labels)
    plot: dict[str, Any] = {
        "title": title,
        "xlabel": xlabel,
        "ylabel": ylabel,
        "xscale": "linear",
        "yscale": yscale,
        "kind": "bar",
        "curves": {name: {"x": xs, "y": list(v)} for name, v in values.items()},
    }
    if refs:
        plot["refs"] = {k: v for k, v in refs.items() if v is not None}
    return plot


# Filters shown per panel of an image grid at most (cs231n shows the 96 of AlexNet's first layer; 64 keep the JSON
# report small: 64 x 3 x 11 x 11 values).
MAX_IMAGES = 64


def image_grid(title: str, panels: dict[str, Any], *, caption: str = "") -> dict[str, Any]:
    """An image grid for ``Result.series`` (``"kind": "images"``): for each named panel, a tensor of images
    (N, C, H, W) with C = 1 (grey) or 3 (RGB), each image min-max scaled to [0, 1] on its own (cs231n's way of
    showing first-layer filters), at most MAX_IMAGES per panel, as nested lists (N, H, W) or (N, H, W, 3)."""
    built: dict[str, Any] = {}
    for name, t in panels.items():
        x = t.detach().float().cpu()[:MAX_IMAGES]
        lo = x.amin(dim=(1, 2, 3), keepdim=True)
        span = (x.amax(dim=(1, 2, 3), keepdim=True) - lo).clamp_min(1e-12)
        x = ((x - lo) / span).nan_to_num(0.5)
        x = x[:, 0] if x.shape[1] == 1 else x.permute(0, 2, 3, 1)
        built[name] = {"images": (x * 1000).round().div(1000).tolist(), "count": int(t.shape[0])}
    return {"title": title, "kind": "images", "panels": built, "caption": caption}
