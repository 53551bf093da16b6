"""The command line: ``nncheck run FILE...``, ``nncheck list``, ``nncheck explain ID``.

Exit codes (README, "Use it as a CI gate"): 0 no fail / error (warnings allowed unless --strict), 1 a probe failed
or errored, 2 a setup could not be loaded or the command line / configuration is wrong.
torch is imported only by the commands that need it, so ``nncheck --help`` is instant.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from nncheck.registry import NO_FAST, Probe
from nncheck.render import FORMATS


class _Progress:
    """A rich progress line on stderr when it is a terminal; silent otherwise (CI logs stay clean)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.progress: Any = None
        self.task: Any = None

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if not self.enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        if event == "setup_start":
            self.progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task(f"{info['path']}: loading", total=None)
        elif event == "setup_ready" and self.progress:
            self.progress.update(self.task, total=len(info["probes"]))
        elif event == "probe_start" and self.progress:
            self.progress.update(self.task, description=f"{info['path']}: {info['id']}")
        elif event == "probe_end" and self.progress:
            self.progress.advance(self.task)
        elif event == "setup_end" and self.progress:
            self.progress.stop()
            self.progress = None


_EXTENSIONS = {".json": "json", ".xml": "junit", ".html": "html", ".htm": "html", ".txt": "text"}


def _format_of(path: str) -> str:
    """The format for ``-o PATH`` given without ``--format``, from the file extension."""
    if path == "-":
        return "text"
    ext = os.path.splitext(path)[1].lower()
    if ext not in _EXTENSIONS:
        raise click.UsageError(
            f"cannot tell the format of `{path}` from its extension; add --format (one of {', '.join(FORMATS)})."
        )
    return _EXTENSIONS[ext]


def _split_ids(values: tuple[str, ...]) -> list[str]:
    """`--only a,b --only c` -> [a, b, c]."""
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="nncheck")
def main() -> None:
    """nncheck: catch broken PyTorch training setups in seconds.

    A setup file is a Python file defining `model` and `data` (and optionally `loss`, `optimizer`,
    `forward`, `causal`). `nncheck run FILE` runs the probe battery on it.
    """


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=True, path_type=str))
@click.option("--only", multiple=True, metavar="ID", help="Run only this probe (repeatable, or comma-separated).")
@click.option("--skip", multiple=True, metavar="ID", help="Do not run this probe (repeatable, or comma-separated).")
@click.option(
    "-f",
    "--format",
    "formats",
    multiple=True,
    type=click.Choice(FORMATS),
    help="Output format (repeatable; pairs with -o in order). Default: text.",
)
@click.option(
    "-o",
    "--output",
    "outputs",
    multiple=True,
    metavar="PATH",
    help="Write the matching --format here ('-' = stdout). Repeatable.",
)
@click.option("--seed", type=int, default=None, help="Seed for every probe (default 0).")
@click.option("--device", default=None, help="Device for model and batches: cpu, cuda, cuda:1, mps ...")
@click.option("--strict", is_flag=True, default=None, help="Treat warnings as failures.")
@click.option(
    "--budget",
    type=click.Choice(["full", "fast"]),
    default=None,
    help="fast: fewer steps for pre-merge gates (same verdicts, a third of the cost).",
)
@click.option(
    "--time-budget",
    "time_budget_s",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Wall-clock backstop of one probe (default: 5000 training steps of the setup, at least 60 s); a probe "
    "stopped by it is skipped as inconclusive.",
)
@click.option(
    "--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads during the run (default: auto)."
)
@click.option("-v", "--verbose", is_flag=True, help="Show numbers and notes for passing probes too.")
@click.option("--color/--no-color", default=None, help="Force colour on or off (default: on a terminal).")
def run(
    files: tuple[str, ...],
    only: tuple[str, ...],
    skip: tuple[str, ...],
    formats: tuple[str, ...],
    outputs: tuple[str, ...],
    seed: int | None,
    device: str | None,
    strict: bool | None,
    budget: str | None,
    time_budget_s: float | None,
    threads: int | None,
    verbose: bool,
    color: bool | None,
) -> None:
    """Run the probe battery on one or more setup files."""
    if not formats and len(outputs) == 1:  # `-o report.json`: the extension names the format
        formats = (_format_of(outputs[0]),)
    if len(outputs) > max(len(formats), 1):
        raise click.UsageError("more --output paths than --format values; give one --format per --output.")
    fmts = list(formats) or ["text"]
    outs = list(outputs) + ["-"] * (len(fmts) - len(outputs))
    if sum(o == "-" for o in outs) > 1:
        raise click.UsageError("only one format can go to stdout; give the others an --output PATH.")

    from nncheck.config import ConfigError, given, load_config, validate
    from nncheck.files import setup_files_in
    from nncheck.report import Report, SetupReport
    from nncheck.runner import run_setup
    from nncheck.setup import SetupError, load_setup

    overrides = dict(
        only=_split_ids(only),
        skip=_split_ids(skip),
        seed=seed,
        device=device,
        strict=strict,
        budget=budget,
        time_budget_s=time_budget_s,
        threads=threads,
    )
    try:  # a wrong probe id on the command line is a usage error (exit 2), named before anything runs
        validate(given(overrides), "command line")
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    progress = _Progress(sys.stderr.isatty() and not os.environ.get("CI"))
    report = Report()
    expanded: list[str] = []
    for path in files:
        if os.path.isdir(path):
            found = setup_files_in(path)
            if not found:
                raise click.UsageError(f"{path}: no setup file in this folder (a .py file defining `model`).")
            expanded += found
        else:
            expanded.append(path)
    for path in expanded:
        try:
            cfg = load_config(path)
            setup = load_setup(path)
            sr = run_setup(setup, cfg, overrides, listener=progress)
        except (SetupError, ConfigError) as e:
            sr = SetupReport(path=path, error=str(e))
        report.setups.append(sr)

    for fmt, out in zip(fmts, outs):
        use_color = color if color is not None else (out == "-" and sys.stdout.isatty())
        from nncheck.render import render

        try:
            text = render(report, fmt, color=use_color, verbose=verbose)
        except ImportError as e:
            raise click.UsageError(str(e)) from None
        if out == "-":
            click.echo(text, nl=False)
        else:
            with open(out, "w", encoding="utf-8") as f:
                f.write(text)
    sys.exit(report.exit_code())


@main.command("list")
def list_() -> None:
    """List every probe id with a one-line description."""
    from nncheck.registry import registry

    probes = registry()
    width = max(len(p) for p in probes)
    for pid, p in probes.items():
        extra = "" if p.default else "  (not in the default battery)"
        click.echo(f"{pid:<{width}}  {p.summary}{extra}")


def explain_text(p: Probe) -> str:
    """What `nncheck explain ID` prints: the probe's docstring, then each parameter with its default, its value under
    --budget fast and the source of the value."""
    import textwrap

    lines = [f"{p.id}: {p.title}", "", p.doc]
    info = p.param_info
    if info:
        lines += ["", f"Parameters ([tool.nncheck.probes.{p.id}]):"]
        for i in info:
            fast = f"   (--budget fast: {i.fast!r})" if i.fast is not NO_FAST else ""
            lines.append(f"  {i.name} = {i.default!r}{fast}")
            lines += textwrap.wrap(i.source, 112, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(lines)


def explain_markdown(probes: dict[str, Probe]) -> str:
    """docs/probes.md: every probe's explanation, one section each (the README's probe table links here)."""
    out = [
        "# nncheck probes",
        "",
        "Generated from the probes' docstrings by `nncheck explain --all --markdown`; do not edit by hand.",
        "",
    ]
    out += [f"- [`{pid}`](#{pid}): {p.summary}" for pid, p in probes.items()]
    for pid, p in probes.items():
        out += ["", f"## {pid}", "", f"**{p.title}**", "", "```text", explain_text(p), "```"]
    return "\n".join(out) + "\n"


@main.command()
@click.argument("probe_id", required=False)
@click.option("--all", "all_", is_flag=True, help="Explain every probe.")
@click.option("--markdown", is_flag=True, help="With --all: Markdown (the source of docs/probes.md).")
def explain(probe_id: str | None, all_: bool, markdown: bool) -> None:
    """Explain a probe: what it checks, why, thresholds and their source, how to fix it."""
    from nncheck.config import nearest
    from nncheck.registry import registry

    probes = registry()
    if all_:
        if markdown:
            click.echo(explain_markdown(probes), nl=False)
        else:
            click.echo("\n\n".join(explain_text(p) for p in probes.values()))
        return
    if probe_id is None:
        raise click.UsageError(f"give a probe id (or --all). Valid ids: {', '.join(probes)}.")
    if probe_id not in probes:
        raise click.UsageError(
            f"unknown probe id `{probe_id}`.{nearest(probe_id, tuple(probes))} Valid ids: {', '.join(probes)}."
        )
    click.echo(explain_text(probes[probe_id]))


if __name__ == "__main__":  # pragma: no cover
    main()
