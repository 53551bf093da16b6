"""The command line: ``nncheck run FILE...``, ``nncheck list``, ``nncheck explain ID``.

Exit codes (README, "Exit codes"): 0 no fail / error (warnings allowed unless --strict), 1 a probe failed or
errored, 2 a setup could not be loaded or the command line / configuration / an output path is wrong, 3 a setup was
stopped (a phase past its time limit, a worker process that died), 130 interrupted; the largest applies.
This process never imports torch nor runs the user's code: each setup runs in a worker process
(``nncheck.worker``) that it can kill; ``list`` and ``explain`` read the probe catalogue (``nncheck._catalog``).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from nncheck.registry import NO_FAST, Probe
from nncheck.render import FORMATS


class _Progress:
    """Progress on stderr: a rich progress line when stderr is a terminal (not in CI); otherwise one plain line per
    finished probe and per finished setup, so that a long run in CI shows it is alive; nothing under ``--quiet``."""

    def __init__(self, mode: str) -> None:
        self.mode = mode  # "bar", "lines" or "off"
        self.progress: Any = None
        self.task: Any = None

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if self.mode == "lines":
            self._line(event, info)
        elif self.mode == "bar":
            self._bar(event, info)

    def _line(self, event: str, info: dict[str, Any]) -> None:
        if event == "probe_end":
            r = info["result"]
            line = f"nncheck: {info['path']}: {r.status.value.upper():<5} {r.id} ({r.duration_s:.1f} s)"
        elif event == "setup_end":
            line = f"nncheck: {info['report'].summary()}"
        else:
            return
        click.echo(line, err=True)

    def _bar(self, event: str, info: dict[str, Any]) -> None:
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
        elif event == "phase" and self.progress:
            self.progress.update(self.task, description=f"{info['path']}: {info['phase']}")
        elif event == "setup_ready" and self.progress:
            self.progress.update(self.task, total=len(info["probes"]))
        elif event == "probe_start" and self.progress:
            self.progress.update(self.task, description=f"{info['path']}: {info['id']}")
        elif event == "probe_end" and self.progress:
            self.progress.advance(self.task)
        elif event == "setup_end" and self.progress:
            self.progress.stop()
            self.progress = None

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _progress_mode(quiet: bool) -> str:
    if quiet:
        return "off"
    return "bar" if sys.stderr.isatty() and not os.environ.get("CI") else "lines"


def use_color(flag: bool | None, out: str, stdout_is_tty: bool, env: dict[str, str] | os._Environ[str]) -> bool:
    """Colour for an output: --color / --no-color when given; else on a terminal, unless NO_COLOR is set to anything
    non-empty (https://no-color.org); files never."""
    if flag is not None:
        return flag
    return out == "-" and stdout_is_tty and not env.get("NO_COLOR")


def check_output_path(path: str) -> str | None:
    """Why ``path`` cannot take a report (checked before anything runs), or None."""
    if os.path.isdir(path):
        return f"--output {path}: is a folder; give a file path, e.g. {os.path.join(path, 'nncheck-report.json')}."
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return f"--output {path}: the folder {folder} does not exist; create it (`mkdir -p {folder}`) or pick another"
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        return f"--output {path}: cannot write there (permission denied); choose a writable path."
    return None


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
    help="fast: about a third of the steps, for pre-merge gates (README, Budgets and cost: what it leaves to full).",
)
@click.option(
    "--time-budget",
    "time_budget_s",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Wall-clock limit of the import, of the preflight and of each probe of a setup (default: 300 s for the "
    "import and the preflight, 5000 training steps of the setup and at least 60 s for a probe). A probe stopped by "
    "it is skipped as inconclusive; a setup stopped in its import or preflight exits 3.",
)
@click.option(
    "--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads during the run (default: auto)."
)
@click.option("-v", "--verbose", is_flag=True, help="Show numbers and notes for passing probes too.")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr (the report and its paths only).")
@click.option("--color/--no-color", default=None, help="Force colour on or off (default: on a terminal, not NO_COLOR).")
@click.option(
    "--in-process",
    is_flag=True,
    help="Run the setups in this process instead of a worker process per setup (for a debugger). A setup that "
    "blocks is then stopped only by the in-process deadline, which code that catches BaseException defeats.",
)
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
    quiet: bool,
    color: bool | None,
    in_process: bool,
) -> None:
    """Run the probe battery on one or more setup files (or folders of them).

    Exit codes: 0 no probe failed or errored, 1 a probe failed or errored (or warned under --strict), 2 a setup
    could not be loaded or the command line / configuration / an output path is wrong, 3 a setup was stopped (a
    phase ran past its time limit, or its process died), 130 interrupted. With several setups the largest applies.
    """
    try:
        _run(**locals())
    except KeyboardInterrupt:
        click.echo("nncheck: interrupted; no report written.", err=True)
        sys.exit(130)


def _run(
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
    quiet: bool,
    color: bool | None,
    in_process: bool,
) -> None:
    if not formats and len(outputs) == 1:  # `-o report.json`: the extension names the format
        formats = (_format_of(outputs[0]),)
    if len(outputs) > max(len(formats), 1):
        raise click.UsageError("more --output paths than --format values; give one --format per --output.")
    fmts = list(formats) or ["text"]
    outs = list(outputs) + ["-"] * (len(fmts) - len(outputs))
    if sum(o == "-" for o in outs) > 1:
        raise click.UsageError("only one format can go to stdout; give the others an --output PATH.")
    for out in outs:  # before anything runs: a report that cannot be written is a usage error, not a lost run
        problem = None if out == "-" else check_output_path(out)
        if problem:
            raise click.UsageError(problem)
    if "html" in fmts:
        from nncheck.render.html_format import INSTALL_HINT

        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise click.UsageError(INSTALL_HINT) from None

    from nncheck.config import ConfigError, given, load_config, validate
    from nncheck.files import setup_files_in
    from nncheck.report import Report, SetupReport

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
    expanded: list[str] = []
    for path in files:
        if os.path.isdir(path):
            found = setup_files_in(path)
            if not found:
                raise click.UsageError(f"{path}: no setup file in this folder (a .py file defining `model`).")
            expanded += found
        else:
            expanded.append(path)

    from nncheck import worker

    progress = _Progress(_progress_mode(quiet))
    report = Report()
    try:
        if not in_process:
            worker.start_server()  # torch is imported there while the configurations are read here
        for path in expanded:
            try:
                cfg = load_config(path)
            except ConfigError as e:
                sr = SetupReport(path=path, error=str(e))
                progress("setup_end", {"path": path, "report": sr})
            else:
                if in_process:
                    sr = _run_in_process(path, cfg, overrides, progress)
                else:
                    sr = worker.run_isolated(path, cfg, overrides, progress)
            report.setups.append(sr)
    finally:
        progress.close()

    from nncheck.render import render

    written = []
    code = report.exit_code()
    for fmt, out in zip(fmts, outs):
        color_on = use_color(color, out, sys.stdout.isatty(), os.environ)
        try:
            text = render(report, fmt, color=color_on, verbose=verbose)
        except ImportError as e:
            raise click.UsageError(str(e)) from None
        if out == "-":
            click.echo(text, nl=False)
            continue
        try:
            with open(out, "w", encoding="utf-8") as f:
                f.write(text)
            written.append(f"nncheck: wrote the {fmt} report to {out}")
        except OSError as e:
            click.echo(f"nncheck: could not write the {fmt} report to {out}: {e.strerror or e}", err=True)
            code = max(code, 2)
    for line in written:
        click.echo(line, err=True)
    sys.exit(code)


def _run_in_process(path: str, cfg: Any, overrides: dict[str, Any], listener: Any) -> Any:
    """``--in-process``: the runner in this process, the user's output sent to stderr."""
    from nncheck.runner import run_file
    from nncheck.worker import user_output_to_stderr

    with user_output_to_stderr():
        return run_file(path, cfg, overrides, listener)


@main.command("list")
def list_() -> None:
    """List every probe id with a one-line description."""
    from nncheck._catalog import probes as catalogue

    probes = catalogue()
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
    from nncheck._catalog import probes as catalogue
    from nncheck.config import nearest

    probes = catalogue()
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
