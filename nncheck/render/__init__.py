"""Renderers turn a Report into text for people or machines. They know nothing of probes.

Each format is a module here with ``render(report: Report, **options) -> str``. Options a renderer does not
use are ignored (``color``, ``width`` for the terminal, ``verbose``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nncheck.report import Report, Result

FORMATS = ("text", "json", "junit", "github", "html")


def render(report: Report, fmt: str, **options: Any) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    module = importlib.import_module(f"nncheck.render.{fmt}_format")
    return module.render(report, **options)


def fmt_value(v: Any) -> str:
    """Compact human form of a measured / expected value."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        if v == 0:
            return "0"
        a = abs(v)
        if a >= 1e4 or a < 1e-3:
            return f"{v:.2e}"
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        inner = ", ".join(fmt_value(x) for x in list(v)[:6])
        return f"[{inner}{', ...' if len(v) > 6 else ''}]"
    if isinstance(v, dict):
        items = list(v.items())
        inner = ", ".join(f"{k}={fmt_value(x)}" for k, x in items[:4])
        return "{" + inner + (", ..." if len(items) > 4 else "") + "}"
    return str(v)


def fmt_numbers(d: dict[str, Any], limit: int = 5) -> str:
    """``a=1.2, b=3`` for the scalar entries of a measured / expected dict."""
    parts = [f"{k}={fmt_value(v)}" for k, v in d.items() if not isinstance(v, (dict, list, tuple)) and v is not None]
    more = ", ..." if len(parts) > limit else ""
    return ", ".join(parts[:limit]) + more


def result_lines(r: Result, limit: int = 8, notes: bool = True) -> list[str]:
    """A result as plain lines: message, measured, expected, fix (and notes). Shared by the JUnit, GitHub and
    pytest outputs."""
    lines = [r.message]
    if r.measured:
        lines.append(f"measured: {fmt_numbers(r.measured, limit=limit)}")
    if r.expected:
        lines.append(f"expected: {fmt_numbers(r.expected, limit=limit)}")
    if r.hint:
        lines.append(f"fix: {r.hint}")
    if notes:
        lines.extend(f"note: {n}" for n in r.notes)
    return lines
