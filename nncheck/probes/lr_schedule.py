"""lr-schedule: follow the setup's LR scheduler over the run (no training) and judge its curve."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from nncheck.kit import Context, Findings, ProbeSkip, Result, line_plot, param, probe
from nncheck.schedule import LRCurve

# Adam-family optimizers whose adaptive LR has a large variance in the first steps (Liu et al. 2020); RAdam corrects
# it itself and needs no warm-up.
NEEDS_WARMUP = ("Adam", "AdamW", "NAdam", "Adamax", "SparseAdam")
ATTENTION = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer, nn.Transformer)
# Points of the curve drawn in the HTML report.
PLOT_POINTS = 400


@dataclass(frozen=True)
class Params:
    """Parameters of lr-schedule (`[tool.nncheck.probes.lr-schedule]`)."""

    low_fraction: float = param(
        0.01,
        source="Karpathy, 'A Recipe for Training Neural Networks' (2019): 'be very careful with learning rate decay "
        "... don't trust LR decay defaults': a schedule built for another run length takes the LR to ~0 too early. "
        "Below 1% of its peak an LR no longer trains (two decades under a tuned LR).",
    )
    early_end: float = param(
        0.5,
        source="Karpathy's recipe (above): a run that spends its second half (or more) at < 1% of the peak LR "
        "trains for at most half its steps. Cosine / linear decays reach ~0 at the end of the run (Loshchilov & "
        "Hutter 2017, SGDR; Devlin et al. 2019, BERT's linear decay to 0 at the last step).",
    )
    max_restarts: int = param(
        10,
        source="SGDR (Loshchilov & Hutter 2017, arXiv:1608.03983) restarts a few times per run (T_0 = 1-10 epochs, "
        "T_mult = 2: 4-8 restarts in 200 epochs); a cosine or cyclic schedule sized in epochs but stepped per "
        "batch restarts once per (epochs x batches per epoch): hundreds of times.",
    )
    min_decay: float = param(
        0.1,
        source="A schedule sized in steps but stepped per epoch covers 1/(batches per epoch) of its curve: < 1% "
        "for a few hundred batches per epoch. Measured: checks/sched_cosine_per_epoch_horizon.py decays 0.001% over "
        "its run; every correct schedule of checks/ and examples/ decays by > 99.99% (cosine, OneCycle).",
    )
    warmup_start: float = param(
        0.5,
        source="Vaswani et al. 2017 (Attention Is All You Need, section 5.3: linear warm-up from 0 over 4000 steps); "
        "Liu et al. 2020 (On the Variance of the Adaptive Learning Rate and Beyond, arXiv:1908.03265): Adam's "
        "adaptive LR has a problematically large variance in the first steps; warm-up reduces it. A warm-up "
        "starts far below the peak (0, 1e-3 or 1/25 of it): an LR at >= half the peak at step 0 has none.",
    )


@dataclass
class Measurement:
    curve: LRCurve
    peak: float
    start: float
    peak_step: int
    dead_from: int | None  # the LR stays below low_fraction x peak from this step to the end
    restarts: int  # rises from below 10% to above 50% of the peak
    decay: float  # 1 - (smallest LR after the peak) / peak
    optimizer: str
    transformer: bool
    measured: dict[str, Any] = field(default_factory=dict)


def restarts(lrs: list[float], peak: float) -> int:
    """How many times the LR climbs back from below 10% to above 50% of the peak."""
    n, low = 0, False
    for lr in lrs:
        if lr < 0.1 * peak:
            low = True
        elif lr > 0.5 * peak and low:
            n, low = n + 1, False
    return n


def is_transformer(model: nn.Module) -> bool:
    return any(isinstance(m, ATTENTION) or "attention" in type(m).__name__.lower() for m in model.modules())


def measure(ctx: Context, curve: LRCurve, p: Params) -> Measurement:
    lrs = curve.group(0)
    peak = max(lrs)
    peak_at = lrs.index(peak)
    dead_from = None
    if lrs[-1] < p.low_fraction * peak:
        i = len(lrs) - 1
        while i > 0 and lrs[i - 1] < p.low_fraction * peak:
            i -= 1
        dead_from = curve.steps[i]
    after = lrs[peak_at:]
    return Measurement(
        curve=curve,
        peak=peak,
        start=lrs[0],
        peak_step=curve.steps[peak_at],
        dead_from=dead_from,
        restarts=restarts(lrs, peak),
        decay=1 - min(after) / peak if peak > 0 else 0.0,
        optimizer=type(ctx.optimizer(ctx.pristine_model())).__name__,
        transformer=is_transformer(ctx.pristine_model()),
    )


def judge(m: Measurement, p: Params) -> Findings:
    f = Findings()
    c = m.curve
    run = f"{c.horizon:,} steps" + ("" if c.horizon_from == "total_steps" else f" ({c.horizon_from})")
    declared = c.horizon_from == "total_steps"
    f.measured.update(
        scheduler=c.kind,
        horizon=c.horizon,
        horizon_from=c.horizon_from,
        peak_lr=m.peak,
        peak_step=m.peak_step,
        lr_at_step_0=m.start,
        lr_at_end=c.group(0)[-1],
        below_low_from=m.dead_from,
        restarts=m.restarts,
        decay=round(m.decay, 6),
    )
    f.expected.update(
        below_low_from=f">= {p.early_end:g} x horizon", restarts=f"<= {p.max_restarts}", decay=f">= {p.min_decay:g}"
    )
    f.series["lr"] = plot(m, p)
    if c.error is not None:
        f.fail(
            f"the scheduler raises at step {c.error_step:,} of the {run}: {c.error}; the real run would crash there",
            "Size the schedule for the whole run: steps = epochs x batches per epoch (`OneCycleLR(opt, max_lr, "
            "total_steps=epochs * len(loader))`), and step it once per batch.",
        )
    if m.dead_from is not None and m.dead_from < p.early_end * c.horizon:
        msg = (
            f"the LR falls below {p.low_fraction:.0%} of its peak ({m.peak:.3g}) at step {m.dead_from:,} and stays "
            f"there: {m.dead_from / c.horizon:.0%} into the {run}, so the rest of the run hardly trains"
        )
        hint = (
            "Size the decay for the real run: T_max / num_training_steps = total optimizer steps (epochs x batches "
            "per epoch), not epochs; Karpathy's recipe: don't trust LR decay defaults."
        )
        if declared:
            f.fail(msg, hint)
        else:
            f.warn(msg, hint + ' Declare the run\'s length: `nncheck = {"total_steps": N}`.')
    if m.restarts > p.max_restarts:
        period = c.horizon / (m.restarts + 1)
        f.add(
            "warn",
            f"the LR restarts {m.restarts} times over the {run} (every ~{period:,.0f} steps): a schedule sized in "
            "epochs stepped once per batch",
            "Give the scheduler a horizon in steps (T_max = epochs x batches per epoch), or step it once per epoch "
            "in your loop (nncheck steps it per batch: declare it per batch).",
        )
    if declared and 0 < m.decay < p.min_decay and m.dead_from is None:
        f.warn(
            f"the schedule ({c.kind}) hardly moves over the {run}: its LR ends {m.decay * 100:.2g}% below its peak; a "
            "schedule sized in steps but stepped once per epoch",
            "Step the scheduler once per batch (after optimizer.step()), or size it in epochs if you step it per "
            "epoch; `total_steps` counts optimizer steps.",
        )
    if m.optimizer in NEEDS_WARMUP and m.transformer and m.start >= p.warmup_start * m.peak:
        f.warn(
            f"no warm-up: {m.optimizer} on a transformer starts at {m.start:.3g}, {m.start / m.peak:.0%} of the peak "
            f"LR {m.peak:.3g} (advisory)",
            "Warm the LR up linearly over the first ~1-10% of the steps (Vaswani et al. 2017; Liu et al. 2020): "
            "`SequentialLR(opt, [LinearLR(opt, 1e-3, total_iters=w), CosineAnnealingLR(opt, T_max=N - w)], [w])`, "
            "or use RAdam.",
        )
    if c.truncated:
        f.note(f"{c.kind} has no closed form: followed step by step up to step {c.steps[-1]:,} of {c.horizon:,}")
    if not declared:
        f.note(f'the run\'s length is {c.horizon_from}; declare it: `nncheck = {{"total_steps": N}}`')
    return f


def plot(m: Measurement, p: Params) -> dict[str, Any]:
    c = m.curve
    every = max(1, len(c.steps) // PLOT_POINTS)
    idx = sorted(set(range(0, len(c.steps), every)) | {len(c.steps) - 1})
    curves: dict[str, Any] = {
        f"group {g}" if c.groups > 1 else "LR": ([c.steps[i] for i in idx], [c.lrs[i][g] for i in idx])
        for g in range(c.groups)
    }
    return line_plot(
        f"{c.kind} over {c.horizon:,} steps",
        curves,
        xlabel="optimizer step",
        ylabel="learning rate",
        marks={f"{p.early_end:.0%} of the run": p.early_end * c.horizon},
        refs={f"{p.low_fraction:.0%} of the peak": p.low_fraction * m.peak},
    )


# ---------------------------------------------------------------------------------------------- probe
@probe("lr-schedule", title="Learning-rate schedule", order=65, params=Params)
def lr_schedule(ctx: Context, p: Params) -> Result:
    """Checks the LR scheduler's curve over the whole run: no decay to ~0 long before the end, a horizon in steps.

    What it does:
        Builds your `scheduler(optimizer)` on an optimizer of its own (never stepped: no training step is spent)
        and follows it over the run, `nncheck = {"total_steps": N}` (else the horizon the scheduler declares, e.g.
        OneCycleLR's total_steps or CosineAnnealingLR's T_max): every step of the first 200, then 2000 steps
        spread over the run; schedulers whose LR is a function of the step (LambdaLR, OneCycleLR, cosine, step,
        linear...) are evaluated at those steps directly, others (SequentialLR, your own) stepped one by one. The
        curve is drawn in the HTML report. Other probes train at the schedule's peak LR (learning-rate judges the
        peak, not the first warm-up step). Skips without a `scheduler` and for ReduceLROnPlateau.

    Why is this bad?
        "Don't trust LR decay defaults" (Karpathy): a decay sized for another run length (epochs for steps, a
        default num_training_steps) takes the LR to ~0 early and the rest of the run does nothing; a cosine sized
        in epochs but stepped per batch restarts hundreds of times; a schedule sized in steps but stepped per epoch
        never moves; a OneCycleLR stepped past its total_steps crashes the run. Adam on a transformer without
        warm-up is unstable in its first steps (Liu et al. 2020).

    Thresholds:
        fail when the scheduler raises before the end of the run; fail when the LR stays below
        {low_fraction} x its peak from a step before {early_end} x total_steps to the end (a warning when
        `total_steps` is not declared); warn when the LR restarts (from < 10% to > 50% of the peak) more than
        {max_restarts} times; warn when a declared run ends less than {min_decay} below the peak (the schedule
        hardly moves); warn (advisory) when an Adam-family optimizer (not RAdam) on a model with attention starts
        at >= {warmup_start} x the peak LR.

    How to fix:
        Size the schedule in optimizer steps (epochs x batches per epoch) and step it once per batch:
        `def scheduler(opt): return OneCycleLR(opt, max_lr=3e-3, total_steps=EPOCHS * len(loader))`; add a linear
        warm-up for Adam on transformers.

    Example:
        A LambdaLR cosine with `num_training_steps=5000` in a run of 50,000 steps: fail, "the LR falls below 1% of
        its peak (0.001) at step 4,681 and stays there: 9% into the 50,000 steps".
    """
    curve = ctx.lr_curve()
    if curve is None:
        raise ProbeSkip("no `scheduler` in the setup: the LR is constant (learning-rate judges it)")
    if curve.metric_based:
        raise ProbeSkip(f"{curve.kind} follows a validation metric: its curve depends on the run")
    if not curve.lrs:
        f = Findings()
        f.fail(
            f"the scheduler raises at its first step: {curve.error}",
            "Size the schedule for the whole run and step it once per batch.",
        )
        return f.result("")
    m = measure(ctx, curve, p)
    return judge(m, p).result(
        f"{curve.kind}: peak LR {m.peak:.3g} at step {m.peak_step:,}, {curve.group(0)[-1]:.3g} at the end of "
        f"{curve.horizon:,} steps"
    )
