"""train-step: watch the setup's own ``train_step(model, batch, optimizer)`` and judge the step itself."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.amp.grad_scaler import GradScaler, OptState
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau
from torch.optim.optimizer import register_optimizer_step_pre_hook

from nncheck.kit import Context, Findings, ProbeSkip, Result, param, probe

# Optimizers that divide the update by a running RMS of the gradient: a constant clip factor hardly changes their
# update (Kingma & Ba 2015, section 2.1: the step is invariant to the scale of the gradient).
SCALE_INVARIANT = ("Adam", "AdamW", "NAdam", "RAdam", "Adamax", "Adagrad", "RMSprop", "Adadelta", "Adafactor")


@dataclass(frozen=True)
class Params:
    """Parameters of train-step (`[tool.nncheck.probes.train-step]`)."""

    calls: int = param(
        3,
        source="Three calls of the step: the second and third start from the gradients the first one left (a missing "
        "zero_grad shows from the second), and 'every step' of the clipping and scaler checks means all of them.",
    )
    accumulate_tol: float = param(
        0.05,
        source="Relative difference between the gradients of call 2 with and without the gradients call 1 left in "
        ".grad. Measured (seeds 0-2): 0 (bit-identical, deterministic CPU ops) for every correct train_step of "
        "checks/ (clipped, bf16 AMP); 0.78-0.81 for checks/ts_no_zero_grad.py (the previous gradient is about as "
        "large as the new one).",
    )
    warn_clip: float = param(
        0.1,
        source="Pascanu et al. 2013 (On the difficulty of training recurrent neural networks, section 3.2): clipping "
        "is meant for rare exploding gradients, with a threshold near the average norm; a clip that divides every "
        "update by 10x or more is an LR cut in disguise.",
    )
    fail_clip: float = param(
        0.01,
        source="100x: two decades of effective LR lost on every step with SGD (the update is proportional to the "
        "clipped gradient). With scale-invariant optimizers (Adam, RMSprop) it only warns (Kingma & Ba 2015).",
    )


@dataclass
class Call:
    """What one call of the user's train_step did."""

    loss: float = math.nan
    steps: int = 0  # optimizer.step() calls that ran
    step_before_backward: bool = False
    backward: bool = False
    raw_norm: float | None = None  # the gradient norm right after backward (unscaled)
    step_norm: float | None = None  # the gradient norm optimizer.step() saw (after clipping / unscaling)
    nonfinite_grad: bool = False
    scaled_step: bool = False  # optimizer.step() ran on gradients a GradScaler had not unscaled
    autocast: str | None = None  # the autocast dtype the forward ran under
    scale: float | None = None  # the GradScaler's scale at the start of the call
    params_changed: bool = False
    order: list[str] = field(default_factory=list)  # "step" (any optimizer.step()) and "scheduler" (its step), in order
    lr_before_scheduler: float | None = None  # the LR of the first scheduler step's optimizer before that step
    lr_at_step: float | None = None  # the LR the first optimizer.step() of the call ran with

    @property
    def scheduler_first(self) -> bool:
        """A scheduler stepped before the first optimizer.step() of the call (which did run)."""
        return (
            "scheduler" in self.order
            and "step" in self.order
            and self.order.index("scheduler") < self.order.index("step")
        )


@dataclass
class Measurement:
    optimizer: str
    calls: list[Call]
    accumulation: float | None  # relative gradient difference with / without the previous call's gradients
    scaler_scales: tuple[float, float] | None  # the GradScaler's scale before the first call and after the last
    plain_finite: bool | None = None  # a plain float32 step's loss and gradients are finite (checked on need)
    measured: dict[str, Any] = field(default_factory=dict)

    @property
    def clip_ratios(self) -> list[float]:
        return [
            c.step_norm / c.raw_norm
            for c in self.calls
            if c.step_norm
            and c.raw_norm
            and math.isfinite(c.raw_norm)
            and math.isfinite(c.step_norm)
            and not c.step_before_backward
            and not c.scaled_step
        ]


# ---------------------------------------------------------------------------------------------- measure
def _scheduler_classes() -> list[type]:
    """LRScheduler and its subclasses (the user's too) that define their own ``step``."""
    out: list[type] = []
    todo: list[type] = [LRScheduler, ReduceLROnPlateau]
    while todo:
        c = todo.pop()
        if c not in out:
            out.append(c)
            todo.extend(c.__subclasses__())
    return [c for c in out if "step" in c.__dict__]


def _lr(opt: Any) -> float | None:
    groups = getattr(opt, "param_groups", None)
    return float(groups[0]["lr"]) if groups and "lr" in groups[0] else None


@contextlib.contextmanager
def watched_schedulers(on_scheduler: Callable[[Any], None], on_step: Callable[[Any], None]) -> Iterator[None]:
    """Call ``on_scheduler(scheduler)`` before every ``step()`` of any LR scheduler (not the one each runs when it is
    built, nor a step a scheduler makes inside another's: SequentialLR, ChainedScheduler) and ``on_step(optimizer)``
    before every ``optimizer.step()`` of any optimizer: the train step may step a scheduler it reaches by any route
    (a module global, a closure, one it builds for the optimizer it is given). The classes are put back after."""
    depth = [0]

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def step(self: Any, *args: Any, **kwargs: Any) -> Any:
            if depth[0] == 0 and getattr(self, "_step_count", 1) != 0:  # 0: the step LRScheduler.__init__ makes
                on_scheduler(self)
            depth[0] += 1
            try:
                return original(self, *args, **kwargs)
            finally:
                depth[0] -= 1

        return step

    patched = [(c, c.__dict__["step"]) for c in _scheduler_classes()]
    handle = register_optimizer_step_pre_hook(lambda opt, args, kwargs: on_step(opt))
    try:
        for c, original in patched:
            setattr(c, "step", wrap(original))  # noqa: B010 (a class attribute, put back below)
        yield
    finally:
        for c, original in patched:
            setattr(c, "step", original)  # noqa: B010
        handle.remove()


def _norm(tensors: list[torch.Tensor]) -> float:
    return math.sqrt(sum(float(t.detach().double().pow(2).sum()) for t in tensors)) if tensors else 0.0


class Watch:
    """Hooks on a model and its optimizer that record what one call of the train step does."""

    def __init__(self, ctx: Context, model: nn.Module, opt: torch.optim.Optimizer, scalers: list[GradScaler]) -> None:
        self.model, self.opt, self.scalers = model, opt, scalers
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.device_type = ctx.device.type
        self.call = Call()
        self.raw: dict[int, torch.Tensor] = {}
        self.captured: list[torch.Tensor] | None = None
        self.handles = [p.register_post_accumulate_grad_hook(self._accumulated) for p in self.params]
        self.handles.append(opt.register_step_pre_hook(self._pre_step))
        self.handles.append(model.register_forward_pre_hook(self._forward))

    def _forward(self, module: nn.Module, args: Any) -> None:
        if torch.is_autocast_enabled(self.device_type) and self.call.autocast is None:
            self.call.autocast = str(torch.get_autocast_dtype(self.device_type)).replace("torch.", "")

    def _accumulated(self, p: torch.Tensor) -> None:
        self.call.backward = True
        if p.grad is not None:
            self.raw[id(p)] = p.grad.detach().float().pow(2).sum()

    def _pre_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        c = self.call
        if not c.backward and c.steps == 0:
            c.step_before_backward = True
        c.steps += 1
        grads = [p.grad for p in self.params if p.grad is not None]
        c.step_norm = _norm(grads)
        c.scaled_step = c.scaled_step or any(
            s._per_optimizer_states[id(optimizer)]["stage"] is OptState.READY for s in self.scalers
        )
        if self.captured is None:
            self.captured = [g.detach().clone() for g in grads]

    def _scheduler(self, scheduler: Any) -> None:
        if "scheduler" not in self.call.order:
            self.call.lr_before_scheduler = _lr(getattr(scheduler, "optimizer", None))
        self.call.order.append("scheduler")

    def _any_step(self, optimizer: torch.optim.Optimizer) -> None:
        if "step" not in self.call.order:
            self.call.lr_at_step = _lr(optimizer)
        self.call.order.append("step")

    def run(self, ctx: Context, batch: Any) -> Call:
        self.call, self.raw = Call(), {}
        c = self.call
        c.scale = float(self.scalers[0].get_scale()) if self.scalers else None
        before = [p.detach().clone() for p in self.params]
        with watched_schedulers(self._scheduler, self._any_step):
            c.loss = ctx.user_train_step(self.model, self.opt, batch)
        if self.raw:
            raw = math.sqrt(float(torch.stack(list(self.raw.values())).sum()))
            c.raw_norm = raw / c.scale if c.scale else raw
            c.nonfinite_grad = not math.isfinite(raw)
        c.params_changed = any(not torch.equal(p.detach(), b) for p, b in zip(self.params, before))
        return c

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def run_calls(
    ctx: Context, n: int, scalers: list[GradScaler], clear_after_first: bool
) -> tuple[list[Call], list[torch.Tensor] | None]:
    """``n`` calls of the train step on a fresh copy under the run's seed (``ctx.optimizer`` puts the GradScalers
    back in their first state); with ``clear_after_first`` the gradients the first call left are dropped before the
    second. Returns the calls and the gradients the second call's optimizer step saw (or, without a step, what .grad
    held after it)."""
    ctx.seed_all()
    model = ctx.fresh_model()
    ctx.seed_all()
    opt = ctx.optimizer(model)
    batches = ctx.batches(n)
    watch = Watch(ctx, model, opt, scalers)
    calls: list[Call] = []
    second: list[torch.Tensor] | None = None
    try:
        for i in range(n):
            ctx.check_time()
            if i == 1 and clear_after_first:
                opt.zero_grad(set_to_none=True)
            watch.captured = None
            calls.append(watch.run(ctx, batches[i % len(batches)]))
            if i == 1:
                second = watch.captured
                if second is None:
                    second = [p.grad.detach().clone() for p in watch.params if p.grad is not None]
    finally:
        watch.close()
    return calls, second


def relative_difference(a: list[torch.Tensor] | None, b: list[torch.Tensor] | None) -> float | None:
    if a is None or b is None or len(a) != len(b) or not a:
        return None
    if any(x.shape != y.shape for x, y in zip(a, b)):
        return None
    base = _norm(a)
    diff = _norm([x - y for x, y in zip(a, b)])
    if not math.isfinite(base) or not math.isfinite(diff):
        return None
    return diff / base if base > 0 else (0.0 if diff == 0 else math.inf)


def plain_step_finite(ctx: Context) -> bool:
    """A plain float32 step (forward, loss, backward; no autocast) on the first batch gives a finite loss and finite
    gradients."""
    ctx.seed_all()
    model = ctx.fresh_model()
    loss = ctx.batch_loss(model, ctx.batch())
    if not torch.isfinite(loss.detach()).all():
        return False
    loss.backward()
    return all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def measure(ctx: Context, p: Params) -> Measurement:
    scalers = ctx.scalers()
    try:
        calls, natural = run_calls(ctx, max(p.calls, 2), scalers, clear_after_first=False)
        first = calls[0].scale
        after = float(scalers[0].get_scale()) if scalers else None
        _, cleared = run_calls(ctx, 2, scalers, clear_after_first=True)
    finally:
        ctx.load_scaler_states()
    m = Measurement(
        optimizer=type(ctx.optimizer(ctx.pristine_model())).__name__,
        calls=calls,
        accumulation=relative_difference(cleared, natural),
        scaler_scales=(first, after) if first is not None and after is not None else None,
    )
    if any(c.autocast for c in calls) and any(c.nonfinite_grad or not math.isfinite(c.loss) for c in calls):
        m.plain_finite = plain_step_finite(ctx)
    return m


# ---------------------------------------------------------------------------------------------- judge
def judge(m: Measurement, p: Params) -> Findings:
    f = Findings()
    calls = m.calls
    n = len(calls)
    ratios = m.clip_ratios
    f.measured.update(
        calls=n,
        optimizer_steps=[c.steps for c in calls],
        losses=[round(c.loss, 6) for c in calls],
        grad_norm_after_backward=[None if c.raw_norm is None else float(f"{c.raw_norm:.4g}") for c in calls],
        grad_norm_at_step=[None if c.step_norm is None else float(f"{c.step_norm:.4g}") for c in calls],
        clip_ratios=[float(f"{r:.4g}") for r in ratios],
        accumulation=None if m.accumulation is None else float(f"{m.accumulation:.4g}"),
        autocast=next((c.autocast for c in calls if c.autocast), None),
        scaler_scale=m.scaler_scales,
    )
    f.expected.update(accumulation=f"< {p.accumulate_tol:g}", clip_ratios=f">= {p.warn_clip:g} on some step")
    stepped = any(c.steps for c in calls)
    if m.accumulation is not None and m.accumulation > p.accumulate_tol:
        f.fail(
            f"gradients accumulate across calls: the gradients the previous call left in .grad change the next "
            f"update by {m.accumulation:.0%} (no optimizer.zero_grad() between steps)",
            "Call `optimizer.zero_grad(set_to_none=True)` at the start of train_step (or after optimizer.step()).",
        )
    if any(c.step_before_backward for c in calls):
        f.fail(
            "optimizer.step() runs before loss.backward(): each update uses the previous call's gradients (the "
            "first one none)",
            "Order the step as zero_grad(), loss = ..., loss.backward(), (clip), optimizer.step().",
        )
    if m.scaler_scales is not None and not stepped:
        first, last = m.scaler_scales
        cause = (
            f"its gradients are inf / NaN under autocast({calls[0].autocast or '?'}) and finite in float32"
            if m.plain_finite
            else "its gradients are inf / NaN at every scale"
        )
        f.fail(
            f"the GradScaler skipped all {n} optimizer steps (scale {first:g} -> {last:g}): {cause}; the model never "
            "trains",
            "Find the op that overflows in float16 (an unscaled attention score, a sum of squares, a large constant "
            "such as -1e9 in masked_fill): scale it down, compute it in float32 "
            "(`with torch.autocast(device, enabled=False):`), or autocast to bfloat16, which has float32's range.",
        )
    elif not stepped and not any(c.params_changed for c in calls):
        f.fail(
            f"optimizer.step() never runs in {n} calls of train_step: the parameters do not change",
            "Call `optimizer.step()` after `loss.backward()` in train_step (with a GradScaler: "
            "`scaler.step(optimizer); scaler.update()`).",
        )
    elif m.plain_finite and any(c.nonfinite_grad for c in calls):
        f.fail(
            f"the gradients are inf / NaN under autocast({next(c.autocast for c in calls if c.autocast)}) and finite "
            "in float32: an op overflows in the low-precision dtype",
            "Compute the overflowing op in float32 (`with torch.autocast(device, enabled=False):`), use a "
            "GradScaler with float16, or autocast to bfloat16.",
        )
    if any(c.scaled_step for c in calls):
        scale = next((c.scale for c in calls if c.scale), None)
        f.fail(
            f"optimizer.step() runs on gradients still multiplied by the GradScaler's scale ({scale:g}): every update "
            f"is {scale:g}x too large",
            "Step through the scaler: `scaler.scale(loss).backward(); scaler.step(optimizer); scaler.update()` "
            "(call `scaler.unscale_(optimizer)` before clipping).",
        )
    early = [i for i, c in enumerate(calls) if c.scheduler_first]
    if early:
        c = calls[early[0]]
        lrs = (
            f": the first update ran at LR {c.lr_at_step:.3g}, the schedule's next value, instead of "
            f"{c.lr_before_scheduler:.3g}"
            if c.lr_at_step is not None and c.lr_before_scheduler is not None
            else ""
        )
        f.measured.update(scheduler_first_calls=len(early), lr_at_first_step=c.lr_at_step)
        f.expected.update(scheduler_first_calls=0)
        f.warn(
            f"the LR scheduler steps before optimizer.step() in {len(early)} of {n} calls of train_step{lrs}; each "
            "update takes the LR of the step after it, so the schedule's first value is never used and it runs one "
            "step ahead",
            "Step the scheduler after the optimizer: `optimizer.step(); scheduler.step()` (with a GradScaler: "
            "`scaler.step(optimizer); scaler.update(); scheduler.step()`).",
        )
    if ratios and len(ratios) == sum(1 for c in calls if c.steps) and max(ratios) < p.warn_clip:
        worst = max(ratios)
        text = (
            f"gradient clipping is active on every step and divides the gradient by {1 / worst:.0f}x or more "
            f"(clip ratio {worst:.3g}: norm {calls[0].raw_norm:.3g} after backward, {calls[0].step_norm:.3g} at the "
            "step): an effective LR cut"
        )
        hint = (
            "Set max_norm near the typical gradient norm (clip only the rare spikes), e.g. "
            f"`clip_grad_norm_(model.parameters(), max_norm={calls[0].raw_norm:.2g})`, or lower the LR instead."
        )
        if worst < p.fail_clip and m.optimizer not in SCALE_INVARIANT:
            f.fail(text, hint)
        else:
            adam = f" ({m.optimizer} is invariant to the gradient's scale, so this mostly rescales eps)"
            f.warn(text + (adam if m.optimizer in SCALE_INVARIANT else ""), hint)
    return f


# ---------------------------------------------------------------------------------------------- Lightning
def lightning_scheduler_steps(ctx: Context) -> int:
    """``self.lr_schedulers().step()`` calls one training_step of a LightningModule makes (0 for other setups)."""
    from nncheck.lightning import TrainingStepLoss

    loss = ctx.loss_fn
    if not isinstance(loss, TrainingStepLoss):
        return 0
    before = loss.scheduler_steps
    with torch.no_grad():
        ctx.batch_loss(ctx.pristine_model(), ctx.batch())
    return loss.scheduler_steps - before


def lightning_scheduler_findings(steps: int) -> Findings:
    f = Findings()
    f.measured.update(scheduler_steps_per_training_step=steps)
    f.expected.update(scheduler_steps_per_training_step=0)
    f.fail(
        f"training_step steps the LR scheduler itself ({steps} `self.lr_schedulers().step()` per call) under "
        "automatic optimisation: Lightning runs training_step inside optimizer.step(closure), before the update, so "
        "the scheduler steps before the optimizer, and Lightning steps the configured scheduler again after it: the "
        f"schedule runs {steps + 1}x as fast with `interval='step'` (an epoch schedule becomes a per-batch one)",
        "Remove the call and let Lightning step it: `{'scheduler': sched, 'interval': 'step'}` in "
        "configure_optimizers' lr_scheduler; to step it yourself, use manual optimisation "
        "(`self.automatic_optimization = False`, then `opt.step(); sch.step()`) with a `train_step` in the setup.",
    )
    return f


# ---------------------------------------------------------------------------------------------- probe
@probe("train-step", title="Custom training step", order=68, params=Params)
def train_step(ctx: Context, p: Params) -> Result:
    """Checks the setup's own `train_step(model, batch, optimizer)`: zero_grad, step order, clipping, AMP.

    What it does:
        Calls your train_step {calls} times on a fresh copy under the run's seed, watching it through hooks (no
        change to your code): a hook after each parameter's gradient is accumulated (the norm right after
        backward, unscaled by the GradScaler's scale), a pre-hook of optimizer.step() (the norm the step sees,
        after clipping; whether a GradScaler unscaled it first), a forward pre-hook (the autocast dtype). The
        GradScalers your train_step can reach (module globals, closure) are found, and their state is put back
        after. A second run from the same state drops the gradients the first call left before the second: if
        the second call's gradients differ, your step accumulates them. When the gradients are non-finite under
        autocast, one plain float32 step on a fresh copy says whether autocast causes it. While the step runs,
        every LR scheduler's step() and every optimizer's step() is recorded in order (the scheduler classes are
        wrapped for the call and put back; the step a scheduler makes when it is built is not counted), so a
        scheduler the step reaches by any route (a module global, a closure, one it keeps per optimizer; a
        Lightning module's scheduler in your train_step) is seen. Costs ~{calls} + 2 training steps. Without a
        `train_step`: a LightningModule's training_step is run once (a forward) to count the
        `self.lr_schedulers().step()` calls it makes itself; other setups skip.

    Why is this bad?
        A missing zero_grad sums every past gradient into each update (the effective LR grows with the step
        count, momentum goes wild); optimizer.step() before backward applies last batch's gradients; a clip
        max_norm far below the gradient norm divides every SGD update by a constant (an LR cut nobody chose); a
        GradScaler that finds inf on every step skips every update silently (the loss stays flat, nothing
        crashes); optimizer.step() on scaled gradients multiplies the update by the scale (65536); a scheduler
        stepped before the optimizer runs the schedule one step ahead and skips its first value (PyTorch docs,
        torch.optim "How to adjust learning rate": "call optimizer.step() before lr_scheduler.step()").

    Thresholds:
        fail when the second call's gradients differ by more than {accumulate_tol} (relative) with / without the
        first call's leftovers; fail when optimizer.step() runs before backward, or never runs (a GradScaler that
        skipped all {calls} steps is named, with its scale); fail when the gradients are non-finite under
        autocast and finite in float32; fail when optimizer.step() runs on scaled gradients; clipping: when the
        clip ratio (norm at the step / norm after backward) is below {warn_clip} on every step, warn; below
        {fail_clip} with an optimizer that is not scale-invariant (SGD), fail. A scheduler step before the first
        optimizer.step() of a call warns (a one-step shift: PyTorch itself only warns), with the LR the first
        update ran at and the schedule's first value. A LightningModule whose training_step steps its scheduler
        under automatic optimisation fails (Lightning docs, "Learning rate scheduling": in automatic
        optimisation Lightning calls the configured scheduler's step() itself, after the optimizer's): the
        scheduler steps first, and twice per step.

    How to fix:
        The canonical step: `optimizer.zero_grad(set_to_none=True); loss = loss_fn(model(x), y); loss.backward();
        clip_grad_norm_(model.parameters(), max_norm); optimizer.step(); return loss`; with float16 AMP:
        `scaler.scale(loss).backward(); scaler.unscale_(optimizer); clip...; scaler.step(optimizer);
        scaler.update()`; then `scheduler.step()`.

    Example:
        `train_step` without `optimizer.zero_grad()`: fail, "gradients accumulate across calls: the gradients the
        previous call left in .grad change the next update by 97%".
    """
    if ctx.setup.train_step is None:
        lightning = lightning_scheduler_steps(ctx)
        if lightning:
            return lightning_scheduler_findings(lightning).result("")
        raise ProbeSkip("no `train_step` in the setup: nncheck's own step (zero_grad, forward, backward, step) is used")
    m = measure(ctx, p)
    calls = m.calls
    ratios = m.clip_ratios
    clip = f", clip ratio {min(ratios):.3g}-{max(ratios):.3g}" if ratios and min(ratios) < 0.999 else ""
    amp = next((f", autocast({c.autocast})" for c in calls if c.autocast), "")
    losses = f"loss {calls[0].loss:.4g} -> {calls[-1].loss:.4g}"
    return judge(m, p).result(f"{len(calls)} calls: zero_grad, backward then step{clip}{amp}; {losses}")
