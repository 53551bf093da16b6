"""The terminal report (rich): one line per probe, the hint under every warn / fail, a summary line."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from nncheck.render import fmt_numbers

if TYPE_CHECKING:
    from nncheck.report import Report, SetupReport

STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red", "skip": "dim", "error": "bold magenta"}
LABEL = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "skip": "SKIP", "error": "ERROR"}


def _setup(console: Console, s: SetupReport, verbose: bool, strict: bool) -> None:
    console.print(Text(s.path, style="bold"), Text(f"  (seed {s.seed}, {s.device}, budget {s.budget})", style="dim"))
    if s.error is not None:
        console.print(Text("  SETUP ERROR ", style="bold white on red"), Text(s.error))
        return
    width = max((len(r.id) for r in s.results), default=10)
    for r in s.results:
        st = r.status.value
        line = Text("  ")
        line.append(f"{LABEL[st]:<5}", style=STYLE[st])
        line.append(f"  {r.id:<{width}}  ", style="bold" if st in ("fail", "error") else "")
        line.append(r.message)
        nums = fmt_numbers(r.measured)
        exp = fmt_numbers(r.expected)
        if nums and (st != "pass" or verbose):
            line.append(f"\n{' ' * (width + 11)}measured: {nums}", style="dim")
            if exp:
                line.append(f"\n{' ' * (width + 11)}expected: {exp}", style="dim")
        console.print(line)
        if r.hint and st in ("warn", "fail", "error"):
            console.print(Text(f"{' ' * (width + 11)}fix: ", style="cyan") + Text(r.hint), soft_wrap=False)
        if verbose or st != "pass":
            for note in r.notes:
                console.print(Text(f"{' ' * (width + 11)}note: ", style="dim") + Text(note, style="dim"))
    c = s.counts()
    parts = [f"{c[k]} {k}" for k in ("pass", "warn", "fail", "error", "skip") if c[k]]
    se = s.step_equivalents
    cost = f"{s.duration_s:.1f} s"
    if se is not None and s.step_time_s:
        cost += f" = {se:.0f} training steps (one step {s.step_time_s * 1000:.1f} ms)"
    ok = s.is_ok(strict)
    verdict = Text(" OK " if ok else " NOT OK ", style="bold white on green" if ok else "bold white on red")
    console.print(Text("  "), verdict, Text(f" {', '.join(parts)} in {cost}"))


def render(report: Report, **options: Any) -> str:
    buf = io.StringIO()
    console = Console(
        file=buf,
        force_terminal=bool(options.get("color", False)),
        no_color=not options.get("color", False),
        width=int(options.get("width") or 100),
        highlight=False,
        soft_wrap=True,
    )
    for i, s in enumerate(report.setups):
        if i:
            console.print()
        _setup(console, s, bool(options.get("verbose", False)), report.strict or s.strict)
    if len(report.setups) > 1:
        bad = sum(not s.is_ok(report.strict) for s in report.setups)
        console.print()
        console.print(escape(f"{len(report.setups)} setups, {bad} not ok"))
    return buf.getvalue()
