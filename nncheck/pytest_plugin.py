"""pytest plugin (entry point ``pytest11``): setup files as tests, and the ``nncheck`` fixture.

Collection. ``pytest --nncheck path/to/setup.py`` (or the ini option ``nncheck_paths``, a list of globs relative to
the ini file) collects each setup file as one collector with one item per probe::

    examples/mlp.py                       SetupFile   (the file)
    examples/mlp.py::nncheck              Battery     (holds the shared Context while its items run)
    examples/mlp.py::nncheck::initial-loss   ProbeItem (runs one probe)

pass -> passed; fail / error -> failed with the message, the numbers and the hint; skip -> skipped with the
reason; warn -> passed with an ``NncheckWarning`` (failed under ``--nncheck-strict``).

Sharing. The setup file is imported, checked and timed once per ``Battery`` (lazily, at its first item that runs)
and every item runs its own probe on that shared Context, so ``-k``, ``-x``, ``--lf`` and ``--deselect`` run
exactly the selected probes, each probe runs once, and JUnit times are per probe. The Context is released when
pytest tears the Battery down (after its last item). Each probe is seeded by the runner, so verdicts do not
depend on which items ran before. Under pytest-xdist, ``--dist loadfile`` (or ``loadgroup``: items carry an
``xdist_group`` mark per setup file) keeps a file on one worker; with plain ``--dist load`` each worker that
gets items of a file loads and times that file once more.

Time limits. The probes run in pytest's process: the import of a setup file, its preflight and each probe run under
a deadline (``nncheck.deadline``, SIGALRM, main thread only) that raises a ``BaseException`` in the user's code, so
an ``except Exception`` retry loop does not swallow it. A setup stopped in its import or preflight fails every item
with the phase and the line it was running; a probe stopped is skipped as inconclusive. Code that catches
``BaseException`` forever, or blocks in C code without returning to Python, cannot be stopped in-process: use
``nncheck run`` (a worker process it kills) or pytest-timeout's thread method for such setups.

This module is imported by every pytest run where nncheck is installed: it must not import torch at import time.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from nncheck.files import defines_model, model_line

if TYPE_CHECKING:
    from nncheck.config import Config
    from nncheck.report import Report, Result
    from nncheck.runner import PreparedSetup

BATTERY_NAME = "nncheck"
MARKER = "nncheck"
# A file found while walking a directory under `--nncheck` is a setup file when it defines `model` at top level.
_NNCHECK_FILES = pytest.StashKey[set[Path]]()


class NncheckWarning(UserWarning):
    """A probe warned: the setup trains, but something is likely to cost accuracy or time."""


class ProbeFailed(Exception):
    """Raised by a ProbeItem whose probe failed or errored (or warned under strict); rendered by repr_failure."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


# ------------------------------------------------------------------------------------------------ options
def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("nncheck", "nncheck (training-sanity probes)")
    group.addoption(
        "--nncheck",
        action="store_true",
        default=False,
        help="Collect the setup files given on the command line (and .py files defining `model` in directories "
        "given) as nncheck tests: one test per probe.",
    )
    group.addoption(
        "--nncheck-strict",
        action="store_true",
        default=None,
        help="nncheck warnings fail the test (default: [tool.nncheck] strict, else off).",
    )
    group.addoption("--nncheck-budget", choices=("full", "fast"), default=None, help="Probe budget: full or fast.")
    group.addoption("--nncheck-seed", type=int, default=None, help="Seed of every probe (default 0).")
    group.addoption("--nncheck-device", default=None, help="Device for probes: cpu, cuda, cuda:1, mps ...")
    group.addoption(
        "--nncheck-only", action="append", default=[], metavar="ID", help="Run only this probe (repeatable)."
    )
    group.addoption(
        "--nncheck-time-budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="Wall-clock limit of the import, of the preflight and of each probe of a setup (default: [tool.nncheck] "
        "time_budget_s, else 300 s for the import and the preflight and 5000 training steps for a probe).",
    )
    group.addoption("--nncheck-skip", action="append", default=[], metavar="ID", help="Skip this probe (repeatable).")
    parser.addini(
        "nncheck_paths",
        type="args",
        default=[],
        help="Globs (relative to the ini file) of nncheck setup files to collect, one test per probe.",
    )


def cli_overrides(config: pytest.Config) -> dict[str, Any]:
    """The --nncheck-* options as config overrides (None = not given; pyproject decides)."""
    return {
        "only": list(config.getoption("nncheck_only") or []),
        "skip": list(config.getoption("nncheck_skip") or []),
        "seed": config.getoption("nncheck_seed"),
        "device": config.getoption("nncheck_device"),
        "budget": config.getoption("nncheck_budget"),
        "strict": config.getoption("nncheck_strict"),
        "time_budget_s": config.getoption("nncheck_time_budget"),
    }


def _ini_dir(config: pytest.Config) -> Path:
    return config.inipath.parent if config.inipath else config.rootpath


def _glob_setup_files(config: pytest.Config) -> set[Path]:
    base = _ini_dir(config)
    found: set[Path] = set()
    for pattern in config.getini("nncheck_paths"):
        matches = Path(pattern).parent.glob(Path(pattern).name) if Path(pattern).is_absolute() else base.glob(pattern)
        found.update(p.resolve() for p in matches if p.suffix == ".py" and p.name not in ("conftest.py", "__init__.py"))
    return found


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARKER}: an nncheck probe run on a setup file (deselect: -m 'not nncheck').")
    files = _glob_setup_files(config)
    config.stash[_NNCHECK_FILES] = files
    if files and config.args_source != pytest.Config.ArgsSource.ARGS:
        # `pytest` without paths walks testpaths / the cwd: add the nncheck_paths files that lie outside them.
        roots = [Path(a.split("::")[0]).resolve() for a in config.args]
        for f in sorted(files):
            if not any(f == r or r in f.parents for r in roots):
                config.args.append(str(f))


# ------------------------------------------------------------------------------------------------ collection
def _is_test_module(file_path: Path, config: pytest.Config) -> bool:
    """Whether the name matches `python_files` (test_*.py ...): such files stay ordinary test modules."""
    try:
        from _pytest.python import path_matches_patterns
    except ImportError:  # pragma: no cover - pytest internals moved
        import fnmatch

        return any(fnmatch.fnmatch(file_path.name, p) for p in config.getini("python_files"))
    return bool(path_matches_patterns(file_path, config.getini("python_files")))


def _python_collects(file_path: Path, parent: pytest.Collector) -> bool:
    """Whether pytest's python plugin collects this file as a test module (it then calls makemodule)."""
    return parent.session.isinitpath(file_path) or _is_test_module(file_path, parent.config)


def _is_setup_file(file_path: Path, parent: pytest.Collector) -> bool:
    """Files matched by `nncheck_paths`; under --nncheck also the .py files named on the command line and the
    ones defining `model` in directories named there (test modules, conftest.py and _private.py excepted)."""
    if file_path.suffix != ".py":
        return False
    config = parent.config
    if file_path.resolve() in config.stash.get(_NNCHECK_FILES, set()):
        return True
    if not config.getoption("nncheck"):
        return False
    if file_path.name.startswith("_") or file_path.name == "conftest.py" or _is_test_module(file_path, config):
        return False
    if parent.session.isinitpath(file_path):
        return True
    return defines_model(file_path)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if _is_setup_file(file_path, parent) and not _python_collects(file_path, parent):
        return SetupFile.from_parent(parent, path=file_path)
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """A setup file that pytest would import as a test module (e.g. named on the command line) is ours instead."""
    if _is_setup_file(module_path, parent):
        return SetupFile.from_parent(parent, path=module_path)
    return None


class SetupFile(pytest.File):
    """A setup file: one ``nncheck`` Battery inside."""

    def collect(self) -> Iterator[pytest.Item | pytest.Collector]:
        yield Battery.from_parent(self, name=BATTERY_NAME)


class Battery(pytest.Collector):
    """The probes of one setup file. Holds the shared Context between its first item and its teardown."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.state: _SetupState | None = None

    def base_config(self, with_options: bool = True) -> Config:
        """Defaults < [tool.nncheck] of the pyproject nearest to the setup file (< the --nncheck-* options)."""
        from nncheck.config import ConfigError, load_config

        try:
            return load_config(self.path, overrides=cli_overrides(self.config) if with_options else None)
        except ConfigError as e:
            raise self.CollectError(f"nncheck configuration error: {e}") from None

    def collect(self) -> Iterator[pytest.Item]:
        from nncheck.registry import registry

        cfg = self.base_config()
        probes = registry()
        ids = cfg.selected(list(probes), [pid for pid, p in probes.items() if p.default])
        rel = self.path
        group = [pytest.mark.xdist_group(str(rel))] if self.config.pluginmanager.hasplugin("xdist") else []
        for pid in ids:
            item = ProbeItem.from_parent(self, name=pid)
            item.add_marker(MARKER)
            for mark in group:
                item.add_marker(mark)
            yield item

    def shared(self) -> _SetupState:
        """Load, check and time the setup once (the first item that runs); later items reuse it."""
        if self.state is None:
            try:
                shown = str(self.path.relative_to(Path.cwd()))
            except ValueError:
                shown = str(self.path)
            self.state = _SetupState.load(shown, self.base_config(with_options=False), cli_overrides(self.config))
        return self.state

    def teardown(self) -> None:
        self.state = None  # release the model copies and cached batches


class _SetupState:
    """What the items of one Battery share: a ``PreparedSetup`` (config, Context), or the setup error."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.error: str | None = None
        self.prepared: PreparedSetup | None = None
        self.selected: list[str] = []

    @property
    def cfg(self) -> Config | None:
        return self.prepared.cfg if self.prepared else None

    @classmethod
    def load(cls, path: str, base: Config, overrides: dict[str, Any]) -> _SetupState:
        from nncheck.runner import PreparedSetup

        st = cls(path)
        # pyproject < the setup file's own `nncheck` dict < the --nncheck-* options; a file that cannot be loaded, a
        # configuration error, an import or preflight past its time limit: every item fails with that sentence
        st.prepared = PreparedSetup.from_file(path, base, overrides)
        st.selected = st.prepared.selected
        st.error = st.prepared.report.error
        return st

    def run(self, probe_id: str) -> Result:
        assert self.prepared is not None
        return self.prepared.run(probe_id)


def result_text(result: Result) -> str:
    """Message, numbers and hint of a result: the text of a failed item (no traceback)."""
    from nncheck.render import result_lines

    head, *rest = result_lines(result)
    return "\n".join([f"nncheck {result.id}: {result.status.value.upper()}: {head}", *(f"  {x}" for x in rest)])


class ProbeItem(pytest.Item):
    """One probe on one setup file."""

    parent: Battery

    def runtest(self) -> None:
        from nncheck.report import Status

        state = self.parent.shared()
        if state.error is not None:
            raise ProbeFailed(f"nncheck could not run the setup {state.path}:\n{state.error}")
        assert state.cfg is not None
        if self.name not in state.selected:
            raise pytest.skip.Exception(
                f"{self.name} is turned off by the `nncheck` settings of {state.path}", _use_item_location=True
            )
        result = state.run(self.name)
        self.user_properties.append(("nncheck_status", result.status.value))
        self.user_properties.append(("nncheck_duration_s", round(result.duration_s, 4)))
        if result.status in (Status.FAIL, Status.ERROR):
            raise ProbeFailed(result_text(result))
        if result.status == Status.SKIP:
            raise pytest.skip.Exception(f"nncheck {self.name}: {result.message}", _use_item_location=True)
        if result.status == Status.WARN:
            if state.cfg.strict:
                raise ProbeFailed(result_text(result) + "\n  (a warning fails under strict mode)")
            warnings.warn_explicit(
                NncheckWarning(result_text(result)),
                category=NncheckWarning,
                filename=str(self.path),
                lineno=model_line(self.path) or 1,
            )

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:  # type: ignore[override]
        if isinstance(excinfo.value, ProbeFailed):
            return excinfo.value.text
        return str(super().repr_failure(excinfo, style=style))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        # 0-based line of `model`; the domain is the failure headline (not a suffix of the node id, which pytest
        # would then rewrite with "." -> "::")
        rel = self.nodeid.split("::")[0]
        return self.path, (model_line(self.path) or 1) - 1, f"nncheck {self.name} on {rel}"


# ------------------------------------------------------------------------------------------------ fixture
class NncheckFixture:
    """``nncheck.check(model=..., data=...)`` inside a test: runs the battery and fails the test on a fail.

    Options not given come from the --nncheck-* command-line options, then ``[tool.nncheck]`` of the pyproject
    nearest to the test file, then the defaults. Returns the Report for further asserts.
    """

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.request = request
        self.reports: list[Report] = []

    def _options(self, options: dict[str, Any]) -> dict[str, Any]:
        merged = {k: v for k, v in cli_overrides(self.request.config).items() if v not in (None, [])}
        merged.update({k: v for k, v in options.items() if v is not None})
        return merged

    def check(self, model: Any = None, data: Any = None, **options: Any) -> Report:
        """Run ``nncheck.check`` (same arguments); fail the test with the text report if any probe fails."""
        import nncheck

        options.setdefault("name", self.request.node.nodeid)
        options.setdefault("config_from", str(self.request.path))
        return self._judge(lambda opts: nncheck.check(model, data, **opts), options)

    def check_file(self, path: str | Path, **options: Any) -> Report:
        """Run the battery on a setup file; fail the test if any probe fails."""
        import nncheck

        return self._judge(lambda opts: nncheck.check_file(str(path), **opts), options)

    def _judge(self, run: Any, options: dict[str, Any]) -> Report:
        from nncheck.config import ConfigError
        from nncheck.render import render
        from nncheck.report import Status
        from nncheck.setup import SetupError

        try:
            report: Report = run(self._options(options))
        except (SetupError, ConfigError) as e:
            pytest.fail(f"nncheck could not run the setup: {e}", pytrace=False)
        self.reports.append(report)
        for r in report.results:
            if r.status == Status.WARN and not report.strict:
                warnings.warn(NncheckWarning(result_text(r)), stacklevel=3)
        if not report.ok:
            pytest.fail("nncheck found problems:\n" + render(report, "text", color=False, width=110), pytrace=False)
        return report


@pytest.fixture
def nncheck(request: pytest.FixtureRequest) -> NncheckFixture:
    """Run nncheck's probes from a test: ``report = nncheck.check(model=make_model, data=make_batches)``."""
    return NncheckFixture(request)
