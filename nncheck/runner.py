"""Run the selected probes on a Setup: one shared Context, each probe isolated.

- Each probe runs under ``preserved_global_state`` (RNGs, determinism flags, grad mode are put back) and is
  seeded with the run's seed, so its verdict does not depend on which probes ran before it.
- A probe that raises becomes an ``error`` result carrying the exception summary; the others still run.
- A probe past its time budget becomes ``error``: probes check ``ctx.check_time()`` in their loops, and
  a SIGALRM backstop (main thread only) interrupts one stuck inside a single user call.
- The battery's cost is reported in training-step equivalents: battery seconds / median step seconds.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from nncheck.config import Config, validate, with_arguments
from nncheck.context import Context, ProbeSkip, ProbeTimeout
from nncheck.registry import Probe, registry
from nncheck.report import Result, SetupReport, Status, skipped
from nncheck.setup import Setup, SetupError, user_location
from nncheck.state import preserved_global_state

# Extra time a probe gets beyond its budget before the SIGALRM backstop interrupts it: cooperative checks
# (ctx.check_time) should fire first; the backstop is for a probe stuck inside one long user call.
BACKSTOP_GRACE_S = 10.0

Listener = Callable[[str, dict[str, Any]], None]


def _noop(event: str, info: dict[str, Any]) -> None:
    pass


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    """Raise ProbeTimeout in the main thread after ``seconds`` (no-op elsewhere or where SIGALRM is missing)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise ProbeTimeout("time budget exceeded (interrupted)")

    previous = signal.signal(signal.SIGALRM, handler)
    old_timer = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if old_timer[0] > 0:  # someone else's timer was running: give it back what is left
            signal.setitimer(signal.ITIMER_REAL, max(old_timer[0] - seconds, 1e-3), old_timer[1])


def _error_summary(e: BaseException) -> tuple[str, bool]:
    """``ExcType: message (at file:line: code)`` naming the user's deepest frame when there is one (the flag says
    so), else the innermost frame."""
    where = user_location(e)
    if where:
        return f"{type(e).__name__}: {e}{where}", True
    frames = traceback.extract_tb(e.__traceback__)
    inner = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(e).__name__}: {e}{inner}", False


def run_probe(ctx: Context, p: Probe, params: Any, time_budget_s: float) -> Result:
    """Run one probe (with its resolved parameters) on the shared context and always return a Result."""
    t0 = time.perf_counter()
    ctx.deadline = t0 + time_budget_s
    try:
        with preserved_global_state(), _alarm(time_budget_s + BACKSTOP_GRACE_S):
            ctx.seed_all()
            result = p.fn(ctx, params)
        if not isinstance(result, Result):
            result = Result(
                Status.ERROR, f"probe returned {type(result).__name__} instead of a Result (a bug in nncheck)"
            )
    except ProbeSkip as e:
        result = skipped(str(e))
    except ProbeTimeout:
        result = Result(
            Status.ERROR,
            f"did not finish within its time budget of {time_budget_s:g} s",
            hint="Raise `time_budget_s` in [tool.nncheck] (or --time-budget), use --budget fast, or make one "
            "training step cheaper (a smaller batch for the check).",
        )
    except SetupError as e:
        result = Result(Status.ERROR, str(e))
    except Exception as e:
        summary, from_user = _error_summary(e)
        if from_user:
            result = Result(
                Status.ERROR,
                f"your code raised while this probe ran it: {summary}",
                hint="Fix the error at the location above (this probe runs your model, loss and data on the "
                "batches other probes use; an error on a later batch often means inconsistent batches: check "
                "`nncheck explain data`).",
            )
        else:
            result = Result(
                Status.ERROR,
                f"probe crashed: {summary}",
                hint="If the error comes from your model or loss, the location above shows where; otherwise this "
                "is an nncheck bug: please report it with the setup file.",
            )
    finally:
        ctx.deadline = None
    return result.replace(id=p.id, title=p.title, duration_s=time.perf_counter() - t0)


_WARM = False


def _warm_up() -> None:
    """Pay one-time imports (the probe modules; the first optimizer pulls in torch._dynamo, ~1.5 s) before the
    clock starts, so a setup's duration and step-equivalents measure the battery, not the process start."""
    global _WARM
    if not _WARM:
        import torch

        registry()  # imports every probe module (torch.fx and friends)
        torch.optim.Adam([torch.zeros(1, requires_grad=True)])
        _WARM = True


def config_for(setup: Setup, base: Config, overrides: dict[str, Any] | None = None) -> Config:
    """base (defaults + pyproject) < the setup file's `nncheck` dict < CLI / API overrides."""
    cfg = base
    if setup.settings:
        cfg = cfg.merged(validate(setup.settings, f"{setup.path}: `nncheck` settings"), f"{setup.path}")
    return with_arguments(cfg, overrides)


class PreparedSetup:
    """A setup ready for its probes: merged config, selected probe ids and a preflighted Context.

    ``run_setup`` runs every selected probe at once; the pytest plugin prepares once per file and runs one probe per
    test item. ``report.error`` is set (and ``ctx`` is None) when the setup could not be loaded or checked.
    """

    def __init__(self, setup: Setup, config: Config, overrides: dict[str, Any] | None = None) -> None:
        self.setup = setup
        self.cfg = config_for(setup, config, overrides)
        probes = registry()
        self.selected = self.cfg.selected(list(probes), [pid for pid, p in probes.items() if p.default])
        self.report = SetupReport(
            path=setup.path, seed=self.cfg.seed, device=self.cfg.device, budget=self.cfg.budget, strict=self.cfg.strict
        )
        self.ctx: Context | None = None
        _warm_up()
        t0 = time.perf_counter()
        with preserved_global_state():
            ctx = Context(setup, seed=self.cfg.seed, device=self.cfg.device, budget=self.cfg.budget)
            try:
                ctx.preflight()
                self.ctx = ctx
                self.report.step_time_s = ctx.step_time_s
            except SetupError as e:
                self.report.error = str(e)
        self.report.duration_s = time.perf_counter() - t0

    def run(self, probe_id: str) -> Result:
        """Run one probe on the shared context; its result is appended to ``report`` and timed into it."""
        assert self.ctx is not None, "the setup failed its preflight: see report.error"
        p = registry()[probe_id]
        params = p.resolved_params(self.cfg.budget, self.cfg.probes.get(probe_id))
        with preserved_global_state():
            result = run_probe(self.ctx, p, params, self.cfg.time_budget_s)
        self.report.results.append(result)
        self.report.duration_s += result.duration_s
        return result


def run_setup(
    setup: Setup,
    config: Config,
    overrides: dict[str, Any] | None = None,
    listener: Listener = _noop,
) -> SetupReport:
    """Preflight the setup, then run every selected probe. Setup errors land in ``SetupReport.error``."""
    _warm_up()
    listener("setup_start", {"path": setup.path, "probes": []})
    t0 = time.perf_counter()
    prepared = PreparedSetup(setup, config, overrides)
    listener("setup_ready", {"path": setup.path, "probes": prepared.selected})
    if prepared.ctx is not None:
        for pid in prepared.selected:
            listener("probe_start", {"path": setup.path, "id": pid})
            result = prepared.run(pid)
            listener("probe_end", {"path": setup.path, "id": pid, "result": result})
    report = prepared.report
    report.duration_s = time.perf_counter() - t0
    listener("setup_end", {"path": setup.path, "report": report})
    return report
