"""overfit-batch: a healthy model, loss and optimizer memorise a handful of samples quickly."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nncheck.context import Context, ProbeSkip, code_path, execution_order
from nncheck.probes import probe
from nncheck.report import Result, failed, passed

# Karpathy, "A Recipe for Training Neural Networks": "overfit one batch ... of as few as two examples ...
# we should be able to reach zero loss". 8 samples keep BatchNorm statistics meaningful in train mode.
BATCH_SIZE = 8
# Memorised when the loss falls below 5% of its initial value (issue 2, item 7); classification: every sample
# classified correctly and the loss below 10% (issue 2). Measured on examples/ with their own optimizers (Adam 1e-3):
# correct setups get there in 50-320 steps (residual CNN the slowest, ~310); the broken setups of checks/ never get
# below 32% of their initial loss.
LOSS_RATIO = 0.05
CE_LOSS_RATIO = 0.10
MAX_STEPS = 500
# --budget fast: looser goals, fewer steps. Measured on examples/: 15% / all-correct-and-30% are reached in 45-210
# steps (0.6-0.7x the full cost), still far from the 32%+ where the broken checks/ end. 250 steps leave a margin.
FAST_LOSS_RATIO = 0.15
FAST_CE_LOSS_RATIO = 0.30
FAST_MAX_STEPS = 250
# Give up early when the loss stops falling: over the last STALL_WINDOW steps the best loss improved by less than
# STALL_TOL of the initial loss (checked from STALL_MIN_STEPS on). At that pace the remaining steps of a 500-step run
# can win at most 5%, so a run that stalls could only pass by speeding up ~20x. Measured: correct examples improve
# by >= 2.3% per window before they pass (also with Adam 3e-4); broken checks/ stall at steps 100-350.
STALL_WINDOW = 50
STALL_TOL = 0.005
STALL_MIN_STEPS = 100
# Regression targets whose mean is more than this many target stds from the outputs' mean at init: a suspect.
OFFSET_STDS = 3.0
# The fallback optimizer, Karpathy's "safe" default: Adam with lr 3e-4.
FALLBACK_LR = 3e-4
# A loss at init at or below max(TINY_LOSS, TINY_RELATIVE x the loss of an all-zero output) is "already zero":
# the model starts on its targets to float32 precision (squared errors resolve ~1e-7 relative), nothing to memorise.
TINY_LOSS = 1e-12
TINY_RELATIVE = 1e-6


@dataclass
class Run:
    """One memorisation attempt: the loss before every step, and whether / when the criterion held."""

    name: str
    losses: list[float] = field(default_factory=list)
    steps: int | None = None  # optimizer steps taken when the criterion first held; None: never
    accuracy: float | None = None  # classification: last measured fraction of samples classified correctly
    stopped: str = "max_steps"  # why it ended: "memorised", "stalled", "diverged" or "max_steps"

    @property
    def diverged(self) -> bool:
        return self.stopped == "diverged"

    @property
    def ok(self) -> bool:
        return self.steps is not None

    @property
    def final(self) -> float:
        return self.losses[-1] if self.losses else math.nan


def _unwrap_loss(loss_fn: Any) -> Any:
    while hasattr(loss_fn, "inner") and isinstance(loss_fn, nn.Module):
        loss_fn = loss_fn.inner
    return loss_fn


def _ce_floor(ctx: Context, num_classes: int) -> float:
    """The lowest reachable cross-entropy: 0, or the entropy of the smoothed targets with label smoothing."""
    eps = float(getattr(_unwrap_loss(ctx.loss_fn), "label_smoothing", 0.0) or 0.0)
    if eps <= 0 or num_classes < 2:
        return 0.0
    hit, miss = 1 - eps + eps / num_classes, eps / num_classes
    return float(-(hit * math.log(hit) + (num_classes - 1) * miss * math.log(miss)))


def _class_targets(ctx: Context, out: torch.Tensor, y: Any) -> torch.Tensor | None:
    """Cross-entropy targets as one class index per row of ``ctx.class_logits(out)``; None when not readable."""
    if not isinstance(y, torch.Tensor):
        return None
    if y.is_floating_point() and y.shape == out.shape:  # class probabilities
        return ctx.class_logits(y).argmax(dim=1)
    if y.is_floating_point() or y.numel() != ctx.class_logits(out).shape[0]:
        return None
    return y.reshape(-1).long()


def _accuracy(ctx: Context, out: Any, y: Any) -> float | None:
    """Fraction of the (non-ignored) samples classified correctly, for cross-entropy setups."""
    if ctx.loss_kind != "ce" or not isinstance(out, torch.Tensor):
        return None
    targets = _class_targets(ctx, out, y)
    if targets is None:
        return None
    logits = ctx.class_logits(out.detach())
    keep = (targets >= 0) & (targets < logits.shape[1])  # ignore_index (-100) and padding
    if not bool(keep.any()):
        return None
    return float((logits[keep].argmax(dim=1) == targets[keep]).float().mean())


def _stalled(best: list[float], step: int, l_init: float, tol: float) -> bool:
    """True when the best loss improved by less than ``tol`` x l_init over the last STALL_WINDOW steps."""
    if step < STALL_MIN_STEPS or step % STALL_WINDOW:
        return False
    return best[step - STALL_WINDOW] - best[step] < tol * abs(l_init)


def _memorise(
    ctx: Context,
    name: str,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    batch: Any,
    max_steps: int,
    done: Callable[[float, Callable[[], float | None]], bool],
    stall_tol: float = STALL_TOL,
) -> Run:
    """Train on one batch; before each step check ``done(loss, accuracy)`` on the forward that step needs anyway
    (no extra forward pass; ``accuracy()`` is computed only when asked). Stops as soon as it holds, the loss
    stops being finite, or the loss stalls."""
    run = Run(name)
    best: list[float] = []
    out: Any = None
    y: Any = None
    for step in range(max_steps + 1):
        ctx.check_time()
        opt.zero_grad(set_to_none=True)
        out, y = ctx.forward(model, batch)
        loss = ctx.loss(out, y)
        value = float(loss.detach())
        run.losses.append(value)
        if not math.isfinite(value):
            run.stopped = "diverged"
            break
        best.append(min(value, best[-1]) if best else value)
        if done(value, lambda out=out, y=y: _accuracy(ctx, out, y)):
            run.steps, run.stopped = step, "memorised"
            break
        if step == max_steps:
            break
        if _stalled(best, step, run.losses[0], stall_tol):
            run.stopped = "stalled"
            break
        loss.backward()
        opt.step()
    run.accuracy = _accuracy(ctx, out, y)
    return run


def _lr_text(lr: float) -> str:
    """3e-4 rather than 0.0003 (how people write learning rates)."""
    mantissa, exponent = f"{lr:e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def _describe_optimizer(opt: torch.optim.Optimizer) -> str:
    g = opt.param_groups[0]
    parts = [f"lr={g['lr']:g}"] if "lr" in g else []
    for k in ("momentum", "weight_decay"):
        if g.get(k):
            parts.append(f"{k}={g[k]:g}")
    return f"{type(opt).__name__}({', '.join(parts)})"


def _is_fallback(opt: torch.optim.Optimizer, lr: float) -> bool:
    """True when the user's optimizer already is Adam at the fallback LR (a retry would repeat the same run)."""
    g = opt.param_groups[0]
    return type(opt) is torch.optim.Adam and math.isclose(float(g.get("lr", -1)), lr) and not g.get("weight_decay")


def _offset_at_init(out0: Any, y0: Any) -> str | None:
    """MSE targets far from the outputs at init (> 3 target stds): the steps go into moving the output's mean."""
    if not (isinstance(out0, torch.Tensor) and isinstance(y0, torch.Tensor) and y0.is_floating_point()):
        return None
    gap = abs(float(y0.mean()) - float(out0.mean()))
    std = float(y0.float().std()) if y0.numel() > 1 else 0.0
    if gap <= OFFSET_STDS * max(std, 1e-12):
        return None
    return (
        f"the targets average {float(y0.mean()):.4g} (std {std:.3g}) while the outputs at init average "
        f"{float(out0.mean()):.4g}: start the output bias at the target mean or standardise the targets "
        "(see `nncheck run FILE --only last-layer-bias`)"
    )


def _diagnose(ctx: Context, model: nn.Module, batch: Any) -> list[str]:
    """Cheap, specific suspects for a model that cannot memorise: an activation squashing the output,
    shapes that broadcast in the loss, parameters without gradient."""
    found: list[str] = []
    model.zero_grad(set_to_none=True)
    runs = execution_order(ctx, model, batch)
    out, y = ctx.forward(model, batch)
    ctx.loss(out, y).backward()
    last = runs[-2] if len(runs) >= 2 else None
    if last is not None and isinstance(last[1], (nn.Softmax, nn.Sigmoid, nn.ReLU, nn.Tanh, nn.Softmax2d)):
        why = {
            "ce": "CrossEntropyLoss applies log-softmax itself; return the raw logits",
            "bce": "BCEWithLogitsLoss applies the sigmoid itself; return the raw logits",
        }.get(ctx.loss_kind, "it bounds the outputs, so targets outside its range cannot be reached")
        found.append(f"the model output comes out of `{type(last[1]).__name__}` (`{code_path(last[0])}`): {why}")
    if isinstance(out, torch.Tensor) and isinstance(y, torch.Tensor) and y.is_floating_point():
        o = out.detach()
        try:
            b = torch.broadcast_shapes(o.shape, y.shape)
        except RuntimeError:
            b = o.shape
        if math.prod(b) > max(o.numel(), y.numel()):
            found.append(
                f"output {tuple(o.shape)} and target {tuple(y.shape)} broadcast to {tuple(b)} in the loss: every "
                "output is compared with every target. Make them the same shape (`output.squeeze(-1)` or "
                "`target.unsqueeze(-1)`)"
            )
        elif ctx.loss_kind == "mse" and not found:
            lo, hi, ylo, yhi = float(o.min()), float(o.max()), float(y.min()), float(y.max())
            if lo >= 0 and ylo < 0:
                found.append(f"the outputs never go negative ({lo:.3g} at least) but targets do ({ylo:.3g}): a ReLU?")
            elif lo >= 0 and hi <= 1 and (ylo < 0 or yhi > 1):
                found.append(f"the outputs stay in [0, 1] but targets span [{ylo:.3g}, {yhi:.3g}]: a sigmoid?")
    if ctx.loss_kind == "ce" and isinstance(out, torch.Tensor) and not found:
        rows = ctx.class_logits(out.detach())
        if bool((rows >= 0).all()) and torch.allclose(rows.sum(1), torch.ones_like(rows[:, 0]), atol=1e-3):
            found.append("the outputs are probabilities (rows sum to 1): softmax is applied before CrossEntropyLoss")
    frozen = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    if frozen:
        shown = ", ".join(frozen[:5]) + (f" and {len(frozen) - 5} more" if len(frozen) > 5 else "")
        found.append(f"{len(frozen)} parameter tensors get no gradient ({shown}): a `.detach()` or an unused branch")
    return found


def _curve(run: Run) -> dict[str, list[float]]:
    return {"x": list(range(len(run.losses))), "y": run.losses}


@probe(
    "overfit-batch",
    title="Overfit one batch",
    order=30,
    params={
        "batch_size": BATCH_SIZE,
        "max_steps": MAX_STEPS,
        "loss_ratio": LOSS_RATIO,
        "ce_loss_ratio": CE_LOSS_RATIO,
        "fallback_lr": FALLBACK_LR,
        "stall_tol": STALL_TOL,
    },
    fast={"max_steps": FAST_MAX_STEPS, "loss_ratio": FAST_LOSS_RATIO, "ce_loss_ratio": FAST_CE_LOSS_RATIO},
)
def overfit_batch(ctx: Context) -> Result:
    """Checks that the model, loss and optimizer can memorise a handful of samples.

    What it does:
        Cuts the first batch to `batch_size` samples (8) and trains a fresh copy of the model on them alone,
        with your optimizer, in train mode with dropout modules switched off (BatchNorm keeps its batch
        statistics), for at most `max_steps` steps (500). It stops as soon as the batch is memorised: the loss
        is below `loss_ratio` (5%) of its initial value, or, for cross-entropy, every sample (every token of a
        sequence) is classified correctly and the loss is below `ce_loss_ratio` (10%). With label smoothing
        the ratios are taken above the smoothing's floor (the entropy of the smoothed targets). The goal is
        checked on the forward pass each step makes anyway, so it costs nothing extra. A run also stops when
        it stalls: over 50 steps its best loss improved by less than `stall_tol` (0.5%) of the initial loss.
        If your optimizer does not get there, a second fresh copy is trained with Adam(lr=3e-4) to tell the
        two causes apart. The loss curves of both runs are kept for plots.

    Why is this bad?
        Any working network memorises 8 samples within a few hundred steps (Karpathy's recipe: "overfit one
        batch"; cs231n: "overfit a tiny subset of data"). When it cannot, no amount of data or training time
        will help: either the optimizer settings make no progress (LR far too low, zero, or diverging), or the
        model / loss cannot represent the targets (softmax before CrossEntropyLoss, a sigmoid or ReLU on a
        regression output, output and target shapes broadcasting in the loss, parameters cut off the graph).

    Thresholds:
        pass when the loss < 5% of its initial value, or (cross-entropy) all samples right and the loss < 10%
        (issue 2); fail after 500 steps or a stall. --budget fast: 15% / 30%, 250 steps. Measured on examples/
        (Adam 1e-3): correct setups pass in 50-320 steps (fast: 35-210); the broken setups of checks/ end at
        32-100% of their initial loss. A stall (< 0.5% in 50 steps) leaves at most 5% to win in 500 steps.

    How to fix:
        "memorises with Adam 3e-4 but not with your optimizer": fix the learning rate or optimizer settings
        (run `nncheck run FILE --only learning-rate`). "cannot memorise ... even with Adam": look at what
        follows the output layer, at the shapes the loss compares, and at detached tensors; the hint lists the
        suspects it found (the last module, broadcasting shapes, parameters without gradient).
        Functional dropout (`F.dropout(..., training=self.training)`) stays on: if a model only memorises
        without it, expect a noisier curve.

    Example:
        A classifier ending in `nn.Softmax(dim=1)` trained with CrossEntropyLoss: loss 1.62 -> 0.92 (57% of
        initial), stalled: fail, "cannot memorise 8 samples even with Adam 3e-4", suspect: `Softmax`.
    """
    p = ctx.params
    n = int(p["batch_size"])
    max_steps = int(p["max_steps"])
    batch = ctx.slice_batch(ctx.batch(), n)
    n = min(n, ctx.batch_size(batch))

    model = ctx.without_dropout(ctx.fresh_model(train=True))
    with torch.no_grad():
        out0, y0 = ctx.forward(model, batch)
        l_init = float(ctx.loss(out0, y0))
        l_zero = float(ctx.loss(torch.zeros_like(out0), y0)) if isinstance(out0, torch.Tensor) else 0.0
    if not math.isfinite(l_init):
        return failed(
            f"loss at init on {n} samples is {l_init}: not finite",
            measured={"initial_loss": l_init},
            expected={"initial_loss": "finite"},
            hint="Run `nncheck run FILE --only numerics` to find the first module that produces a non-finite value.",
        )
    floor = 0.0
    if ctx.loss_kind == "ce" and isinstance(out0, torch.Tensor):
        floor = _ce_floor(ctx, ctx.class_logits(out0).shape[1])
    tiny = max(TINY_LOSS, TINY_RELATIVE * l_zero) if math.isfinite(l_zero) else TINY_LOSS
    if l_init - floor <= tiny:
        raise ProbeSkip(
            f"the loss on {n} samples is already {l_init:.3g} at init (its floor: {floor:.3g}): nothing to memorise"
        )
    if l_init < 0:
        raise ProbeSkip(f"the loss is negative at init ({l_init:.3g}): a fraction of it is no memorisation target")
    target_loss = floor + p["loss_ratio"] * (l_init - floor)
    target_ce = floor + p["ce_loss_ratio"] * (l_init - floor)

    def done(loss: float, accuracy: Callable[[], float | None]) -> bool:
        if loss < target_loss:
            return True
        return ctx.loss_kind == "ce" and loss < target_ce and (accuracy() or 0.0) >= 1.0

    def share(loss: float) -> float:
        return (loss - floor) / (l_init - floor)

    def how(run: Run) -> str:
        k = len(run.losses) - 1
        if run.diverged:
            return f"the loss became non-finite at step {k}"
        what = {"stalled": "stalled", "max_steps": "still above the goal"}.get(run.stopped, "reached")
        return f"loss {l_init:.4g} -> {run.final:.4g} ({100 * share(run.final):.0f}% of initial), {what} at step {k}"

    user_opt = ctx.optimizer(model)
    user_desc = _describe_optimizer(user_opt)
    user = _memorise(ctx, "your optimizer", model, user_opt, batch, max_steps, done, float(p["stall_tol"]))
    measured: dict[str, Any] = {
        "samples": n,
        "initial_loss": l_init,
        "final_loss": user.final,
        "final_ratio": share(user.final),
        "steps": len(user.losses) - 1,
        "stopped": user.stopped,
        "optimizer": user_desc,
    }
    if floor:
        measured["loss_floor"] = floor
    if user.accuracy is not None:
        measured["accuracy"] = user.accuracy
    expected: dict[str, Any] = {"loss_below": target_loss, "max_steps": max_steps}
    if ctx.loss_kind == "ce":
        expected["or_all_correct_and_loss_below"] = target_ce
    plot: dict[str, Any] = {
        "title": f"Loss on one batch of {n} samples",
        "xlabel": "step",
        "ylabel": "loss",
        "xscale": "linear",
        "yscale": "linear",
        "kind": "line",
        "curves": {"your optimizer": _curve(user)},
    }
    if user.ok:
        plot["yscale"] = "log" if min(user.losses) > 0 else "linear"
        return passed(
            f"memorised {n} samples in {user.steps} steps with {user_desc}: loss {l_init:.4g} -> {user.final:.4g}",
            measured=measured,
            expected=expected,
            series={"loss": plot},
        )

    lr = float(p["fallback_lr"])
    adam_name = f"Adam {_lr_text(lr)}"
    adam: Run | None = None
    if not _is_fallback(user_opt, lr):
        model = ctx.without_dropout(ctx.fresh_model(train=True))
        adam_opt = torch.optim.Adam(model.parameters(), lr=lr)
        adam = _memorise(ctx, adam_name, model, adam_opt, batch, max_steps, done, float(p["stall_tol"]))
        plot["curves"][adam.name] = _curve(adam)
        measured.update(adam_final_loss=adam.final, adam_steps=len(adam.losses) - 1, adam_stopped=adam.stopped)
    finite = [v for c in plot["curves"].values() for v in c["y"] if math.isfinite(v)]
    plot["yscale"] = "log" if finite and min(finite) > 0 else "linear"
    if adam is not None and adam.ok:
        cause = "too high" if user.diverged else "too low" if share(user.final) > 0.9 else "not right"
        return failed(
            f"memorises with {adam_name} but not with your optimizer: your LR / optimizer settings are the problem "
            f"({user_desc}: {how(user)}; {adam_name}: memorised in {adam.steps} steps)",
            measured=measured,
            expected=expected,
            hint=f"The learning rate or settings of {user_desc} look {cause}: it cannot fit {n} samples while "
            f"Adam(lr={_lr_text(lr)}) does in {adam.steps} steps. Run `nncheck run FILE --only learning-rate` to "
            f"find a working LR, or start from `optimizer = lambda p: torch.optim.Adam(p, lr={_lr_text(lr)})`.",
            series={"loss": plot},
        )
    last = adam if adam is not None else user
    suspects = _diagnose(ctx, model, batch)
    offset = _offset_at_init(out0, y0) if ctx.loss_kind == "mse" else None
    if offset:
        suspects.insert(0, offset)
    hint = (
        f"{adam_name if adam is not None else user_desc}: {how(last)}; a working setup gets below "
        f"{100 * p['loss_ratio']:.0f}% within {max_steps} steps. "
    )
    if suspects:
        hint += "Suspects: " + "; ".join(suspects) + "."
    else:
        hint += (
            "Check what follows the output layer (no softmax before CrossEntropyLoss, no ReLU / sigmoid on a "
            "regression output), that output and target shapes match in the loss, that no `.detach()` cuts the "
            "graph, and that the targets belong to the inputs they come with."
        )
    if last.stopped == "max_steps":
        hint += (
            " The loss was still falling at the end: if the model is only slow to fit, raise "
            "`max_steps` in [tool.nncheck.probes.overfit-batch] to confirm."
        )
    return failed(
        f"cannot memorise {n} samples even with {adam_name if adam is not None else user_desc}: "
        "the model, the loss or the data pipeline is broken",
        measured=measured,
        expected=expected,
        hint=hint,
        series={"loss": plot},
    )
