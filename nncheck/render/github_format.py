"""GitHub Actions output: workflow-command annotations on stdout and a Markdown job summary.

Each fail / error becomes ``::error file=<setup>,line=<line of model>,title=nncheck <probe-id>::<text>`` and each
warn ``::warning ...`` (an ``::error`` under strict), so the verdict shows on the pull request's "Files changed"
tab next to the setup file. The per-probe lines of every setup sit in a collapsed ``::group::``.
When ``$GITHUB_STEP_SUMMARY`` is set (always, inside a GitHub job) a Markdown table is appended to that file
(option ``step_summary``: a path to use instead, or ``False`` for none).

Escaping follows GitHub's toolkit (``@actions/core`` ``command.ts``): in the message ``%``, ``\\r`` and ``\\n`` become
``%25``, ``%0D`` and ``%0A``; in properties ``:`` and ``,`` also become ``%3A`` and ``%2C``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from nncheck.files import model_line
from nncheck.render import result_lines

if TYPE_CHECKING:
    from nncheck.report import Report, Result, SetupReport

ICON = {"pass": "✅ pass", "warn": "⚠️ warn", "fail": "❌ fail", "error": "💥 error", "skip": "⏭️ skip"}


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def command(name: str, message: str, **properties: Any) -> str:
    """One workflow command line: ``::name key=value,key=value::message``."""
    props = ",".join(f"{k}={escape_property(str(v))}" for k, v in properties.items() if v is not None)
    return f"::{name}{' ' + props if props else ''}::{escape_data(message)}"


def annotation_text(r: Result) -> str:
    return "\n".join(result_lines(r, notes=False))


def _setup_lines(s: SetupReport, strict: bool) -> list[str]:
    out = [command("group", f"nncheck {s.path}")]
    if s.error is not None:
        out.append(f"{'STOPPED' if s.stopped else 'SETUP ERROR'} {s.error}")
    for r in s.results:
        out.append(f"{r.status.value.upper():<5}  {r.id}  {r.message}")
    out.extend(f"note: {n}" for n in s.notes)
    out.append(command("endgroup", ""))
    line = model_line(s.path)
    if s.error is not None:
        title = "nncheck setup stopped" if s.stopped else "nncheck setup error"
        out.append(command("error", s.error, file=s.path, line=line, title=title))
    for r in s.results:
        status = r.status.value
        if status in ("fail", "error") or (status == "warn" and strict):
            suffix = "" if status == "fail" else f" ({status})"
            out.append(command("error", annotation_text(r), file=s.path, line=line, title=f"nncheck {r.id}{suffix}"))
        elif status == "warn":
            out.append(command("warning", annotation_text(r), file=s.path, line=line, title=f"nncheck {r.id}"))
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def summary_markdown(report: Report) -> str:
    """The job summary: a verdict line and one table row per probe (fix shown for warn / fail / error)."""
    ok = report.ok
    lines = [f"## nncheck: {'✅ OK' if ok else '❌ NOT OK'}", ""]
    for s in report.setups:
        c = s.counts()
        parts = ", ".join(f"{c[k]} {k}" for k in ("pass", "warn", "fail", "error", "skip") if c[k])
        se = s.step_equivalents
        cost = f"{s.duration_s:.1f} s" + (f", {se:.0f} training steps run" if se is not None else "")
        lines.append(f"### `{s.path}` ({parts or 'no probes'}; {cost}; seed {s.seed}, budget {s.budget})")
        lines.append("")
        if s.error is not None:
            lines.append(f"**{'Stopped' if s.stopped else 'Setup error'}:** {_cell(s.error)}")
            lines.append("")
            if not s.results:
                continue
        lines.append("| Probe | Status | Result | Fix |")
        lines.append("|---|---|---|---|")
        for r in s.results:
            status = r.status.value
            fix = r.hint if status in ("warn", "fail", "error") else ""
            lines.append(f"| `{r.id}` | {ICON[status]} | {_cell(r.message)} | {_cell(fix)} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def render(report: Report, **options: Any) -> str:
    target = options.get("step_summary")
    if target is None:
        target = os.environ.get("GITHUB_STEP_SUMMARY") or None
    if target:
        with open(target, "a", encoding="utf-8") as f:
            f.write(summary_markdown(report))
    lines: list[str] = []
    for s in report.setups:
        lines.extend(_setup_lines(s, report.strict or s.strict))
    return "\n".join(lines) + "\n"
