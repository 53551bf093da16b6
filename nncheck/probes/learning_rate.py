"""learning-rate: judge the user's learning rate from what it does, with an LR range test for bounds and advice."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from nncheck.kit import Context, Findings, Result, bar_plot, line_plot, param, probe
from nncheck.report import skipped
from nncheck.trace import TRAIN_EVAL_EVERY, eval_losses

# The steepest-descent search skips the first SKIP_WINDOWS x 1/(1 - smoothing) steps (25 of 100 with 0.98), where
# the bias-corrected EMA still averages a handful of losses and wobbles with the batches (torch-lr-finder skips 10
# of 100 points; measured here: with 10, flat starts gave "suggestions" of 4e-7 on examples/imbalanced.py).
SKIP_WINDOWS = 0.5
# Below this the learning rate is never suggested (the default start of the range test; fastai's lr_find starts
# at 1e-7 too): an LR that small means the loss is broken at any LR, not that the LR is too high.
MIN_SUGGESTED_LR = 1e-7
# cs231n ("Neural Networks Part 3", https://cs231n.github.io/neural-networks-3/#ratio): the update / weight norm
# ratio should be around 1e-3.
HEALTHY_UPDATE_RATIO = 1e-3
ADAM_FAMILY = ("Adam", "AdamW", "NAdam", "RAdam", "Adamax", "SparseAdam")


@dataclass(frozen=True)
class Params:
    """Parameters of learning-rate (`[tool.nncheck.probes.learning-rate]`)."""

    # fastai's lr_find sweeps 1e-7..10 in 100 steps (12.4 per decade). The full budget sweeps 1e-6..10 in 50 steps
    # (7.1 per decade), the fast one 1e-4..10 in 25 (5 per decade), each with the EMA window scaled to the same LR
    # decades (0.98^(12.4/7.1) = 0.966, 0.98^(12.4/5) = 0.951); no optimizer of checks/ or examples/ moves the loss
    # below 1e-6. The fast budget runs the sweep only when the confirm run is in doubt (sweep_when_clear).
    sweep_start: float = param(
        1e-06,
        fast=1e-4,
        source="L. Smith, Cyclical Learning Rates for Training Neural Networks (2015, arXiv:1506.01186); fastai "
        "lr_find's start_lr is 1e-7. The starts keep every verdict on checks/ and examples/ (seeds 0-2).",
    )
    sweep_end: float = param(10.0, source="fastai lr_find's end_lr (torch-lr-finder's default too).")
    sweep_steps: int = param(
        50,
        fast=25,
        source="Half of fastai lr_find's num_it (100) over one decade less; the sweep stops earlier when it diverges.",
    )
    smoothing: float = param(
        0.966,
        fast=0.951,
        source="fastai lr_find's EMA factor 0.98 (bias-corrected) at 12.4 steps per decade, scaled to the same window "
        "in LR decades: 0.98^(12.4/7.1) = 0.966, fast 0.98^(12.4/5) = 0.951.",
    )
    # The sweep reads each loss minus its batch's loss at init (batches of different difficulty do not look like
    # divergence) against S = max(the drop the sweep achieved, the spread max - min of the per-batch init losses).
    # fastai stops at 4x the minimum, a ratio that means nothing when the loss can be negative (PoissonNLLLoss with
    # log_input=True: -2.3 at init on checks/lr_poisson_counts_ok.py); with S = the drop, a rise of 1 x S is "all
    # the progress undone", where fastai's 4x stops after a 4x drop (CE 2.3 -> 0.5). The spread term keeps flat
    # starts from stopping on batch noise.
    diverge_rise: float = param(
        1.0,
        source="A rise of 1 x S = all the progress undone (shift-invariant form of fastai lr_find's 4x-the-minimum "
        "stop). Measured (seeds 0-2): correct checks/ + examples/ diverge at 0.11-2.7 (full) / 0.21-10 (fast) or "
        "not at all, always >= 10x the user's LR; checks/lr_poisson_counts_ok.py at 0.74-1.5, the same with the "
        "loss shifted by +10 (tests/setups/poisson_shift10.py).",
    )
    # The usual rule "a loss above 4x the first loss" is L_t - L_0 > 3 L_0; the same factor on S is shift-invariant.
    spike_rise: float = param(
        3.0,
        source="The rule 'loss above 4x the first loss' (L_t - L_0 > 3 L_0) with S for L_0. Measured (max excess / "
        "S, seeds 0-2, both budgets): correct checks/ + examples/ <= 0.13, except checks/ob_label_smoothing_ok.py "
        "<= 1.01 (label smoothing leaves a small S); checks/lr_adam_too_high.py 420-3300; checks/lr_sgd_too_high.py "
        ">= 5e10 or non-finite.",
    )
    confirm_steps: int = param(
        30,
        fast=10,
        source="Measured (seeds 0-2): every correct setup of checks/ and examples/ lowers its loss in this many "
        "steps at its own LR (by >= 3.5% in 30 steps, >= 1.1% in 10).",
    )
    sweep_when_clear: bool = param(
        True,
        fast=False,
        source="Run the range test even when the confirm run settles the verdict (it then gives advice, a suggested "
        "LR, and the divergence bound). The fast budget runs it only when 'too low' is open (the loss moved by less "
        "than too_low_change with updates below low_update_ratio): 'too high' is judged on the confirm run alone "
        "(non-finite, spike, rise), which catches every too-high setup of checks/ (seeds 0-2).",
    )
    too_low_change: float = param(
        0.01,
        source="'Barely moves'. Measured (seeds 0-2): checks/lr_sgd_too_low.py (SGD 1e-6) moves by 2e-7..1.1e-6; "
        "the slowest correct setup, checks/ok_deepsets_point_cloud.py, by 1.1% (fast) / 3.5% (full).",
    )
    # The larger LR is where the sweep's loss, averaged over one pass of the cycled batches, is lowest (the EMA
    # lags by ~1/(1 - 0.98) = 50 steps, 4 decades, and flattens the drop); it is tried at a third of that LR first.
    larger_factor: float = param(
        10.0,
        source="One decade: a 'too low' verdict needs a >= 10x larger LR that trains clearly. Measured (seeds 0-2): "
        "the LR found is 5e5-2e6x the user's on checks/lr_sgd_too_low.py, 2e4-8e4x on checks/ob_sgd_lr_too_low.py.",
    )
    clear_drop: float = param(
        0.05,
        source="5x too_low_change. Measured (seeds 0-2): the larger LR lowers the loss by 31-92% on "
        "checks/lr_sgd_too_low.py, 39-99.9% on checks/ob_sgd_lr_too_low.py; on tests/setups/vae.py (seed 0, full "
        "budget) the sampling stops the sweep at 1.2e-7 while the user's LR lowers the loss by 9.4%.",
    )
    rise_tol: float = param(
        0.05,
        source="Measured (seeds 0-2, both budgets): every correct setup of checks/ and examples/ falls in the "
        "confirm run; checks/lr_sgd_too_high.py rises by >= 16% or goes non-finite.",
    )
    low_update_ratio: float = param(
        1e-4,
        source="cs231n, Neural Networks Part 3 (https://cs231n.github.io/neural-networks-3/#ratio): the ratio should "
        "be ~1e-3; 10x below. Measured (median over modules, first step, seeds 0-2): correct checks/ + examples/ "
        "4.1e-3..3.7e-2; checks/lr_sgd_too_low.py 5e-8; checks/ob_sgd_lr_too_low.py 5e-7.",
    )


# ---------------------------------------------------------------------------------------------- optimizer LRs
def group_lrs(opt: torch.optim.Optimizer) -> list[float]:
    """Every param group's LR (a float, also when the optimizer holds it as a tensor)."""
    return [float(g["lr"]) for g in opt.param_groups]


def lr_ratios(lrs: list[float]) -> list[float]:
    """Each group's LR relative to group 0's (all 1 when group 0's LR is 0)."""
    base = lrs[0]
    return [lr / base if base > 0 else 1.0 for lr in lrs]


def set_lr(opt: torch.optim.Optimizer, lr: float, ratios: list[float]) -> None:
    """Set group 0's LR to ``lr`` and every other group's to ``lr`` times its ratio (tensor LRs stay tensors)."""
    for g, r in zip(opt.param_groups, ratios):
        if isinstance(g["lr"], torch.Tensor):
            g["lr"].fill_(lr * r)
        else:
            g["lr"] = lr * r


# ---------------------------------------------------------------------------------------------- range test
@dataclass
class Sweep:
    lrs: list[float] = field(default_factory=list)
    raw: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    diverged_at: int | None = None  # index of the step where the sweep stopped (None: it reached the end)
    excess: list[float] = field(default_factory=list)  # smoothed loss minus each batch's init loss

    @property
    def divergence_lr(self) -> float | None:
        return None if self.diverged_at is None else self.lrs[self.diverged_at]


def sweep_lrs(start: float, end: float, steps: int) -> list[float]:
    """``steps`` LRs spaced exponentially from ``start`` to ``end``."""
    if steps < 2:
        return [start]
    return [start * (end / start) ** (i / (steps - 1)) for i in range(steps)]


def spread(init_losses: list[float]) -> float:
    """Max - min of the per-batch losses at init: the loss's own scale of batch-to-batch variation."""
    return max(init_losses) - min(init_losses) if init_losses else 0.0


def range_test(
    ctx: Context, batches: list[Any], lrs: list[float], beta: float, diverge_rise: float, init_losses: list[float]
) -> Sweep:
    """Smith's LR range test on a fresh copy with the user's optimizer class and hyperparameters.

    Shift-invariant stop rule: the EMA runs on each loss minus its batch's init loss (``init_losses``), and the
    sweep stops when that excess rises ``diverge_rise`` x max(drop so far, noise) above its minimum. The noise is the
    spread of the per-batch init losses or, when larger, the range of the excess over the sweep's first pass over the
    batches (at LRs ~1e-6 the weights hardly move, so that range is the loss's own randomness: dropout, sampling);
    the stop rule starts after that pass.
    """
    model = ctx.fresh_model(train=True)
    opt = ctx.optimizer(model)
    ratios = lr_ratios(group_lrs(opt))
    sweep = Sweep()
    base = sum(init_losses) / len(init_losses)
    noise = spread(init_losses)
    first_pass: list[float] = []
    avg, best = 0.0, math.inf
    for i, lr in enumerate(lrs):
        ctx.check_time()
        set_lr(opt, lr, ratios)
        b = i % len(batches)
        loss = ctx.train_step(model, opt, batches[b])
        sweep.lrs.append(lr)
        sweep.raw.append(loss)
        if not math.isfinite(loss):
            sweep.smoothed.append(math.inf)
            sweep.excess.append(math.inf)
            sweep.diverged_at = i
            break
        avg = beta * avg + (1 - beta) * (loss - init_losses[b])
        excess = avg / (1 - beta ** (i + 1))
        sweep.excess.append(excess)
        sweep.smoothed.append(base + excess)
        best = min(best, excess)
        if i < len(batches):
            first_pass.append(loss - init_losses[b])
            noise = max(noise, max(first_pass) - min(first_pass))
            continue
        if excess - best > diverge_rise * max(-best, noise):
            sweep.diverged_at = i
            break
    return sweep


def steepest_descent(sweep: Sweep, skip: int) -> float | None:
    """The LR where the smoothed loss falls fastest per decade, searched after ``skip`` steps and before the
    smoothed minimum."""
    finite = [i for i, s in enumerate(sweep.smoothed) if math.isfinite(s)]
    if len(finite) < 3:
        return None
    skip = min(skip, max(finite[-1] - 2, 0))
    # the minimum after the skipped start (the first bias-corrected values are single batches' losses)
    end = min((i for i in finite if i >= skip), key=lambda i: sweep.smoothed[i])
    start = min(skip, max(end - 2, 0))
    if end - start < 2:
        return None
    x = np.log10(np.array(sweep.lrs[start : end + 1]))
    y = np.array(sweep.smoothed[start : end + 1])
    grad = np.gradient(y, x)
    return float(sweep.lrs[start + int(np.argmin(grad))])


def cycle_means(raw: list[float], n: int) -> list[float]:
    """Mean of the raw losses over the ``n`` steps ending at each step (one pass over the cycled batches, so
    the batches' different difficulty cancels out; less lag than the EMA). ``nan`` before the first full cycle."""
    out = []
    for i in range(len(raw)):
        window = raw[i - n + 1 : i + 1] if i >= n - 1 else []
        out.append(sum(window) / n if window and all(math.isfinite(v) for v in window) else math.nan)
    return out


def drop_above(sweep: Sweep, n: int, user_lr: float, factor: float) -> tuple[float, float | None, float | None]:
    """From the sweep's cycle means: (loss at the user's LR, best loss at LRs >= factor x user LR, that LR).
    The loss at the user's LR is that of the last full cycle whose LRs are <= user LR (the first cycle when the
    user's LR is below the sweep)."""
    means = cycle_means(sweep.raw, n)
    first = min(n - 1, len(means) - 1)
    upto = [i for i in range(first, len(means)) if sweep.lrs[i] <= user_lr and math.isfinite(means[i])]
    ref = means[upto[-1]] if upto else means[first]
    above = [
        i
        for i in range(first, len(means))
        if sweep.lrs[i - min(n, i + 1) + 1] >= factor * user_lr and math.isfinite(means[i])
    ]
    if not above:
        return ref, None, None
    i = min(above, key=lambda j: means[j])
    return ref, means[i], sweep.lrs[i]


# ---------------------------------------------------------------------------------------------- confirm run
@dataclass
class Confirm:
    before: float
    after: float
    losses: list[float]
    update_ratios: dict[str, float]
    init_losses: list[float] = field(default_factory=list)  # per batch, at init, dropout off

    @property
    def finite(self) -> bool:
        return math.isfinite(self.after) and all(math.isfinite(v) for v in self.losses)

    @property
    def starts_finite(self) -> bool:
        """The loss at init and the first training loss are finite (else no LR can help)."""
        return math.isfinite(self.before) and bool(self.losses) and math.isfinite(self.losses[0])

    @property
    def change(self) -> float:
        """Relative decrease of the loss (positive: it fell)."""
        return (self.before - self.after) / abs(self.before) if self.before else 0.0


def mean_loss(ctx: Context, model: nn.Module, batches: list[Any]) -> float:
    """Mean loss over ``batches`` without gradient, dropout off (``nncheck.trace.eval_losses``)."""
    losses = eval_losses(ctx, model, batches)
    return sum(losses) / len(losses)


def module_params(model: nn.Module) -> Iterable[tuple[str, list[nn.Parameter]]]:
    """Modules with parameters of their own (weight and bias of one module together), by qualified name."""
    for name, m in model.named_modules():
        ps = [p for p in m.parameters(recurse=False) if p.requires_grad]
        if ps:
            yield name or "<model>", ps


def update_ratios(model: nn.Module, before: dict[str, list[torch.Tensor]]) -> dict[str, float]:
    """||update|| / ||weights|| per module after one step (cs231n's ~1e-3 rule of thumb)."""
    out: dict[str, float] = {}
    for name, ps in module_params(model):
        old = before[name]
        upd = math.sqrt(sum(float((p.detach() - o).double().pow(2).sum()) for p, o in zip(ps, old)))
        norm = math.sqrt(sum(float(o.double().pow(2).sum()) for o in old))
        out[name] = upd / norm if norm > 0 else math.inf if upd > 0 else 0.0
    return out


def confirm_from_trace(ctx: Context, steps: int) -> Confirm:
    """The confirm run at the user's own LR: the first ``steps`` steps of the shared training trace (its own run when
    ``steps`` is not a multiple of the trace's checkpoint interval)."""
    trace = ctx.trace(0)
    if steps % TRAIN_EVAL_EVERY:
        return confirm_run(ctx, trace.batches, steps)
    cp = ctx.trace_checkpoint(steps)
    event = trace.event_within(steps)
    if event is not None and event.step == 0 and event.stage != "update":
        raise NonFiniteLoss("at init, before any step")
    return Confirm(
        before=trace.checkpoints[0].train_mean,
        after=cp.train_mean if cp is not None else math.nan,
        losses=trace.losses_within(steps),
        update_ratios=dict(trace.update_ratios),
        init_losses=list(trace.init_losses),
    )


def confirm_run(ctx: Context, batches: list[Any], steps: int, lr: float | None = None) -> Confirm:
    """``steps`` steps of the user's optimizer from a fresh copy, at the user's own LR (or group 0 at ``lr``, the
    other groups keeping their ratios); the update/weight ratios of the first step."""
    ctx.seed_all()
    model = ctx.fresh_model(train=True)
    opt = ctx.optimizer(model)
    if lr is not None:
        set_lr(opt, lr, lr_ratios(group_lrs(opt)))
    init_losses = eval_losses(ctx, model, batches)
    before = sum(init_losses) / len(init_losses)
    snapshot = {name: [p.detach().clone() for p in ps] for name, ps in module_params(model)}
    losses: list[float] = []
    ratios: dict[str, float] = {}
    for i in range(steps):
        ctx.check_time()
        losses.append(ctx.train_step(model, opt, batches[i % len(batches)]))
        if i == 0:
            ratios = update_ratios(model, snapshot)
        if not math.isfinite(losses[-1]):
            break
    after = mean_loss(ctx, model, batches) if math.isfinite(losses[-1]) else math.nan
    return Confirm(before, after, losses, ratios, init_losses)


def max_spike(confirm: Confirm, scale: float) -> tuple[int, float]:
    """(step, excess / scale) of the training loss furthest above its batch's init loss."""
    n = len(confirm.init_losses)
    excess = [loss - confirm.init_losses[i % n] for i, loss in enumerate(confirm.losses)] if n else []
    if not excess or scale <= 0:
        return 0, 0.0
    k = int(np.argmax(excess))
    return k, excess[k] / scale


def loss_scale(confirm: Confirm, sweep: Sweep) -> float:
    """S = max(drop the sweep achieved below init, spread of the per-batch init losses): shift-invariant."""
    finite = [v for v in sweep.excess if math.isfinite(v)]
    drop = -min(finite) if finite else 0.0
    return max(drop, spread(confirm.init_losses))


# ---------------------------------------------------------------------------------------------- measurement
@dataclass
class Measurement:
    """What the confirm run at the user's LR and the range test measured."""

    optimizer: str
    group_lrs: list[float]
    confirm: Confirm
    sweep: Sweep | None  # None: skipped (the fast budget, when the confirm run clearly trains)
    suggestion: float | None  # steepest descent of the smoothed sweep
    ref: float  # the sweep's cycle-mean loss at the user's LR
    best_above: float | None  # the sweep's best cycle-mean loss at LRs >= larger_factor x the user's
    best_above_lr: float | None
    scale: float  # S, the loss's own scale (loss_scale)
    spike_step: int
    spike: float  # the training loss furthest above its batch's init loss, in units of S
    larger_lr: float | None = None  # a larger LR that lowered the loss clearly (tried only when the loss is still)
    larger: Confirm | None = None

    @property
    def user_lr(self) -> float:
        return self.group_lrs[0]

    @property
    def div_lr(self) -> float | None:
        return self.sweep.divergence_lr if self.sweep is not None else None

    @property
    def steps_run(self) -> int:
        return len(self.confirm.losses)

    @property
    def median_ratio(self) -> float | None:
        """Median update/weight ratio of the first step over the modules (None when no module has one)."""
        ratios = [v for v in self.confirm.update_ratios.values() if math.isfinite(v) and v > 0]
        # statistics.median, not np.median: the latter imports numpy.ma on first use (~10 ms, 20+ small steps)
        return float(statistics.median(ratios)) if ratios else None

    def measured(self) -> dict[str, Any]:
        c = self.confirm
        out: dict[str, Any] = {
            "optimizer": self.optimizer,
            "user_lr": self.user_lr,
            "group_lrs": self.group_lrs,
            "suggested_lr": self.suggestion,
            "divergence_lr": self.div_lr,
            "sweep_steps_run": len(self.sweep.lrs) if self.sweep is not None else 0,
            "confirm_steps_run": self.steps_run,
            "loss_before": c.before,
            "loss_after": c.after,
            "relative_change": c.change,
            "sweep_cycle_loss_at_user_lr": self.ref,
            "sweep_best_cycle_loss_at_larger_lr": self.best_above,
            "sweep_best_larger_lr": self.best_above_lr,
            "update_ratio": c.update_ratios,
        }
        if self.median_ratio is not None:
            out["update_ratio_median"] = self.median_ratio
        out.update({"loss_scale": self.scale, "max_spike_over_scale": self.spike})
        if self.larger is not None:
            out.update({"larger_lr_tried": self.larger_lr, "larger_lr_change": self.larger.change})
        return out


class NonFiniteLoss(Exception):
    """The loss is non-finite before the LR can matter (the message says where)."""


def measure(ctx: Context, p: Params, batches: list[Any], group_lrs: list[float], optimizer: str) -> Measurement:
    """The confirm run at the user's LR (the shared trace), then the range test, and the numbers the verdict reads.
    ``NonFiniteLoss`` when the loss is non-finite at init or at the sweep's smallest LR."""
    confirm = confirm_from_trace(ctx, p.confirm_steps)
    if not confirm.starts_finite:
        raise NonFiniteLoss("at init, before any step")
    if not p.sweep_when_clear and not may_be_too_low(confirm, p):
        scale = max(spread(confirm.init_losses), confirm.before - confirm.after)
        spike_step, spike = max_spike(confirm, scale)
        return Measurement(optimizer, group_lrs, confirm, None, None, math.nan, None, None, scale, spike_step, spike)
    lrs = sweep_lrs(p.sweep_start, p.sweep_end, p.sweep_steps)
    sweep = range_test(ctx, batches, lrs, p.smoothing, p.diverge_rise, confirm.init_losses)
    if not math.isfinite(sweep.raw[0]):
        raise NonFiniteLoss(f"at the smallest LR of the range test ({lrs[0]:.3g})")
    skip = round(SKIP_WINDOWS / (1 - p.smoothing)) if p.smoothing < 1 else 0
    ref, best_above, best_above_lr = drop_above(sweep, len(batches), group_lrs[0], p.larger_factor)
    scale = loss_scale(confirm, sweep)
    spike_step, spike = max_spike(confirm, scale)
    return Measurement(
        optimizer=optimizer,
        group_lrs=group_lrs,
        confirm=confirm,
        sweep=sweep,
        suggestion=steepest_descent(sweep, skip),
        ref=ref,
        best_above=best_above,
        best_above_lr=best_above_lr,
        scale=scale,
        spike_step=spike_step,
        spike=spike,
    )


def may_be_too_low(confirm: Confirm, p: Params) -> bool:
    """The run at the user's LR leaves "too low" open: the loss barely moved and the first updates are tiny. Only
    then does the verdict need the range test (a larger LR to try); "too high" is judged on the run itself."""
    ratios = [v for v in confirm.update_ratios.values() if math.isfinite(v) and v > 0]
    tiny = not ratios or statistics.median(ratios) < p.low_update_ratio
    return confirm.finite and abs(confirm.change) < p.too_low_change and tiny


def try_larger_lrs(ctx: Context, batches: list[Any], m: Measurement, p: Params) -> None:
    """Confirm runs of the same length at a third of the sweep's best larger LR (at least ``larger_factor`` x the
    user's), then at that LR: the first that lowers the loss clearly is kept in ``m``."""
    assert m.best_above_lr is not None
    floor = p.larger_factor * m.user_lr
    for candidate in dict.fromkeys((max(m.best_above_lr / 3, floor), m.best_above_lr)):
        trial = confirm_run(ctx, batches, p.confirm_steps, lr=candidate)
        if clearly_lowers(trial, p):
            m.larger_lr, m.larger = candidate, trial
            return


# ---------------------------------------------------------------------------------------------- judgement
def valid_lr(lr: float) -> bool:
    return math.isfinite(lr) and lr > 0


def clearly_lowers(run: Confirm, p: Params) -> bool:
    return run.finite and run.change >= p.clear_drop


def still(m: Measurement, p: Params) -> bool:
    """The loss barely moved at the user's LR."""
    return abs(m.confirm.change) < p.too_low_change


def small_updates(m: Measurement, p: Params) -> bool:
    """The first step's update/weight ratio is far below cs231n's ~1e-3."""
    return (m.median_ratio or 0.0) < p.low_update_ratio


def too_high_reason(m: Measurement, p: Params) -> str | None:
    """Why the user's LR is too high: evidence at the user's own LR first, then the range test's bound."""
    c = m.confirm
    if not c.finite:
        return f"the loss became non-finite after {m.steps_run} steps at your LR"
    if m.spike > p.spike_rise:
        return spike_text(m, p)
    if -c.change > p.rise_tol:
        return f"the loss rose from {c.before:.4g} to {c.after:.4g} (+{-c.change:.0%}) in {m.steps_run} steps"
    # the sweep's bound counts only when the run at the user's LR does not contradict it: a stochastic loss (a VAE's
    # sampling, tests/setups/vae.py) can trip the sweep's divergence rule in its first steps while the user's own LR
    # lowers the loss clearly, which is the stronger evidence
    if m.div_lr is not None and m.user_lr >= m.div_lr and c.change < p.clear_drop:
        return f"your LR is at or above where the range test diverges ({fmt(m.div_lr)})"
    return None


def wants_larger_lr(m: Measurement, p: Params) -> bool:
    """Worth confirm runs at a larger LR: not too high, the loss is still, the updates are tiny and the sweep did
    better above."""
    return (
        too_high_reason(m, p) is None
        and still(m, p)
        and small_updates(m, p)
        and m.best_above is not None
        and m.best_above_lr is not None
        and m.best_above < m.ref
    )


def judge(m: Measurement, p: Params, numerics_cmd: str) -> Findings:
    """Too high (non-finite, a spike, a rise, or above the divergence LR), too low (still while a >= 10x larger LR
    clearly trains: ``m.larger``), else a pass with notes on what looked odd."""
    f = Findings(measured=m.measured(), series=plots(m))
    below = {"user_lr_below": m.div_lr} if m.div_lr is not None else {}
    reason = too_high_reason(m, p)
    if reason:
        f.expected = {"loss_change": f"falls (>= -{p.rise_tol:.0%})", **below}
        f.fail(too_high_message(m, p, reason), too_high_hint(m, numerics_cmd))
    elif m.larger is not None:
        f.expected = {"loss_change_min": p.too_low_change, "no_10x_larger_lr_lowering_it_by": p.clear_drop}
        f.fail(too_low_message(m, p), too_low_hint(m))
    else:
        f.expected = {"loss_change": "falls, finite", **below}
        if m.div_lr is not None and m.user_lr >= m.div_lr:
            f.note(
                f"the range test stopped at {fmt(m.div_lr)}, below your LR, but your LR lowered the loss by "
                f"{m.confirm.change:.1%} in {m.steps_run} steps: the sweep's stop was noise (a stochastic loss?), "
                "not divergence"
            )
        if still(m, p):
            why = (
                f"the first step's update/weight ratio is {m.median_ratio or 0.0:.1e}, a healthy size (cs231n: ~1e-3)"
                if not small_updates(m, p)
                else "no 10x larger LR lowered it clearly either"
            )
            f.note(
                f"the loss moved by only {pct(-m.confirm.change)} in {m.steps_run} steps, but {why}: the learning "
                "rate is probably not what holds training back (a plateau at init, or see overfit-batch)"
            )
    return f


# ---------------------------------------------------------------------------------------------- wording
def fmt(lr: float | None) -> str:
    return "none" if lr is None else f"{lr:.3g}"


def pct(change: float) -> str:
    """A relative change as a percentage, or in scientific notation when it is tiny."""
    return f"{change:+.2%}" if abs(change) >= 1e-3 or change == 0 else f"{change:+.1e}"


def lr_line(opt_name: str, lr: float) -> str:
    return f"`lambda params: torch.optim.{opt_name}(params, lr={lr:.2g}, ...)` (keep your other arguments)"


def divergence_text(div_lr: float | None, sweep_end: float) -> str:
    return f"diverges at {fmt(div_lr)}" if div_lr is not None else f"did not diverge up to {sweep_end:.3g}"


def advice(m: Measurement, p: Params) -> str:
    if m.sweep is None:
        return "range test skipped (the fast budget runs it only when the LR may be too low)"
    divergence = divergence_text(m.div_lr, p.sweep_end)
    if m.suggestion is None:
        return f"range test: {divergence}"
    return f"range test: steepest descent at {fmt(m.suggestion)}, {divergence}"


def spike_text(m: Measurement, p: Params) -> str:
    c, k = m.confirm, m.spike_step
    b = k % len(c.init_losses)
    return (
        f"the training loss on batch {b} jumped from {c.init_losses[b]:.4g} at init to {c.losses[k]:.4g} at step "
        f"{k} ({m.spike:.3g}x the loss's scale {m.scale:.3g}, more than {p.spike_rise:g}x)"
    )


def too_high_message(m: Measurement, p: Params, reason: str) -> str:
    ratio = m.median_ratio
    ratio_text = f"; update/weight ratio {ratio:.2g} after one step (cs231n: ~1e-3)" if ratio else ""
    return f"LR {m.user_lr:.3g} too high: {reason}{ratio_text}; {advice(m, p)}"


def too_high_hint(m: Measurement, numerics_cmd: str) -> str:
    # a decade below the user's LR and the divergence LR, and not above the steepest descent
    div_lr = m.div_lr
    target = max(min(v for v in (m.user_lr / 10, div_lr and div_lr / 10, m.suggestion) if v), MIN_SUGGESTED_LR)
    usual = f" ({m.optimizer} usually trains at 1e-4..3e-3)" if m.optimizer in ADAM_FAMILY else ""
    return (
        f"Lower the learning rate of {m.optimizer} about {m.user_lr / target:.3g}x: {lr_line(m.optimizer, target)}"
        f"{usual}. If the loss is non-finite even at small LRs, run `{numerics_cmd}`."
    )


def too_low_message(m: Measurement, p: Params) -> str:
    assert m.larger is not None and m.larger_lr is not None
    return (
        f"LR {m.user_lr:.3g} too low: the loss changed by {pct(-m.confirm.change)} in {m.steps_run} steps, while LR "
        f"{m.larger_lr:.3g} ({m.larger_lr / m.user_lr:.3g}x yours, where the range test did best) lowered it by "
        f"{m.larger.change:.1%} in as many steps; update/weight ratio {m.median_ratio or 0.0:.1e} (cs231n: ~1e-3); "
        f"{advice(m, p)}"
    )


def too_low_hint(m: Measurement) -> str:
    assert m.larger_lr is not None
    return (
        f"Raise the learning rate of {m.optimizer} about {m.larger_lr / m.user_lr:.3g}x: "
        f"{lr_line(m.optimizer, m.larger_lr)}."
    )


def passed_message(m: Measurement, p: Params) -> str:
    c = m.confirm
    return f"LR {m.user_lr:.3g} trains: loss {c.before:.4g} -> {c.after:.4g} in {m.steps_run} steps; {advice(m, p)}"


def plots(m: Measurement) -> dict[str, Any]:
    sweep, confirm = m.sweep, m.confirm
    confirm_curves: dict[str, Any] = {"your optimizer": confirm.losses}
    if m.larger is not None:
        confirm_curves[f"LR {m.larger_lr:.2g}"] = m.larger.losses
    names = list(confirm.update_ratios)
    out: dict[str, Any] = {}
    if sweep is not None:
        out["lr_range"] = line_plot(
            "LR range test (loss while the LR grows)",
            {"smoothed (EMA)": (sweep.lrs, sweep.smoothed), "raw": (sweep.lrs, sweep.raw)},
            xlabel="learning rate",
            xscale="log",
            marks={"your LR": m.user_lr, "suggested": m.suggestion, "diverges": m.div_lr},
        )
    return out | {
        "confirm": line_plot("Loss at your LR", confirm_curves),
        "update_ratio": bar_plot(
            f"Update / weight norm after one step (cs231n: ~{HEALTHY_UPDATE_RATIO:g})",
            names,
            {"update/weight": [confirm.update_ratios[n] for n in names]},
            xlabel="module",
            ylabel="||update|| / ||weight||",
            yscale="log",
            refs={"cs231n ~1e-3": HEALTHY_UPDATE_RATIO},
        ),
    }


def bad_lr(user_lr: float, optimizer: str) -> Result:
    f = Findings(measured={"user_lr": user_lr, "optimizer": optimizer}, expected={"user_lr": "a finite number > 0"})
    f.fail(
        f"the optimizer's learning rate is {user_lr}",
        f"Give the optimizer a positive finite LR: {lr_line(optimizer, 1e-3)}.",
    )
    return f.result("")


def not_an_lr_problem(ctx: Context, user_lr: float, optimizer: str, where: str) -> Result:
    """The loss is non-finite before the LR can matter: a numerics or data bug, not a learning-rate one."""
    find = ctx.rerun("numerics", "data")
    return skipped(
        f"the loss is non-finite {where}: not a learning-rate problem (find the cause with `{find}`)",
        measured={"user_lr": user_lr, "optimizer": optimizer, "non_finite_loss": where},
        hint=f"Find where the NaN/inf comes from with `{find}`, then rerun `{ctx.rerun('learning-rate')}`.",
    )


# ---------------------------------------------------------------------------------------------- probe
@probe("learning-rate", title="Learning rate", order=70, params=Params)
def learning_rate(ctx: Context, p: Params) -> Result:
    """Checks that the optimizer's learning rate trains: not diverging, not stalling.

    What it does:
        (a) A confirm run: the first {confirm_steps} steps of the shared training trace (your optimizer at your own
        LR, `param_groups[0]["lr"]`, or the peak of your `scheduler`'s curve when there is one, from a fresh copy,
        cycling the first 4 batches); the loss on those batches (dropout off) before and after. (b) An LR range
        test (L. Smith 2015, as fastai / torch-lr-finder do) on another fresh copy with your optimizer's class
        and hyperparameters: the LR grows exponentially from
        {sweep_start} to {sweep_end} over at most {sweep_steps} steps; each loss minus its batch's loss at init is
        smoothed (EMA {smoothing}, bias-corrected) and the sweep stops when it rises {diverge_rise} x S above its
        minimum, S = max(the drop the sweep achieved, the spread of the per-batch init losses): shift-invariant, so
        negative losses (Poisson NLL) work. Suggested LR = steepest descent of the smoothed curve; divergence LR =
        where the sweep stopped. A loss that is non-finite at init or at the sweep's smallest LR is not an LR
        problem: skipped, pointing at `--only numerics`. Several param groups keep their LR ratios to group 0. (c)
        The update / weight norm ratio per module after the first step at your LR (cs231n: ~1e-3 is healthy):
        reported, and a guard against calling a healthy LR "too low".

    Why is this bad?
        Too high, training diverges (NaN) or bounces at a high loss; too low, it crawls and looks like a model
        that cannot learn. Range-test suggestions alone are noisy (they move by orders of magnitude between
        seeds on small tasks), so the verdict comes from what happens at your own LR; the sweep only gives the
        divergence bound and advice.

    Thresholds:
        fail "too high" when the confirm run's loss becomes non-finite, when one of its training losses exceeds
        its batch's init loss by more than {spike_rise} x S (the old "4x the first loss" for losses with
        floor 0, made shift-invariant), when it ends more than {rise_tol} (relative) above where it started, or
        when your LR is at or above the divergence LR while the confirm run lowered the loss by less than
        {clear_drop}. Never suggests an LR below 1e-7.
        fail "too low" when the loss moves by less than {too_low_change} (relative) in the confirm run while an
        LR >= {larger_factor} x yours, taken from the sweep (where its loss averaged over one pass of the
        batches is lowest), lowers it by at least {clear_drop} in a confirm run of the same length, and the
        median update/weight ratio of your first step is below {low_update_ratio} (10x under cs231n's 1e-3).
        Never warns: healthy Adam 1e-3 and SGD-momentum 0.1 setups pass. Measured on checks/ and examples/
        (seeds 0-2): correct setups fall by >= 1.1% (fast) / 3.5% (full) and spike <= 1.0 S; the broken ones
        rise, spike 420-3300 S or go non-finite (too high), or move by 1e-6 while 10x+ larger LRs lower the loss
        31-99.9%.

    How to fix:
        Set the LR in the optimizer factory near the suggestion (or a few times below the divergence LR):
        `optimizer = lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9)`. With Adam, 1e-4 to 3e-3 is
        the usual range; with plain SGD, 1e-3 to 1e-1.

    Example:
        `optimizer = lambda p: torch.optim.SGD(p, lr=1e-6)` on an MLP: fail, "LR 1e-06 too low: the loss changed
        by -1.1e-06 in 30 steps, while LR 0.519 (5.19e+05x yours, where the range test did best) lowered it by
        85.3% in as many steps"; hint: `torch.optim.SGD(params, lr=0.52, ...)`.
    """
    trace = ctx.trace(0)
    batches, lrs, optimizer = trace.batches, trace.group_lrs, trace.optimizer
    if not lrs or not valid_lr(lrs[0]):
        return bad_lr(lrs[0] if lrs else math.nan, optimizer)
    try:
        m = measure(ctx, p, batches, lrs, optimizer)
    except NonFiniteLoss as e:
        return not_an_lr_problem(ctx, lrs[0], optimizer, str(e))
    if wants_larger_lr(m, p):
        try_larger_lrs(ctx, batches, m, p)
    f = judge(m, p, ctx.rerun("numerics"))
    curve = ctx.lr_curve()
    if curve is not None and ctx.peak_lrs() is not None:
        f.note(f"the LR judged is the peak of your {curve.kind} schedule; its first step's LR is {curve.lrs[0][0]:.3g}")
    return f.result(passed_message(m, p))
