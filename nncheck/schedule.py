"""Learning-rate schedules: the user's ``scheduler(optimizer)`` followed over the run's horizon, without training.

The setup's scheduler is stepped once per training step (per batch). ``lr_curve`` builds it on an optimizer of its
own (the user's optimizer over the model's parameters, which are never stepped) and records each param group's LR at
sampled steps of the horizon: every step of the first ``HEAD_STEPS`` (the warm-up), then ``points`` steps spread
evenly to the end. The schedulers of ``torch.optim.lr_scheduler`` whose LR is a function of the step number alone
are evaluated at the sampled steps directly; any other scheduler (SequentialLR, a user's class) is stepped through
every step, up to ``max_exact`` steps (~10 us a step). No step costs a training step.

The horizon is the setup's ``nncheck = {"total_steps": N}``; else the one the scheduler declares (OneCycleLR's
``total_steps``, CosineAnnealingLR's ``T_max``, LinearLR's ``total_iters``, ...); else ``DEFAULT_HORIZON``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim import lr_scheduler as sched

# Every step of the first HEAD_STEPS is recorded (a warm-up is usually shorter).
HEAD_STEPS = 200
# The horizon when neither the setup nor the scheduler declares one.
DEFAULT_HORIZON = 10_000
# Steps sampled evenly over the horizon (a cosine period shorter than 2 x horizon / POINTS is aliased), and the most
# steps a scheduler without a closed form is stepped through (~10 us a step on a CPU: ~1 s).
POINTS = 2000
MAX_EXACT_STEPS = 100_000
# The LR is a closed function of the step number (set ``last_epoch``, read the LR).
_CLOSED_FORM = (
    sched.ConstantLR,
    sched.CosineAnnealingLR,
    sched.ExponentialLR,
    sched.LinearLR,
    sched.MultiStepLR,
    sched.PolynomialLR,
    sched.StepLR,
)
_GET_LR = (sched.LambdaLR, sched.OneCycleLR)


@dataclass
class LRCurve:
    """Each param group's LR at sampled steps (step k: the LR of the k-th optimizer step, 0-based)."""

    kind: str  # the scheduler's class name
    horizon: int  # the steps the curve covers (the run's length when known)
    horizon_from: str  # "total_steps", "the scheduler's <attr>" or "a default"
    steps: list[int] = field(default_factory=list)
    lrs: list[list[float]] = field(default_factory=list)  # per sampled step, per group
    error: str | None = None  # the scheduler raised at step error_step (the real run would crash there)
    error_step: int | None = None
    truncated: bool = False  # stepped one by one and stopped at max_exact steps before the horizon
    metric_based: bool = False  # ReduceLROnPlateau: follows a validation metric, cannot be followed here

    @property
    def groups(self) -> int:
        return len(self.lrs[0]) if self.lrs else 0

    def group(self, g: int = 0) -> list[float]:
        return [row[g] for row in self.lrs]

    @property
    def peaks(self) -> list[float]:
        """Each group's largest LR over the curve."""
        return [max(row[g] for row in self.lrs) for g in range(self.groups)]


def declared_horizon(s: Any) -> tuple[int, str] | None:
    """The steps a scheduler says it is built for, and which attribute says it, or None."""
    if isinstance(s, sched.OneCycleLR):
        return int(s.total_steps), "OneCycleLR's total_steps"
    if isinstance(s, sched.CosineAnnealingLR):
        return int(s.T_max), "CosineAnnealingLR's T_max"
    if isinstance(s, (sched.LinearLR, sched.ConstantLR, sched.PolynomialLR)):
        return int(s.total_iters), f"{type(s).__name__}'s total_iters"
    if isinstance(s, sched.SequentialLR) and s._schedulers:
        last = declared_horizon(s._schedulers[-1])
        if last is not None:
            return int(s._milestones[-1]) + last[0], f"SequentialLR's milestones + {last[1]}"
    return None


def sample_steps(horizon: int, points: int) -> list[int]:
    """Every step below HEAD_STEPS, and ``points`` steps spread evenly over the horizon (its last step included)."""
    picked = set(range(min(HEAD_STEPS, horizon)))
    if horizon > 1:
        picked |= {round(i * (horizon - 1) / (points - 1)) for i in range(points)}
    return sorted(picked)


def _lrs(opt: torch.optim.Optimizer) -> list[float]:
    return [float(g["lr"]) for g in opt.param_groups]


def _jump(s: Any, k: int) -> list[float]:
    """The LRs at step ``k`` of a scheduler whose LR depends on the step number alone."""
    s.last_epoch = k
    values = s._get_closed_form_lr() if isinstance(s, _CLOSED_FORM) else s.get_lr()
    return [float(v) for v in values]


def lr_curve(
    make_optimizer: Callable[[], torch.optim.Optimizer],
    make_scheduler: Callable[[torch.optim.Optimizer], Any],
    total_steps: int | None,
    points: int = POINTS,
    max_exact: int = MAX_EXACT_STEPS,
) -> LRCurve:
    """The schedule's curve over its horizon (see the module docstring). ``make_scheduler`` raises ``SetupError``
    when the user's factory fails; an error while stepping is recorded in ``LRCurve.error``."""
    opt = make_optimizer()
    s = make_scheduler(opt)
    own = declared_horizon(s)
    if total_steps is not None:
        horizon, source = total_steps, "total_steps"
    elif own is not None:
        horizon, source = max(own[0], 1), f"the scheduler's horizon ({own[1]})"
    else:
        horizon, source = DEFAULT_HORIZON, "a default (declare `total_steps`)"
    curve = LRCurve(type(s).__name__, horizon, source)
    wanted = sample_steps(horizon, points)
    if isinstance(s, sched.ReduceLROnPlateau):
        curve.metric_based = True
        curve.steps, curve.lrs = [0], [_lrs(opt)]
        return curve
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "lr_scheduler.step() before optimizer.step()": there is no training here
        if type(s) in (*_CLOSED_FORM, *_GET_LR):
            _follow_closed_form(s, curve, wanted)
        else:
            _follow_step_by_step(s, opt, curve, wanted, max_exact)
    return curve


def _follow_closed_form(s: Any, curve: LRCurve, wanted: list[int]) -> None:
    ok = -1
    for k in wanted:
        try:
            row = _jump(s, k)
        except Exception:
            lo, hi = ok, k  # the first failing step lies in (lo, hi]: the LR is a function of the step number
            while hi - lo > 1:
                mid = (lo + hi) // 2
                try:
                    _jump(s, mid)
                    lo = mid
                except Exception:
                    hi = mid
            try:
                _jump(s, hi)
            except Exception as e:
                curve.error, curve.error_step = f"{type(e).__name__}: {e}", hi
            return
        curve.steps.append(k)
        curve.lrs.append(row)
        ok = k


def _follow_step_by_step(s: Any, opt: torch.optim.Optimizer, curve: LRCurve, wanted: list[int], max_exact: int) -> None:
    last = min(wanted[-1], max_exact - 1)
    at = set(wanted)
    for k in range(last + 1):
        if k:
            try:
                s.step()
            except Exception as e:
                curve.error, curve.error_step = f"{type(e).__name__}: {e}", k
                return
        if k in at or k == last:
            row = _lrs(opt)
            if not all(math.isfinite(v) for v in row):
                curve.error, curve.error_step = f"the LR is {row[0]}", k
                return
            curve.steps.append(k)
            curve.lrs.append(row)
    curve.truncated = last < wanted[-1]
