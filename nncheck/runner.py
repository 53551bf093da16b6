"""Run the selected probes on a Setup: one shared Context, each probe isolated, every phase under a deadline.

- Each probe runs under ``preserved_global_state`` (RNGs, determinism flags, grad mode are put back) and is
  seeded with the run's seed, so its verdict does not depend on which probes ran before it.
- A probe that raises becomes an ``error`` result carrying the exception summary and the user's line; the others
  still run. A probe that crashes on a batch the ``data`` probe rejects is skipped with a pointer to it instead
  (the data probe is run for that purpose when it was not selected); a problem found before the battery that stops
  every probe (the first batch's labels out of range; grad mode off, no parameter or no trainable parameter) is
  the owning probe's fail (``data`` / ``gradient-flow``), and the other probes are skipped with a pointer to it.
- Budgets are in training steps (each probe's parameters), so a verdict never depends on how loaded the machine is.
  The wall-clock limit of a probe is only a backstop, scaled from the measured step time (``backstop_s``): probes
  check ``ctx.check_time()`` in their loops, and a deadline (``nncheck.deadline``: SIGALRM raising a
  ``BaseException`` that user code cannot swallow, main thread only) interrupts one stuck inside a user call. A probe
  stopped by it is ``skip``, marked inconclusive: it never turns a run's exit code from 0 to 1.
- Loading the setup file and the preflight (model, first batches, first forward and loss, step timing) run under a
  deadline too (``prepare_limit_s``); a setup stopped there is reported as stopped (``SetupReport.stopped``, exit
  code 3) with the phase, the time and the user's line it was running. ``nncheck run`` adds the hard stop: it runs
  each setup in a worker process and kills it when a phase overruns (``nncheck.worker``).
- The battery's cost is the training-step equivalents it ran (``Context.steps_spent``), per probe and in total; the
  wall time is reported beside it, with the step time measured at the start and at the end.
- torch's CPU threads are set for the run (``cpu_threads``) and restored afterwards.
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from nncheck import setup as setup_module
from nncheck.config import Config, ConfigError, validate, with_arguments
from nncheck.context import FORWARD_SHARE, Context, ProbeSkip, ProbeTimeout
from nncheck.deadline import Deadline, DeadlineExceeded, caught, deadline
from nncheck.registry import Probe, registry
from nncheck.report import Result, SetupReport, Status, skipped, stop_message
from nncheck.setup import Setup, SetupError, user_frame, user_location
from nncheck.state import preserved_global_state

# Extra time a probe gets beyond its budget before the deadline interrupts it: cooperative checks (ctx.check_time)
# should fire first; the deadline is for a probe stuck inside one long user call. A quarter of the budget for short
# budgets (tests, --time-budget 2), this many seconds at most.
BACKSTOP_GRACE_S = 10.0
# The wall-clock backstop of one probe, in the setup's training steps: the largest step budget of any probe (the full
# learning-rate sweep and overfit runs, a few hundred steps) times a margin of 10 for a machine slowed down by other
# work. Only a far slower machine, or a call of the user's code that blocks, reaches it.
BACKSTOP_STEPS = 5000
# ... and never under this many seconds: the step time of a tiny model is a fraction of a millisecond, where the
# fixed cost of a probe (model copies, hooks, Python) dominates.
MIN_BACKSTOP_S = 60.0
# The wall-clock limit of loading the setup file and of the preflight when `time_budget_s` is not configured: no step
# time is known yet; a model factory may download weights and a DataLoader may start its workers, which takes tens of
# seconds, not minutes. A phase that reaches it is stopped (exit code 3).
PREPARE_LIMIT_S = 300.0
# The step time at the start and at the end of the battery: the fastest step timed in the first and in the second half
# of the full-batch training steps the probes ran (``Context.step_times``); the step time used for the report is the
# smaller one, both are reported. With fewer than END_TIMING_MIN_STEPS timed steps (a run of static probes only),
# END_TIMING_STEPS more steps are timed at the end.
END_TIMING_MIN_STEPS = 2
END_TIMING_STEPS = 2

Listener = Callable[[str, dict[str, Any]], None]


def _noop(event: str, info: dict[str, Any]) -> None:
    pass


def _ours(e: DeadlineExceeded, d: Deadline | None) -> bool:
    """Whether ``e`` is the expiry of ``d`` (None: the block never started); else it belongs to an outer deadline."""
    return d is not None and caught(e, d)


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


def backstop_grace_s(budget_s: float) -> float:
    """How long after its budget a probe stuck in one call is interrupted (``BACKSTOP_GRACE_S`` at most)."""
    return min(BACKSTOP_GRACE_S, max(0.5, budget_s / 4))


def prepare_limit_s(time_budget_s: float | None) -> float:
    """The wall-clock limit of loading a setup file and of its preflight: ``time_budget_s`` when configured, else
    ``PREPARE_LIMIT_S``."""
    return time_budget_s if time_budget_s is not None else PREPARE_LIMIT_S


def stop_record(phase: str, e: DeadlineExceeded, probe_id: str | None = None) -> dict[str, Any]:
    """``SetupReport.stopped`` for a phase whose deadline fired in-process."""
    return {
        "phase": phase,
        "probe": probe_id,
        "after_s": round(e.deadline.elapsed(), 2),
        "limit_s": e.deadline.seconds,
        "how": "timeout",
        "where": user_frame(e),
    }


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


def _inconclusive(ctx: Context, t0: float, steps0: float, budget_s: float, where: str = "") -> Result:
    spent = ctx.steps_spent - steps0
    step_ms = f"{ctx.step_time_s * 1000:.3g} ms" if ctx.step_time_s else "unknown"
    at = f"; your code was running {where}" if where else ""
    return Result(
        Status.SKIP,
        f"inconclusive: stopped by the wall-clock backstop after {time.perf_counter() - t0:.0f} s, "
        f"{spent:.0f} training steps in (one step took {step_ms} when the run started){at}",
        measured={"inconclusive": True, "backstop_s": budget_s, "steps": spent},
        hint="The probe's budget is in training steps; it ran far slower than the step time measured at the "
        "start (a machine busy with other work, or a call of your code that blocked). Run it again on a "
        "quieter machine, or raise `time_budget_s` in [tool.nncheck] (or --time-budget SECONDS).",
    )


def run_probe(ctx: Context, p: Probe, params: Any, time_budget_s: float | None = None) -> Result:
    """Run one probe (with its resolved parameters) on the shared context and always return a Result, with the
    training steps it ran. ``time_budget_s``: its wall-clock backstop (default ``backstop_s``)."""
    t0 = time.perf_counter()
    steps0 = ctx.steps_spent
    if time_budget_s is None:
        time_budget_s = backstop_s(None, ctx.step_time_s)
    ctx.deadline = t0 + time_budget_s
    d: Deadline | None = None
    try:
        with preserved_global_state(), deadline(time_budget_s + backstop_grace_s(time_budget_s), f"probe {p.id}") as d:
            ctx.seed_all()
            result = p.fn(ctx, params)
        if not isinstance(result, Result):
            result = Result(
                Status.ERROR, f"probe returned {type(result).__name__} instead of a Result (a bug in nncheck)"
            )
    except DeadlineExceeded as e:
        if not _ours(e, d):
            raise
        where = user_frame(e)
        result = _inconclusive(ctx, t0, steps0, time_budget_s, f"at {where}" if where else "")
    except ProbeSkip as e:
        result = skipped(str(e))
    except ProbeTimeout:
        result = _inconclusive(ctx, t0, steps0, time_budget_s)
    except SetupError as e:
        result = Result(Status.ERROR, str(e))
    except (Exception, SystemExit) as e:
        summary, from_user = _error_summary(e)
        if isinstance(e, SystemExit):
            result = Result(
                Status.ERROR,
                f"your code called sys.exit({e.code!r}) while this probe ran it{user_location(e)}",
                hint="A model, loss or data pipeline must not exit the process; raise an exception instead.",
            )
        elif from_user:
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


# ---------------------------------------------------------------------------------------------- known problems
@dataclass(frozen=True)
class Problem:
    """A problem found before the battery that every probe would trip over: the ``owner`` probe reports it (its own
    fail when ``run_owner`` and it fails, else this message), the other probes are skipped with a pointer to it."""

    owner: str
    message: str
    hint: str = ""
    run_owner: bool = True
    unaffected: tuple[str, ...] = ()  # probes that do not need what is broken: they run as usual
    measured: dict[str, Any] = field(default_factory=dict)
    expected: dict[str, Any] = field(default_factory=dict)


NO_PARAMETERS = Problem(
    "gradient-flow",
    "the model has no parameters: `model()` returned a module that registers none, so there is nothing to train "
    "(an optimizer refuses an empty parameter list)",
    "Register the layers as submodules: assign each to an attribute (`self.fc = nn.Linear(...)`), and keep lists "
    "of layers in `nn.ModuleList([...])` and dicts in `nn.ModuleDict({...})`, not in a plain Python list or dict.",
    run_owner=False,
    unaffected=("data",),
    measured={"trainable_parameters": 0},
    expected={"trainable_parameters": "> 0"},
)
GRAD_OFF_AT_IMPORT = Problem(
    "gradient-flow",
    "grad mode is off: importing the setup file ran `torch.set_grad_enabled(False)` (itself or in a module it "
    "imports), so no loss has a gradient and every training step fails",
    "Remove the global `torch.set_grad_enabled(False)`; turn gradients off only around inference code, with "
    "`with torch.no_grad():` (nncheck turned grad mode back on after the import).",
    run_owner=False,
    unaffected=("data",),
    measured={"grad_enabled_after_import": False},
    expected={"grad_enabled_after_import": True},
)
GRAD_OFF = Problem(
    "gradient-flow",
    "grad mode is off when nncheck runs the setup (`torch.is_grad_enabled()` is False: a "
    "`torch.set_grad_enabled(False)`, `torch.no_grad()` or `torch.inference_mode()` around the call), so no loss "
    "has a gradient",
    "Run nncheck with grad mode on: move the call out of `torch.no_grad()` / `torch.inference_mode()`, or remove "
    "the global `torch.set_grad_enabled(False)`.",
    run_owner=False,
    unaffected=("data",),
    measured={"grad_enabled": False},
    expected={"grad_enabled": True},
)


def frozen_problem(n: int) -> Problem:
    return Problem(
        "gradient-flow",
        f"every parameter of the model is frozen (requires_grad=False on all {n}): nothing can train",
        "Unfreeze what should train (`p.requires_grad_(True)`, at least the output layer) in `model()`, and build the "
        "optimizer from those parameters.",
        unaffected=("data",),
        measured={"trainable_parameters": 0, "frozen_parameters": n},
        expected={"trainable_parameters": "> 0"},
    )


def known_problem(ctx: Context) -> Problem | None:
    """The problem every probe would trip over, found once the preflight has run, or None."""
    import torch

    if ctx.data_problem:
        return Problem("data", ctx.data_problem)
    if ctx.setup.grad_off_at_import:
        return GRAD_OFF_AT_IMPORT
    if not torch.is_grad_enabled() or torch.is_inference_mode_enabled():
        return GRAD_OFF
    params = list(ctx.pristine_model().parameters())
    if not params:
        return NO_PARAMETERS
    if not any(p.requires_grad for p in params):
        return frozen_problem(len(params))
    return None


# ---------------------------------------------------------------------------------------------- a prepared setup
class PreparedSetup:
    """A setup ready for its probes: merged config, selected probe ids and a preflighted Context.

    ``run_setup`` runs every selected probe at once; the pytest plugin prepares once per file and runs one probe per
    test item. ``report.error`` is set (and ``ctx`` is None) when the setup could not be loaded or checked, and
    ``report.stopped`` too when a phase ran past its deadline.
    """

    def __init__(
        self,
        setup: Setup,
        config: Config,
        overrides: dict[str, Any] | None = None,
        listener: Listener = _noop,
    ) -> None:
        self.setup = setup
        self.cfg = config_for(setup, config, overrides)
        probes = registry()
        self.selected = self.cfg.selected(list(probes), [pid for pid, p in probes.items() if p.default])
        self.report = SetupReport(
            path=setup.path, seed=self.cfg.seed, device=self.cfg.device, budget=self.cfg.budget, strict=self.cfg.strict
        )
        self.report.notes.extend(setup.warnings)  # names of the setup file nncheck ignores
        self.ctx: Context | None = None
        self.problem: Problem | None = None
        self._data_result: Result | None = None
        _warm_up()
        t0 = time.perf_counter()
        limit = prepare_limit_s(self.cfg.time_budget_s)
        listener("phase", {"path": setup.path, "phase": "preflight", "limit_s": limit})
        with preserved_global_state(), cpu_threads(self.cfg.threads):
            ctx = Context(setup, seed=self.cfg.seed, device=self.cfg.device, budget=self.cfg.budget)
            d: Deadline | None = None
            try:
                with deadline(limit, "preflight") as d:
                    ctx.preflight(time_steps=False)
                    self.problem = known_problem(ctx)
                    if self.problem is None:
                        self._time_steps(ctx)
                self.ctx = ctx
            except DeadlineExceeded as e:
                if not _ours(e, d):
                    raise
                self.report.stopped = stop_record("preflight", e)
                self.report.error = stop_message(setup.path, self.report.stopped, self.cfg.time_budget_s is not None)
            except SetupError as e:
                self.report.error = str(e)
            except (Exception, SystemExit) as e:
                self.report.error = unexpected(setup.path, "the preflight", e)
            self.report.steps = ctx.steps_spent
        self.report.duration_s = time.perf_counter() - t0

    @classmethod
    def failed(cls, path: str, cfg: Config, error: str, stopped: dict[str, Any] | None = None) -> PreparedSetup:
        """A setup that could not be loaded: no context, no probe to run, the report carries the error."""
        self = cls.__new__(cls)
        self.setup = None  # type: ignore[assignment]
        self.cfg = cfg
        self.selected = []
        self.ctx = None
        self.problem = None
        self._data_result = None
        self.report = SetupReport(
            path=path, seed=cfg.seed, device=cfg.device, budget=cfg.budget, strict=cfg.strict, error=error
        )
        self.report.stopped = stopped
        return self

    @classmethod
    def from_file(
        cls,
        path: str,
        base: Config,
        overrides: dict[str, Any] | None = None,
        listener: Listener = _noop,
    ) -> PreparedSetup:
        """Load a setup file (under the load deadline) and prepare it; every failure lands in ``report.error``."""
        try:
            cfg = with_arguments(base, overrides)
        except ConfigError as e:
            return cls.failed(path, base, str(e))
        limit = prepare_limit_s(cfg.time_budget_s)
        listener("phase", {"path": path, "phase": "load", "limit_s": limit})
        d: Deadline | None = None
        try:
            with deadline(limit, "load") as d:  # what the import sets (a default dtype, seeds) holds for the run
                setup = setup_module.load_setup(path)
        except DeadlineExceeded as e:
            if not _ours(e, d):
                raise
            stopped = stop_record("load", e)
            return cls.failed(path, cfg, stop_message(path, stopped, cfg.time_budget_s is not None), stopped)
        except SetupError as e:
            return cls.failed(path, cfg, str(e))
        except (Exception, SystemExit) as e:  # pragma: no cover - load_setup turns the user's errors into SetupError
            return cls.failed(path, cfg, unexpected(path, "loading the setup file", e))
        try:
            return cls(setup, base, overrides, listener)
        except (SetupError, ConfigError) as e:
            return cls.failed(path, cfg, str(e))
        except (Exception, SystemExit) as e:
            return cls.failed(path, cfg, unexpected(path, "the preflight", e))

    def _time_steps(self, ctx: Context) -> None:
        """The step time the backstops start from, before any step ran: the preflight's forward / FORWARD_SHARE (a
        first call, slower than later ones: the backstop errs long). The steps the probes run refine it."""
        if ctx.first_forward_s is not None:
            ctx.step_time_s = max(ctx.first_forward_s / FORWARD_SHARE, 1e-6)

    # ------------------------------------------------------------------ probes
    def run(self, probe_id: str) -> Result:
        """Run one probe on the shared context; its result is appended to ``report`` and timed into it."""
        assert self.ctx is not None, "the setup failed its preflight: see report.error"
        p = registry()[probe_id]
        problem = self.problem
        if problem is not None and probe_id in problem.unaffected:
            problem = None
        if problem is not None and (probe_id != problem.owner or not problem.run_owner):
            result = self._for_problem(p, problem)
        elif probe_id == "data" and self._data_result is not None:  # already run for another probe's crash
            result = self._data_result
        else:
            result = self._run_probe(p)
            if problem is not None and result.status is not Status.FAIL:  # the owner missed it: say it
                result = self._for_problem(p, problem)
            elif problem is None:
                result = self._explained_by_data(result)
        if probe_id == "data":
            self._data_result = result
        self.report.results.append(result)
        self.report.duration_s += result.duration_s
        self.report.steps = self.ctx.steps_spent
        return result

    def _run_probe(self, p: Probe) -> Result:
        assert self.ctx is not None
        params = p.resolved_params(self.cfg.budget, self.cfg.probes.get(p.id))
        with preserved_global_state(), cpu_threads(self.cfg.threads):
            try:
                return run_probe(self.ctx, p, params, self.probe_budget_s())
            finally:
                if self.ctx.setup.train_step is not None:  # the user's GradScalers as they were before the probe
                    self.ctx.load_scaler_states()

    def probe_budget_s(self) -> float:
        """The wall-clock backstop of each probe of this setup."""
        return backstop_s(self.cfg.time_budget_s, self.ctx.step_time_s if self.ctx else None)

    def _for_problem(self, p: Probe, problem: Problem) -> Result:
        """The owner's fail, or another probe's pointer to it (a skip; an error when the owner is not selected, so
        that the run still fails)."""
        if p.id == problem.owner:
            result = Result(
                Status.FAIL,
                problem.message,
                hint=problem.hint,
                measured={**problem.measured, "found_by": "preflight"},
                expected=problem.expected,
            )
        elif problem.owner in self.selected:
            result = skipped(f"not run: the `{problem.owner}` probe fails on this setup ({_clause(problem.message)})")
        else:
            rerun = self.ctx.rerun(problem.owner) if self.ctx else f"nncheck explain {problem.owner}"
            result = Result(
                Status.ERROR,
                f"cannot run: {problem.message} (the `{problem.owner}` probe's finding)",
                hint=problem.hint or f"Run `{rerun}` for the details and the fix.",
            )
        return result.replace(id=p.id, title=p.title)

    def _data_verdict(self) -> Result | None:
        """The data probe's result on this setup, run now (once) when it has not run yet; None without a data probe."""
        if self._data_result is None:
            probes = registry()
            if "data" not in probes:
                return None
            self._data_result = self._run_probe(probes["data"])
        return self._data_result

    def _explained_by_data(self, result: Result) -> Result:
        """A crash on a batch that the data probe rejects is the data's fault: a skip pointing at the data probe when
        it is selected (its fail fails the run), else an error that names it."""
        if result.status is not Status.ERROR or result.id == "data":
            return result
        data = self._data_verdict()
        if data is None or data.status is not Status.FAIL:
            return result
        crash = result.message.removeprefix("probe crashed: ")
        crash = crash.removeprefix("your code raised while this probe ran it: ")
        if "data" in self.selected:
            return result.replace(
                status=Status.SKIP,
                message=f"not run to the end: it crashed on a batch that the `data` probe rejects "
                f"({_clause(data.message)}): {_clause(crash, ' (at ')}",
                measured={"crash": crash},
                hint=data.hint,
            )
        rerun = self.ctx.rerun("data") if self.ctx else "nncheck explain data"
        return result.replace(
            message=f"crashed on a batch that the `data` probe rejects ({data.message}). The crash: {crash}",
            hint=f"Fix the data (`{rerun}` shows the data probe's report). {data.hint}".strip(),
        )

    def remeasure_step_time(self, listener: Listener = _noop) -> None:
        """The step time at the start and at the end of the battery, from the steps it timed (``END_TIMING_*``);
        the smaller one counts."""
        if self.ctx is None or self.problem is not None:
            return
        t0 = time.perf_counter()
        if len(self.ctx.step_times) < END_TIMING_MIN_STEPS:
            limit = self.probe_budget_s()
            listener("phase", {"path": self.report.path, "phase": "step timing", "limit_s": limit})
            with preserved_global_state(), cpu_threads(self.cfg.threads):
                d: Deadline | None = None
                try:
                    with deadline(limit, "step timing") as d:
                        self.ctx.measure_step_time(0, END_TIMING_STEPS)
                except DeadlineExceeded as e:
                    if not _ours(e, d):
                        raise
                    self.report.notes.append(f"the final step timing was stopped after {limit:g} s{user_location(e)}")
                    return
                except SetupError:  # the step worked at the start; a failure now is reported by the probes
                    return
        times = self.ctx.step_times
        if len(times) < 2:
            return
        half = (len(times) + 1) // 2
        self.report.step_time_start_s = max(min(times[:half]), 1e-6)
        self.report.step_time_end_s = max(min(times[half:]), 1e-6)
        self.report.step_time_s = min(self.report.step_time_start_s, self.report.step_time_end_s)
        self.report.steps = self.ctx.steps_spent
        self.report.duration_s += time.perf_counter() - t0


def _clause(message: str, stop: str = ":") -> str:
    """The first clause of a message (up to ``stop``), for a pointer to a result shown in full elsewhere."""
    return message.split(stop, 1)[0].strip() or message


def unexpected(path: str, phase: str, e: BaseException) -> str:
    """The sentence for an exception nncheck did not expect while running ``phase`` of a setup."""
    if isinstance(e, SystemExit):
        return (
            f"{path}: your code called sys.exit({e.code!r}) during {phase}{user_location(e)}; raise an exception "
            "instead."
        )
    summary, from_user = _error_summary(e)
    if from_user:
        return f"{path}: your code raised during {phase}: {summary}. Fix the error at that line."
    return (
        f"{path}: nncheck could not run {phase}: {summary}. If the location is inside nncheck, this is an nncheck "
        "bug: please report it with the setup file."
    )


def _run_prepared(prepared: PreparedSetup, listener: Listener, t0: float) -> SetupReport:
    listener("setup_ready", {"path": prepared.report.path, "probes": prepared.selected})
    if prepared.ctx is not None:
        budget = prepared.probe_budget_s()
        for pid in prepared.selected:
            limit = budget + backstop_grace_s(budget)
            listener("probe_start", {"path": prepared.report.path, "id": pid, "limit_s": limit})
            result = prepared.run(pid)
            listener("probe_end", {"path": prepared.report.path, "id": pid, "result": result})
        prepared.remeasure_step_time(listener)
    report = prepared.report
    report.duration_s = time.perf_counter() - t0
    listener("setup_end", {"path": report.path, "report": report})
    return report


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
    return _run_prepared(PreparedSetup(setup, config, overrides, listener), listener, t0)


def run_file(
    path: str,
    config: Config,
    overrides: dict[str, Any] | None = None,
    listener: Listener = _noop,
) -> SetupReport:
    """Load a setup file and run its battery. Nothing raises (but KeyboardInterrupt): a file that cannot be loaded,
    a phase past its deadline or an unexpected exception is the report's ``error`` (and ``stopped``)."""
    _warm_up()
    listener("setup_start", {"path": path, "probes": []})
    t0 = time.perf_counter()
    return _run_prepared(PreparedSetup.from_file(path, config, overrides, listener), listener, t0)
