"""The terminal report (rich): one line per probe, the hint under every warn / fail, a summary line."""

from __future__ import annotations

import io
import shutil
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from nncheck.render import fmt_numbers

if TYPE_CHECKING:
    from nncheck.report import Report, Result, SetupReport

STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red", "skip": "dim", "error": "bold magenta"}
LABEL = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "skip": "SKIP", "error": "ERROR"}


def _body(r: Result, verbose: bool) -> Text:
    """Message, then (for warn / fail / error, or verbose) numbers, fix and notes: one wrapped column."""
    st = r.status.value
    body = Text(r.message)
    loud = st not in ("pass", "skip") or verbose  # a skip's message says why; its numbers are in -v and the JSON
    nums, exp = fmt_numbers(r.measured), fmt_numbers(r.expected)
    if nums and loud:
        body.append(f"\nmeasured: {nums}", style="dim")
        if exp:
            body.append(f"\nexpected: {exp}", style="dim")
    if r.hint and st in ("warn", "fail", "error"):
        body.append("\nfix: ", style="cyan")
        body.append(r.hint)
    if loud:
        for note in r.notes:
            body.append(f"\nnote: {note}", style="dim")
    return body


def _setup(console: Console, s: SetupReport, verbose: bool, strict: bool) -> None:
    console.print(Text(s.path, style="bold"), Text(f"  (seed {s.seed}, {s.device}, budget {s.budget})", style="dim"))
    if s.results:
        grid = Table.grid(padding=(0, 2))
        grid.add_column(no_wrap=True)
        grid.add_column(no_wrap=True)
        grid.add_column(overflow="fold")
        for r in s.results:
            st = r.status.value
            grid.add_row(
                Text(LABEL[st], style=STYLE[st]),
                Text(r.id, style="bold" if st in ("fail", "error") else ""),
                _body(r, verbose),
            )
        console.print(Padding(grid, (0, 0, 0, 2)))
    if s.error is not None:
        grid = Table.grid(padding=(0, 1))
        grid.add_column(no_wrap=True)
        grid.add_column(overflow="fold")
        label = " STOPPED " if s.stopped else " SETUP ERROR "
        grid.add_row(Text(label, style="bold white on red"), Text(s.error))
        console.print(Padding(grid, (0, 0, 0, 2)))
    for note in s.notes:
        console.print(Padding(Text(f"note: {note}", style="dim"), (0, 0, 0, 2)))
    if s.error is not None and not s.results:
        return
    c = s.counts()
    parts = [f"{c[k]} {k}" for k in ("pass", "warn", "fail", "error", "skip") if c[k]]
    cost = f"{s.duration_s:.1f} s"
    if s.step_equivalents is not None and s.step_time_s:
        cost += f": {s.step_equivalents:.0f} training steps run (one step {s.step_time_s * 1000:.1f} ms)"
    ok = s.is_ok(strict)
    word = " STOPPED " if s.stopped else " OK " if ok else " NOT OK "
    verdict = Text(word, style="bold white on green" if ok else "bold white on red")
    console.print(Text("  "), verdict, Text(f" {', '.join(parts)} in {cost}"))


def render(report: Report, **options: Any) -> str:
    buf = io.StringIO()
    console = Console(
        file=buf,
        force_terminal=bool(options.get("color", False)),
        no_color=not options.get("color", False),
        width=int(
            options.get("width") or (shutil.get_terminal_size((120, 40)).columns if options.get("color") else 120)
        ),
        highlight=False,
    )
    for i, s in enumerate(report.setups):
        if i:
            console.print()
        _setup(console, s, bool(options.get("verbose", False)), report.strict or s.strict)
    if len(report.setups) > 1:
        bad = sum(not s.is_ok(report.strict) for s in report.setups)
        console.print()
        console.print(escape(f"{len(report.setups)} setups, {bad} not ok"))
    return "\n".join(line.rstrip() for line in buf.getvalue().split("\n"))
