"""Run the selected probes on a Setup: one shared Context, each probe isolated.

- Each probe runs under ``preserved_global_state`` (RNGs, determinism flags, grad mode are put back) and is
  seeded with the run's seed, so its verdict does not depend on which probes ran before it.
- A probe that raises becomes an ``error`` result carrying the exception summary; the others still run.
- Budgets are in training steps (each probe's parameters), so a verdict never depends on how loaded the machine is.
  The wall-clock limit is only a backstop, scaled from the measured step time (``backstop_s``): probes check
  ``ctx.check_time()`` in their loops, and a SIGALRM (main thread only) interrupts one stuck inside a single user
  call. A probe stopped by it is ``skip``, marked inconclusive: it never turns a run's exit code from 0 to 1.
- The battery's cost is the training-step equivalents it ran (``Context.steps_spent``), per probe and in total; the
  wall time is reported beside it, with the step time measured at the start and at the end.
- torch's CPU threads are set for the run (``cpu_threads``) and restored afterwards.
"""

from __future__ import annotations

import contextlib
import os
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
# The wall-clock backstop of one probe, in the setup's training steps: the largest step budget of any probe (the full
# learning-rate sweep and overfit runs, a few hundred steps) times a margin of 10 for a machine slowed down by other
# work. Only a far slower machine, or a call of the user's code that blocks, reaches it.
BACKSTOP_STEPS = 5000
# ... and never under this many seconds: the step time of a tiny model is a fraction of a millisecond, where the
# fixed cost of a probe (model copies, hooks, Python) dominates.
MIN_BACKSTOP_S = 60.0
# Step timing re-measured at the end of the battery (after warm-up steps): the step time used for the report is the
# smaller of the two measurements, both are reported.
END_TIMING_WARMUP = 1
END_TIMING_STEPS = 3

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


def backstop_s(time_budget_s: float | None, step_time_s: float | None) -> float:
    """The wall-clock limit of one probe: ``time_budget_s`` when configured, else ``BACKSTOP_STEPS`` training steps
    of this setup (at least ``MIN_BACKSTOP_S``)."""
    if time_budget_s is not None:
        return time_budget_s
    return max(MIN_BACKSTOP_S, BACKSTOP_STEPS * (step_time_s or 0.0))


def auto_threads() -> int:
    """torch's CPU threads for a run: half the cores this process may use (1 on 2 cores), at most torch's default.
    torch's default (one per physical core) oversubscribes a shared machine: on 2 busy cores a small step runs
    30-100x slower than with one thread (OpenMP threads spin waiting for a core)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        cores = os.cpu_count() or 1
    import torch

    return max(1, min(torch.get_num_threads(), cores // 2))


@contextlib.contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """Run a block with torch's intra-op CPU threads set to ``threads`` (``auto_threads()`` when None); put the
    previous number back afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads or auto_threads())
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_probe(ctx: Context, p: Probe, params: Any, time_budget_s: float | None = None) -> Result:
    """Run one probe (with its resolved parameters) on the shared context and always return a Result, with the
    training steps it ran. ``time_budget_s``: its wall-clock backstop (default ``backstop_s``)."""
    t0 = time.perf_counter()
    steps0 = ctx.steps_spent
    if time_budget_s is None:
        time_budget_s = backstop_s(None, ctx.step_time_s)
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
        spent = ctx.steps_spent - steps0
        step_ms = f"{ctx.step_time_s * 1000:.3g} ms" if ctx.step_time_s else "unknown"
        result = Result(
            Status.SKIP,
            f"inconclusive: stopped by the wall-clock backstop after {time.perf_counter() - t0:.0f} s, "
            f"{spent:.0f} training steps in (one step took {step_ms} when the run started)",
            measured={"inconclusive": True, "backstop_s": time_budget_s, "steps": spent},
            hint="The probe's budget is in training steps; it ran far slower than the step time measured at the "
            "start (a machine busy with other work, or a call of your code that blocked). Run it again on a "
            "quieter machine, or raise `time_budget_s` in [tool.nncheck] (or --time-budget SECONDS).",
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
    return result.replace(id=p.id, title=p.title, duration_s=time.perf_counter() - t0, steps=ctx.steps_spent - steps0)


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
        with preserved_global_state(), cpu_threads(self.cfg.threads):
            ctx = Context(setup, seed=self.cfg.seed, device=self.cfg.device, budget=self.cfg.budget)
            try:
                ctx.preflight()
                self.ctx = ctx
                self.report.step_time_s = self.report.step_time_start_s = ctx.step_time_s
            except SetupError as e:
                self.report.error = str(e)
            self.report.steps = ctx.steps_spent
        self.report.duration_s = time.perf_counter() - t0

    def run(self, probe_id: str) -> Result:
        """Run one probe on the shared context; its result is appended to ``report`` and timed into it."""
        assert self.ctx is not None, "the setup failed its preflight: see report.error"
        p = registry()[probe_id]
        params = p.resolved_params(self.cfg.budget, self.cfg.probes.get(probe_id))
        with preserved_global_state(), cpu_threads(self.cfg.threads):
            result = run_probe(self.ctx, p, params, backstop_s(self.cfg.time_budget_s, self.ctx.step_time_s))
        self.report.results.append(result)
        self.report.duration_s += result.duration_s
        self.report.steps = self.ctx.steps_spent
        return result

    def remeasure_step_time(self) -> None:
        """Time a training step again at the end (reported beside the first measurement; the smaller one counts)."""
        if self.ctx is None:
            return
        t0 = time.perf_counter()
        with preserved_global_state(), cpu_threads(self.cfg.threads):
            try:
                end = self.ctx.measure_step_time(END_TIMING_WARMUP, END_TIMING_STEPS)
            except SetupError:  # the step worked at the start; a failure now is reported by the probes
                return
        self.report.step_time_end_s = end
        self.report.step_time_s = min(end, self.report.step_time_s or end)
        self.report.steps = self.ctx.steps_spent
        self.report.duration_s += time.perf_counter() - t0


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
        prepared.remeasure_step_time()
    report = prepared.report
    report.duration_s = time.perf_counter() - t0
    listener("setup_end", {"path": setup.path, "report": report})
    return report
