"""overfit-batch: a healthy model, loss and optimizer memorise a handful of samples quickly."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nncheck.kit import Context, Findings, ProbeSkip, Result, code_path, image_grid, line_plot, param, probe
from nncheck.losses import is_nll, log_prob_dim, unwrap_loss

# A run stalls when, over the last STALL_WINDOW steps, its best loss improved by less than `stall_tol` of the
# initial loss; checked every STALL_WINDOW steps from STALL_MIN_STEPS on (the first steps of Adam can be flat).
STALL_WINDOW = 50
STALL_MIN_STEPS = 100
# Regression targets whose mean is more than this many target stds from the outputs' mean at init: a suspect.
OFFSET_STDS = 3.0
# A loss at init at or below max(TINY_LOSS, TINY_RELATIVE x |the loss of an all-zero output|) above its floor is
# "already memorised": the model starts on its targets to float32 precision (squared errors resolve ~1e-7 relative).
TINY_LOSS = 1e-12
TINY_RELATIVE = 1e-6
# Losses without a known floor (custom functions, a loss + a constant): the floor is estimated by fitting the
# outputs themselves (no model) to the batch's targets with Adam (lr FLOOR_FIT_LR, FLOOR_FIT_STEPS steps on 8
# samples: ~1 ms per step). The estimate is an upper bound of the true floor.
FLOOR_FIT_LR = 0.1
FLOOR_FIT_STEPS = 300
# The fit has settled when its second half won less than FLOOR_SETTLED of its total drop. Measured: Poisson NLL + 10
# (tests/setups/poisson_shift10.py: outputs -> -inf for zero counts) wins 1e-6 of its drop there, the VAE of
# tests/setups/vae.py 0.8%; NLL of raw scores (unbounded) ~50%.
FLOOR_SETTLED = 0.1
# Wording only: your run ending above this share of the initial loss while Adam memorises: "LR too low".
HARDLY_MOVED = 0.9


@dataclass(frozen=True)
class Params:
    """Parameters of overfit-batch (`[tool.nncheck.probes.overfit-batch]`)."""

    batch_size: int = param(
        4,
        source=(
            'Karpathy, "A Recipe for Training Neural Networks" (2019, karpathy.github.io/2019/04/25/recipe): '
            '"overfit one batch" of a few examples (as few as two) to the lowest achievable loss. Measured with 4 '
            "(seeds 0-1, full budget): every correct setup of checks/, checks/real/ and examples/ memorises (8-390 "
            "steps), every broken ob_*.py of checks/ still fails; 4 samples cost half of 8 and keep a BatchNorm's "
            "batch statistics defined in train mode. Under the fast budget's looser goals a sigmoid on a regression "
            "output (checks/ob_sigmoid_on_regression.py) still falls fast enough at its end to count as slow (warn, "
            "fail with 8 samples); with 2, (B, 1) outputs broadcast against (B,) targets "
            "(checks/ob_mse_broadcast.py) reach the goal."
        ),
    )
    max_steps: int = param(
        500,
        fast=250,
        source=(
            "Measured on seeds 0-2: the correct setups of examples/, with their own optimizers, memorise in 51-313 "
            "steps (residual_cnn.py the slowest) and reach the fast goals in 36-210 steps."
        ),
    )
    loss_ratio: float = param(
        0.05,
        fast=0.15,
        source=(
            "Karpathy's recipe: a memorised batch reaches the lowest achievable loss; this share of the initial gap "
            "above the floor is that, with a margin. Measured on seeds 0-2: every correct setup of examples/ gets "
            "there within max_steps; the broken ob_*.py setups of checks/ end at >= 32% of their initial loss "
            "(ob_mse_broadcast.py the lowest) with the optimizer that cannot fit."
        ),
    )
    ce_loss_ratio: float = param(
        0.1,
        fast=0.3,
        source=(
            "Cross-entropy: every sample classified correctly counts as memorised too once the loss is below this "
            "share (right but unsaturated logits lower the loss slowly). Measured on seeds 0-2: the cross-entropy "
            "setup of checks/ that cannot memorise, ob_softmax_before_cross_entropy.py, ends at 56-57%."
        ),
    )
    fallback_lr: float = param(
        3e-4,
        source=(
            "The retry optimizer when yours does not memorise: Adam 3e-4, the safe default of Karpathy's recipe "
            '("Adam with a learning rate of 3e-4")'
        ),
    )
    default_retry_lr: float = param(
        1e-3,
        source=(
            "The retry LR when your optimizer already is Adam at fallback_lr (or the setup names none): "
            "torch.optim.Adam's default (Kingma & Ba 2015). Measured on seeds 0-2, fast budget: examples/cnn_bn.py, "
            "embedding_bag.py, multilabel.py and residual_cnn.py without their `optimizer` are still falling at "
            "step 250 with Adam 3e-4 and memorise with Adam 1e-3 in 129-210 steps."
        ),
    )
    # At 0.5% of the initial loss per 50 steps, the rest of a 500-step run wins at most 5%: a stalled run could only
    # pass by speeding up ~20x.
    stall_tol: float = param(
        0.005,
        source=(
            "Measured on seeds 0-2, both budgets: until they memorise, the correct setups of examples/ improve by "
            ">= 5.2% of the initial loss per 50 steps, those of checks/ by >= 1.5%, tests/setups/poisson_shift10.py "
            "(a loss + 10) by >= 0.9%; the broken ob_*.py setups of checks/ stall at steps 100-350."
        ),
    )
    unknown_floor_warn: float = param(
        0.25,
        source=(
            "With an estimated floor, a run ending below this share warns rather than fails; with a random forward "
            "(the fit of free outputs has no sampling noise, so the floor is out of reach) it is the goal. "
            "Measured on seeds 0-2: the broken ob_*.py setups of checks/ end at >= 32% (ob_sgd_lr_too_low.py 99.7%, "
            "ob_softmax_before_cross_entropy.py 56-57%, ob_sigmoid_on_regression.py 40-47%, ob_mse_broadcast.py "
            "32%); tests/setups/vae.py and checks/real/conv_vae.py (correct, sampling in forward) end at 19-20% and "
            "10-13% after 500 steps."
        ),
    )
    # A linear extrapolation of the last window's pace: optimistic for a decelerating curve, hence one horizon.
    slow_horizon: float = param(
        1.0,
        source=(
            "A run still falling at max_steps is slow, not broken, when its last 50 steps' pace, kept up for "
            "slow_horizon x max_steps more steps, reaches the goal. Measured on seeds 0-2, fast budget (goal 15%): "
            "the Adam retries still falling at the end project to 29-31% (ob_mse_broadcast.py), 30-37% "
            "(ob_sigmoid_on_regression.py) and 37-40% (ob_softmax_before_cross_entropy.py); full budget (goal 5%): "
            "32-40% (ob_sigmoid_on_regression.py). tests/setups/vae.py (correct) projects to -11% to -4% (fast)."
        ),
    )


# --- measure -----------------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One memorisation attempt: the loss before every step, and whether / when the goal was reached."""

    name: str
    losses: list[float] = field(default_factory=list)
    steps: int | None = None  # optimizer steps taken when the goal was first reached; None: never
    accuracy: float | None = None  # classification: last measured fraction of samples classified correctly
    stopped: str = "max_steps"  # why it ended: "memorised", "stalled", "diverged" or "max_steps"
    step_loss: float | None = None  # the setup's train_step returned this non-finite loss on a finite loss

    @property
    def diverged(self) -> bool:
        return self.stopped == "diverged"

    @property
    def ok(self) -> bool:
        return self.steps is not None

    @property
    def final(self) -> float:
        return self.losses[-1] if self.losses else math.nan


@dataclass(frozen=True)
class Goal:
    """Memorised: the loss below ``loss``, or (cross-entropy) every sample right and the loss below ``ce_loss``."""

    loss: float
    ce_loss: float | None = None


@dataclass
class Measurement:
    """The loss at init on the batch, its floor, and the memorisation runs."""

    samples: int
    max_steps: int
    initial: float  # the loss at init (not finite: nothing else was measured)
    floor: float = 0.0  # the lowest loss reachable on the batch (known, or estimated by a fit)
    # cross-entropy / BCE whose loss at init is below that of all-zero logits (an output bias set to the class prior):
    # the all-zero output's loss, which the shares are taken of instead (see `reference`); else None
    uninformed: float | None = None
    floor_known: bool = True
    stochastic: bool = False  # two forwards of the same batch differ (sampling in forward, functional dropout)
    goal: Goal = Goal(0.0)
    custom_optimizer: bool = True  # the setup names an optimizer
    user_desc: str = ""  # e.g. "Adam(lr=0.001)", "nncheck's default Adam(lr=0.0003)"
    user: Run | None = None  # None: the loss at init is not finite
    default_like: bool = False  # your optimizer is nncheck's default (Adam at fallback_lr)
    retry_lr: float = 0.0
    retry: Run | None = None  # Adam at retry_lr, trained when your optimizer does not memorise
    suspects: list[str] = field(default_factory=list)  # what looks wrong, when neither run memorises
    # the first layer's filters (a Conv2d on 1 or 3 channels): at init, after your run, after the retry
    filters: dict[str, torch.Tensor] = field(default_factory=dict)
    first_layer: str = ""

    @property
    def reference(self) -> float:
        """The loss the shares are taken of: the initial loss, or the all-zero output's when that is higher for
        cross-entropy / BCE (``uninformed``)."""
        return self.initial if self.uninformed is None else self.uninformed

    def share(self, loss: float) -> float:
        """``loss`` as a share of the reference loss (the initial loss), both above the floor."""
        return (loss - self.floor) / (self.reference - self.floor)

    @property
    def lenient(self) -> bool:
        """The floor is an estimate (or unreachable: the forward samples)."""
        return not self.floor_known or self.stochastic

    @property
    def retry_name(self) -> str:
        return f"Adam {_lr_text(self.retry_lr)}"


def measure(ctx: Context, p: Params) -> Measurement:
    """Train a fresh copy on `batch_size` samples with your optimizer, then (if it does not memorise) with Adam."""
    batch = ctx.slice_batch(ctx.batch(), p.batch_size)
    model = ctx.fresh_model(train=True, dropout=False)
    with torch.no_grad():
        out0, y0 = ctx.forward(model, batch)
        l_init = float(ctx.loss(out0, y0))
        l_zero = float(ctx.loss(torch.zeros_like(out0), y0)) if isinstance(out0, torch.Tensor) else 0.0
        again, _ = ctx.forward(model, batch)
    m = Measurement(samples=min(p.batch_size, ctx.batch_size(batch)), max_steps=p.max_steps, initial=l_init)
    if not math.isfinite(l_init):
        return m
    m.stochastic = not _same_output(out0, again)
    known = _known_floor(ctx, out0, y0)
    m.floor_known = known is not None
    m.floor = _floor(ctx, known, out0, y0, l_init, l_zero, m.samples)
    # a memorised batch is judged against an uninformed start: the goal of a classifier whose output bias holds the
    # class prior (Karpathy's "init well", what last-layer-bias advises) is the same as with a zero bias, not a
    # share of its already lower initial loss (which would ask more of the better-initialised model)
    if ctx.loss_kind in ("ce", "bce") and math.isfinite(l_zero) and l_zero > l_init:
        m.uninformed = l_zero
    gap = m.reference - m.floor
    # a random forward cannot reach its floor (the fit of free outputs has no sampling noise): its goal is the share
    # a broken setup never reaches (unknown_floor_warn), not the share of a deterministic memorisation
    loose = p.unknown_floor_warn if m.stochastic else 0.0
    ce = m.floor + max(p.ce_loss_ratio, loose) * gap if ctx.loss_kind == "ce" else None
    m.goal = Goal(m.floor + max(p.loss_ratio, loose) * gap, ce)

    conv = _first_conv(model)
    if conv is not None:
        m.first_layer = code_path(conv[0], model)
        m.filters["at init"] = conv[1].weight.detach().clone()
    user_opt = ctx.optimizer(model)
    m.custom_optimizer = ctx.setup.custom_optimizer
    desc = _describe_optimizer(user_opt)
    m.user_desc = desc if m.custom_optimizer else f"nncheck's default {desc}"
    if ctx.setup.train_step is not None:
        m.user_desc += " in your train_step"
    m.user = _memorise(ctx, "your optimizer", model, user_opt, batch, m.goal, p)
    if conv is not None:
        m.filters[f"after {len(m.user.losses) - 1} steps (yours)"] = conv[1].weight.detach().clone()
    if m.user.ok:
        return m

    # the second opinion: Adam at fallback_lr, or at default_retry_lr when your optimizer already is that
    m.default_like = not m.custom_optimizer or _is_fallback(user_opt, p.fallback_lr)
    m.retry_lr = float(p.default_retry_lr if m.default_like else p.fallback_lr)
    model = ctx.fresh_model(train=True, dropout=False)
    if ctx.setup.train_step is not None:
        ctx.load_scaler_states()  # the retry is a new run of your train_step: its GradScalers start afresh
    m.retry = _memorise(ctx, m.retry_name, model, torch.optim.Adam(model.parameters(), lr=m.retry_lr), batch, m.goal, p)
    retry_conv = _first_conv(model)
    if conv is not None and retry_conv is not None:
        m.filters[f"after {len(m.retry.losses) - 1} steps ({m.retry_name})"] = retry_conv[1].weight.detach().clone()
    if not m.retry.ok:
        m.suspects = _suspects(ctx, model, batch, out0, y0)
        if m.user.step_loss is not None:
            m.suspects.insert(
                0,
                STEP_NOT_FINITE.format(
                    loss=m.user.step_loss,
                    step=len(m.user.losses) - 1,
                    ok=m.user.losses[-2],
                    rerun=ctx.rerun("train-step"),
                ),
            )
    return m


def _first_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    """The model's first layer (the first module with parameters of its own, in definition order) when it is a
    Conv2d reading 1 or 3 channels (grey or RGB images, whose filters can be drawn); else None."""
    for name, mod in model.named_modules():
        if any(True for _ in mod.parameters(recurse=False)):
            ok = isinstance(mod, nn.Conv2d) and mod.in_channels in (1, 3) and mod.groups == 1
            return (name, mod) if ok else None
    return None


def _floor(ctx: Context, known: float | None, out0: Any, y0: Any, l_init: float, l_zero: float, n: int) -> float:
    """The floor the ratios are taken above: ``known``, else a fitted estimate, else 0; at most ``l_init``. Skips
    the probe when there is nothing to memorise (the loss starts at its floor) or no floor to aim at."""
    floor = known if known is not None else _fitted_floor(ctx, out0, y0)
    if floor is None and l_init < 0:
        raise ProbeSkip(
            f"the loss is negative at init ({l_init:.4g}) and nncheck finds no floor for it (it keeps falling as "
            "the outputs grow): a fraction of it is no memorisation target"
        )
    floor = min(floor or 0.0, l_init)
    tiny = max(TINY_LOSS, TINY_RELATIVE * abs(l_zero)) if math.isfinite(l_zero) else TINY_LOSS
    if l_init - floor <= tiny:
        how_known = "its floor" if known is not None else "the lowest loss any output reaches on it"
        raise ProbeSkip(
            f"the loss on {n} samples is already {l_init:.4g} at init ({how_known}: {floor:.4g}): nothing to memorise"
        )
    return floor


def _ce_floor(ctx: Context, num_classes: int) -> float:
    """The lowest reachable cross-entropy: 0, or the entropy of the smoothed targets with label smoothing."""
    eps = float(getattr(unwrap_loss(ctx.loss_fn), "label_smoothing", 0.0) or 0.0)
    if eps <= 0 or num_classes < 2:
        return 0.0
    hit, miss = 1 - eps + eps / num_classes, eps / num_classes
    return float(-(hit * math.log(hit) + (num_classes - 1) * miss * math.log(miss)))


def _known_floor(ctx: Context, out0: Any, y0: Any) -> float | None:
    """The lowest loss any output reaches on these targets, for losses where it is known; None otherwise."""
    inner = unwrap_loss(ctx.loss_fn)
    if ctx.loss_kind == "ce" and isinstance(out0, torch.Tensor):
        return _ce_floor(ctx, ctx.class_logits(out0).shape[1])
    if ctx.loss_kind == "mse" or isinstance(inner, (nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss)):
        return 0.0
    if is_nll(ctx.loss_fn) and isinstance(out0, torch.Tensor):
        return 0.0 if log_prob_dim(out0.detach()) is not None else None  # no floor on raw scores
    if not isinstance(y0, torch.Tensor) or not y0.is_floating_point():
        return 0.0 if ctx.loss_kind == "bce" else None
    y = y0.detach().double()
    if ctx.loss_kind == "bce":
        if bool(((y == 0) | (y == 1)).all()):
            return 0.0
        plain = getattr(inner, "weight", None) is None and getattr(inner, "pos_weight", None) is None
        if not plain or getattr(inner, "reduction", "mean") != "mean" or not bool(((y >= 0) & (y <= 1)).all()):
            return None
        return float(-(torch.xlogy(y, y) + torch.xlogy(1 - y, 1 - y)).mean())  # entropy of soft targets
    if isinstance(inner, nn.PoissonNLLLoss) and inner.log_input and not inner.full and bool((y >= 0).all()):
        # exp(o) - y o is smallest at o = log y: y - y log y (0 for y = 0, reached as o -> -inf)
        per_sample = y - torch.xlogy(y, y)
        return {"mean": float(per_sample.mean()), "sum": float(per_sample.sum())}.get(inner.reduction)
    return None


def _output_leaves(out: Any) -> list[torch.Tensor] | None:
    """The floating-point tensors of an output (a tensor, or a tuple / list of them); None for other outputs."""
    if isinstance(out, torch.Tensor):
        return [out] if out.is_floating_point() else None
    if isinstance(out, (tuple, list)) and any(isinstance(o, torch.Tensor) and o.is_floating_point() for o in out):
        return [o for o in out if isinstance(o, torch.Tensor) and o.is_floating_point()]
    return None


def _rebuild(out: Any, leaves: list[torch.Tensor]) -> Any:
    if isinstance(out, torch.Tensor):
        return leaves[0]
    it = iter(leaves)
    items = [next(it) if isinstance(o, torch.Tensor) and o.is_floating_point() else o for o in out]
    return type(out)(items) if isinstance(out, list) else tuple(items)


def _fitted_floor(ctx: Context, out0: Any, y0: Any) -> float | None:
    """Estimate the floor of an unknown loss: fit free outputs (no model) to the targets; the lowest loss seen.
    An upper bound of the true floor. None when the output cannot be fitted, or when the fit has not settled
    (still falling by FLOOR_SETTLED of its total drop over its second half: an unbounded loss such as NLL of raw
    scores, where a floor means nothing)."""
    leaves = _output_leaves(out0)
    if leaves is None:
        return None
    free = [t.detach().clone().requires_grad_(True) for t in leaves]
    opt = torch.optim.Adam(free, lr=FLOOR_FIT_LR)
    best = math.inf
    halfway = math.inf
    try:
        for step in range(FLOOR_FIT_STEPS + 1):
            if step == FLOOR_FIT_STEPS // 2:
                halfway = best
            if step % 50 == 0:
                ctx.check_time()
            opt.zero_grad(set_to_none=True)
            loss = ctx.loss(_rebuild(out0, free), y0)
            value = float(loss.detach())
            if not math.isfinite(value):
                break
            best = min(best, value)
            if step < FLOOR_FIT_STEPS:
                loss.backward()
                opt.step()
    except (RuntimeError, TypeError, ValueError):
        return None
    first = float(ctx.loss(out0, y0).detach())
    if not math.isfinite(best) or halfway - best > FLOOR_SETTLED * max(first - best, 1e-12):
        return None
    return best


def _same_output(a: Any, b: Any) -> bool:
    """True when two forwards of the same batch gave the same tensors (False: sampling in forward)."""
    la, lb = _output_leaves(a), _output_leaves(b)
    if la is None or lb is None or len(la) != len(lb):
        return True
    return all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(la, lb))


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
    ctx: Context, name: str, model: nn.Module, opt: torch.optim.Optimizer, batch: Any, goal: Goal, p: Params
) -> Run:
    """Train on one batch for at most `max_steps` steps; before each step check the goal on the forward that step
    needs anyway (no extra forward pass; the accuracy is computed only when the loss is low enough). Stops as soon
    as the goal is reached, the loss stops being finite, or the loss stalls. With the setup's ``train_step`` each
    step is that function, and the goal is checked on a forward without gradient before it (its own loss may be
    scaled, accumulated or computed under autocast); a step whose own loss is not finite ends the run as diverged."""
    run = Run(name)
    best: list[float] = []
    out: Any = None
    y: Any = None
    custom = ctx.setup.train_step is not None
    for step in range(p.max_steps + 1):
        ctx.check_time()
        opt.zero_grad(set_to_none=True)
        with torch.set_grad_enabled(not custom):
            out, y = ctx.forward(model, batch)
            loss = ctx.loss(out, y)
        value = float(loss.detach())
        run.losses.append(value)
        if not math.isfinite(value):
            run.stopped = "diverged"
            break
        best.append(min(value, best[-1]) if best else value)
        if value < goal.loss or _all_right(ctx, goal, value, out, y):
            run.steps, run.stopped = step, "memorised"
            break
        if step == p.max_steps:
            break
        if _stalled(best, step, run.losses[0], p.stall_tol):
            run.stopped = "stalled"
            break
        if custom:
            own = ctx.user_train_step(model, opt, batch)
            if not math.isfinite(own):  # the step's own loss (autocast, a scaled loss) is not finite
                run.losses.append(own)
                run.step_loss = own
                run.stopped = "diverged"
                break
            continue
        loss.backward()
        opt.step()
    run.accuracy = _accuracy(ctx, out, y)
    return run


def _all_right(ctx: Context, goal: Goal, loss: float, out: Any, y: Any) -> bool:
    """Cross-entropy: every sample classified correctly and the loss below the goal's ``ce_loss``."""
    return goal.ce_loss is not None and loss < goal.ce_loss and (_accuracy(ctx, out, y) or 0.0) >= 1.0


def _projected(run: Run, share: Callable[[float], float], horizon: int) -> float:
    """The share of the initial loss the run would reach after ``horizon`` more steps at its last window's pace."""
    if run.stopped != "max_steps" or len(run.losses) <= STALL_WINDOW:
        return math.inf
    best = [min(run.losses[: i + 1]) for i in range(len(run.losses))]
    pace = (best[-1 - STALL_WINDOW] - best[-1]) / STALL_WINDOW
    return share(best[-1] - pace * horizon)


def _is_fallback(opt: torch.optim.Optimizer, lr: float) -> bool:
    """True when the user's optimizer already is Adam at the fallback LR (a retry would repeat the same run)."""
    g = opt.param_groups[0]
    return type(opt) is torch.optim.Adam and math.isclose(float(g.get("lr", -1)), lr) and not g.get("weight_decay")


def _suspects(ctx: Context, model: nn.Module, batch: Any, out0: Any, y0: Any) -> list[str]:
    """What looks wrong with a model that cannot memorise (``model``: the trained retry; ``out0``, ``y0``: the
    output and target at init): targets far from the outputs, then the suspects of ``_diagnose``."""
    found = _diagnose(ctx, model, batch)
    offset = _offset_at_init(out0, y0) if ctx.loss_kind == "mse" else None
    if offset:
        found.insert(0, f"{offset} (see `{ctx.rerun('last-layer-bias')}`)")
    return found


def _offset_at_init(out0: Any, y0: Any) -> str | None:
    """MSE targets far from the outputs at init (> OFFSET_STDS target stds): the steps go into moving the output's
    mean."""
    if not (isinstance(out0, torch.Tensor) and isinstance(y0, torch.Tensor) and y0.is_floating_point()):
        return None
    gap = abs(float(y0.mean()) - float(out0.mean()))
    std = float(y0.float().std()) if y0.numel() > 1 else 0.0
    if gap <= OFFSET_STDS * max(std, 1e-12):
        return None
    return (
        f"the targets average {float(y0.mean()):.4g} (std {std:.3g}) while the outputs at init average "
        f"{float(out0.mean()):.4g}: start the output bias at the target mean or standardise the targets"
    )


# the last module of a model, when it squashes the output, and why that stops memorisation (by loss kind)
SQUASHING = (nn.Softmax, nn.Sigmoid, nn.ReLU, nn.Tanh, nn.Softmax2d)
SQUASHING_WHY = {
    "ce": "CrossEntropyLoss applies log-softmax itself; return the raw logits",
    "bce": "BCEWithLogitsLoss applies the sigmoid itself; return the raw logits",
}
BOUNDED_WHY = "it bounds the outputs, so targets outside its range cannot be reached"


def _diagnose(ctx: Context, model: nn.Module, batch: Any) -> list[str]:
    """Cheap, specific suspects for a model that cannot memorise: an activation squashing the output,
    shapes that broadcast in the loss, parameters without gradient."""
    found: list[str] = []
    model.zero_grad(set_to_none=True)
    runs = ctx.execution_order(model, batch)
    out, y = ctx.forward(model, batch)
    ctx.loss(out, y).backward()
    last = runs[-2] if len(runs) >= 2 else None
    if last is not None and isinstance(last[1], SQUASHING):
        why = SQUASHING_WHY.get(ctx.loss_kind, BOUNDED_WHY)
        found.append(f"the model output comes out of `{type(last[1]).__name__}` (`{code_path(last[0], model)}`): {why}")
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


# --- judge -------------------------------------------------------------------------------------------------------


def judge(m: Measurement, p: Params, rerun: Callable[..., str]) -> Findings:
    """The verdict: pass when a run memorises (yours, or the retry when the setup names no optimizer); slow (warn)
    when a run is still falling fast enough; fail on your optimizer when only the retry memorises; else fail on the
    model, loss or data. ``rerun(*probe_ids)``: the re-run line for hints (``ctx.rerun``)."""
    f = Findings()
    user, retry = m.user, m.retry
    if user is None:
        f.measured, f.expected = {"initial_loss": m.initial}, {"initial_loss": "finite"}
        f.fail(NOT_FINITE.format(n=m.samples, loss=m.initial), NOT_FINITE_HINT.format(rerun=rerun("numerics")))
        return f
    f.measured, f.expected, f.series = _measured(m), _expected(m), {"loss": _plot(m)}
    if m.filters:
        f.series["first_layer_filters"] = image_grid(
            f"First-layer filters ({m.first_layer})", m.filters, caption=FILTERS_CAPTION
        )
    if user.ok or retry is None:
        return f
    if retry.ok and not m.custom_optimizer:
        return f  # nncheck's default optimizer is slow here, the retry memorises: the setup is fine
    w = _words(m, p)
    if retry.ok and user.stopped == "max_steps":  # the model is fine (the retry memorises); yours is slower
        f.warn(
            SLOW_YOURS.format(**w, pct=100 * m.share(user.final), steps=len(user.losses) - 1),
            SLOW_YOURS_HINT.format(**w, rerun=rerun("learning-rate")),
        )
        return f
    if retry.ok:
        cause = "too high" if user.diverged else "too low" if m.share(user.final) > HARDLY_MOVED else "not right"
        f.fail(YOUR_OPTIMIZER.format(**w), YOUR_OPTIMIZER_HINT.format(**w, cause=cause, rerun=rerun("learning-rate")))
        return f

    horizon = int(p.slow_horizon * m.max_steps)
    slow = [r for r in (user, retry) if _projected(r, m.share, horizon) < p.loss_ratio]
    best = min((r for r in (user, retry) if not r.diverged), key=lambda r: r.final, default=retry)
    if slow:
        run = min(slow, key=lambda r: r.final)
        label = m.retry_name if run is retry else m.user_desc
        f.warn(
            SLOW.format(**w, pct=100 * m.share(run.final), steps=len(run.losses) - 1, label=label),
            SLOW_HINT.format(**w),
        )
    elif m.lenient and m.share(best.final) < p.unknown_floor_warn:
        f.warn(
            UNKNOWN_FLOOR.format(**w, pct=100 * m.share(best.final)),
            UNKNOWN_FLOOR_HINT.format(**w, warn_pct=100 * p.unknown_floor_warn),
        )
    else:
        tried = f"with {m.user_desc} nor with {m.retry_name}" if m.default_like else f"even with {m.retry_name}"
        suspects = f"Suspects: {'; '.join(m.suspects)}." if m.suspects else NO_SUSPECTS
        f.fail(BROKEN.format(**w, tried=tried), BROKEN_HINT.format(**w, suspects=suspects))
    return f


# --- word --------------------------------------------------------------------------------------------------------

PASSED = "memorised {n} samples in {steps} steps with {user}: loss {initial:.4g} -> {final:.4g}{note}"
PASSED_RETRY = (
    "memorised {n} samples in {retry_steps} steps with {retry}; {user}, the optimizer nncheck uses when the setup "
    "names none, is slow here ({both}){note}"
)
NOT_FINITE = "loss at init on {n} samples is {loss}: not finite"
NOT_FINITE_HINT = "Run `{rerun}` to find the first module that produces a non-finite value."
SLOW_YOURS = (
    "slow to memorise with {user}: {pct:.0f}% of the initial loss after {steps} steps, still falling; {retry} "
    "memorises in {retry_steps} steps{note}"
)
SLOW_YOURS_HINT = (
    "{both}. A higher learning rate fits faster: try {optimizer_line}, or run `{rerun}` to pick one.{step_note}"
)
STEP_NOTE = (
    " The step is your train_step's (the retry runs it too): gradient clipping or a loss scale in it changes the "
    "effective step size (the train-step probe reports the clip ratio)."
)
YOUR_OPTIMIZER = (
    "memorises with {retry} but not with your optimizer: your LR / optimizer settings are the problem ({both}){note}"
)
YOUR_OPTIMIZER_HINT = (
    "The learning rate or settings of {user} look {cause}: it cannot fit {n} samples while {retry} does in "
    "{retry_steps} steps. Run `{rerun}` to find a working LR, or start from {optimizer_line}.{step_note}"
)
SLOW = "slow to memorise: {pct:.0f}% of the initial loss after {steps} steps with {label}, still falling{note}"
SLOW_HINT = (
    "{both}. A working setup gets below {goal_pct:.0f}% within {max_steps} steps; this one is still on its way. "
    "Raise `max_steps` in [tool.nncheck.probes.overfit-batch] to confirm it gets there, or try a higher learning rate."
)
UNKNOWN_FLOOR = "{n} samples only get to {pct:.0f}% of the initial loss above its floor (goal {goal_pct:.0f}%){note}"
UNKNOWN_FLOOR_HINT = (
    "{both}. The floor of this loss is not known exactly (or the forward samples), so a run ending below "
    "{warn_pct:.0f}% is not failed. If the loss has a known minimum, subtract it in your loss so that it reaches 0 "
    "when the batch is memorised."
)
STEP_NOT_FINITE = (
    "your train_step returned a {loss} loss at step {step} where nncheck's forward of the same batch gives {ok:.4g}: "
    "the step itself (autocast, a loss scale) makes it non-finite (see `{rerun}`)"
)
BROKEN = "cannot memorise {n} samples {tried}: the model, the loss or the data pipeline is broken{note}"
BROKEN_HINT = "{both}; a working setup gets below {goal_pct:.0f}% within {max_steps} steps. {suspects}"
NO_SUSPECTS = (
    "Check what follows the output layer (no softmax before CrossEntropyLoss, no ReLU / sigmoid on a regression "
    "output), that output and target shapes match in the loss, that no `.detach()` cuts the graph, and that the "
    "targets belong to the inputs they come with."
)
FILTERS_CAPTION = (
    "each filter scaled to its own range; trained filters look smooth (edges, colour blobs), noisy ones mean "
    "too few steps, too high an LR or too little regularisation (cs231n)"
)
UNINFORMED_NOTE = (
    "ratios are taken of {zero:.4g}, the loss of all-zero logits (an uninformed output), which is above the "
    "{initial:.4g} at init"
)
FLOOR_NOTE = "ratios are taken above the loss's floor {floor:.4g} ({origin})"
STOCHASTIC_NOTE = (
    "two train-mode forwards of the same batch with dropout modules off differ: the forward is random "
    "(sampling as in a VAE, or functional dropout), so the loss cannot reach its floor: the goal is {pct:.0f}% of "
    "the initial loss above it"
)


def overfit_message(m: Measurement) -> str:
    """The message of a pass: the run that memorised (the retry only when the setup names no optimizer)."""
    if m.user is None or (not m.user.ok and (m.retry is None or not m.retry.ok)):
        return ""
    w = _words(m)
    return PASSED.format(**w, steps=m.user.steps) if m.user.ok else PASSED_RETRY.format(**w)


def _words(m: Measurement, p: Params | None = None) -> dict[str, Any]:
    """The fields the message and hint templates use."""
    assert m.user is not None
    w: dict[str, Any] = {
        "n": m.samples,
        "initial": m.initial,
        "final": m.user.final,
        "user": m.user_desc,
        "max_steps": m.max_steps,
        "note": _note(m),
        "step_note": STEP_NOTE if m.user_desc.endswith(" in your train_step") else "",
    }
    if p is not None:
        w["goal_pct"] = 100 * p.loss_ratio
    if m.retry is not None:
        label = f"your {m.user_desc}" if m.custom_optimizer else m.user_desc
        w.update(
            retry=m.retry_name,
            retry_steps=m.retry.steps,
            both=f"{_how(m, label, m.user)}; {_how(m, m.retry_name, m.retry)}",
            optimizer_line=f"`optimizer = lambda p: torch.optim.Adam(p, lr={_lr_text(m.retry_lr)})`",
        )
    return w


def _how(m: Measurement, label: str, run: Run) -> str:
    """One run in a few words: its loss from start to end and how it ended."""
    k = len(run.losses) - 1
    if run.diverged:
        return f"{label}: the loss became non-finite at step {k}"
    what = {"stalled": "stalled", "max_steps": "still falling"}.get(run.stopped, "memorised")
    return f"{label}: {m.initial:.4g} -> {run.final:.4g} ({100 * m.share(run.final):.0f}%), {what} at step {k}"


def _note(m: Measurement) -> str:
    """What qualifies the ratios: a known or estimated floor, a random forward."""
    notes = []
    if m.uninformed is not None:
        notes.append(UNINFORMED_NOTE.format(zero=m.uninformed, initial=m.initial))
    if m.floor:
        origin = "known" if m.floor_known else "estimated by fitting the outputs directly"
        notes.append(FLOOR_NOTE.format(floor=m.floor, origin=origin))
    if m.stochastic:
        notes.append(STOCHASTIC_NOTE.format(pct=100 * m.share(m.goal.loss)))
    return f" (note: {'; '.join(notes)})" if notes else ""


def _measured(m: Measurement) -> dict[str, Any]:
    user = m.user
    assert user is not None
    measured: dict[str, Any] = {
        "samples": m.samples,
        "initial_loss": m.initial,
        "final_loss": user.final,
        "final_ratio": m.share(user.final),
        "steps": len(user.losses) - 1,
        "stopped": user.stopped,
        "optimizer": m.user_desc,
    }
    if m.floor:
        measured["loss_floor"] = m.floor
    if m.uninformed is not None:
        measured["uninformed_loss"] = m.uninformed
    if not m.floor_known:
        measured["loss_floor_estimated"] = True
    if user.accuracy is not None:
        measured["accuracy"] = user.accuracy
    if m.stochastic:
        measured["stochastic_forward"] = True
    if m.retry is not None:
        measured.update(
            retry_optimizer=m.retry_name,
            retry_final_loss=m.retry.final,
            retry_final_ratio=m.share(m.retry.final),
            retry_steps=len(m.retry.losses) - 1,
            retry_stopped=m.retry.stopped,
        )
    return measured


def _expected(m: Measurement) -> dict[str, Any]:
    expected: dict[str, Any] = {"loss_below": m.goal.loss, "max_steps": m.max_steps}
    if m.goal.ce_loss is not None:
        expected["or_all_correct_and_loss_below"] = m.goal.ce_loss
    return expected


def _plot(m: Measurement) -> dict[str, Any]:
    curves = {r.name: r.losses for r in (m.user, m.retry) if r is not None}
    refs = {"goal": m.goal.loss if m.goal.loss > 0 else None, "floor": m.floor or None}
    return line_plot(f"Loss on one batch of {m.samples} samples", curves, yscale="auto", refs=refs)


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


@probe("overfit-batch", title="Overfit one batch", order=30, params=Params)
def overfit_batch(ctx: Context, p: Params) -> Result:
    """Checks that the model, loss and optimizer can memorise a handful of samples.

    What it does:
        Cuts the first batch to a few samples ({batch_size}) and trains a fresh copy of the model on
        them alone, with your optimizer, in train mode with dropout modules switched off (BatchNorm keeps its
        batch statistics), for a bounded number of steps ({max_steps}). It stops as soon as
        the batch is memorised: the loss is below a share of its initial value ({loss_ratio}), or, for
        cross-entropy, every sample (every token of a sequence) is classified correctly and the loss is below a
        looser share ({ce_loss_ratio}). For cross-entropy and BCE the share is of the larger of the initial
        loss and the loss of all-zero logits (an uninformed output): a classifier whose output bias starts at
        the class prior starts below the latter, and is asked as much as one with a zero bias, not more.
        The shares are taken above the loss's floor: the entropy
        of smoothed or soft targets (label smoothing, BCE), mean(y - y log y) for PoissonNLLLoss(log_input=True),
        0 for MSE / L1; for other losses (custom functions) the floor is estimated by fitting free outputs to the
        targets. The goal is checked on the forward pass each step makes anyway. A run also stops when it
        stalls: over 50 steps its best loss improved by less than a share of the initial loss ({stall_tol}).
        If your optimizer does not get there, a second fresh copy is trained with Adam ({fallback_lr}),
        or with Adam at {default_retry_lr} when your optimizer already is Adam at fallback_lr
        (nncheck's default when the setup names none). The loss curves of both runs are kept for plots, and,
        when the model's first layer is a Conv2d on 1 or 3 channels, its filters at init and after each run
        (an image grid in the HTML report: cs231n's "visualise the first-layer weights", smooth vs noisy).
        With a `train_step` in the setup, both runs step with it (its clipping, autocast and loss scaling
        included; its GradScalers start afresh for each run), the goal checked on a forward without gradient
        before each step; a step whose own loss is not finite ends the run.

    Why is this bad?
        Any working network memorises a handful of samples within a few hundred steps (Karpathy's recipe: "overfit one
        batch"; cs231n: "overfit a tiny subset of data"). When it cannot, no amount of data or training time
        will help: either the optimizer settings make no progress (LR far too low, zero, or diverging), or the
        model / loss cannot represent the targets (softmax before CrossEntropyLoss, a sigmoid or ReLU on a
        regression output, output and target shapes broadcasting in the loss, parameters cut off the graph).

    Thresholds:
        pass when the loss falls below loss_ratio of its initial value (above the floor), or (cross-entropy)
        all samples are right and the loss is below ce_loss_ratio. Your run ends at max_steps still falling (no
        stall) while the retry memorises: slow, warn. Neither memorises but one ends still falling fast enough
        to reach the goal in {slow_horizon} x max_steps more steps: slow, warn. With an estimated
        floor, a run ending below a share of the initial loss ({unknown_floor_warn}) warns; a random forward
        (a VAE's sampling) cannot reach its floor, so that share is its goal. Otherwise fail. Measured:
        correct examples pass in 51-313 steps (their own optimizers); the broken ob_*.py setups of checks/
        end at 32-100% of their initial loss. A stall leaves at most 5% to win in 500 steps.

    How to fix:
        "memorises with Adam 3e-4 but not with your optimizer": fix the learning rate or optimizer settings
        (run `nncheck run FILE --only learning-rate`). "cannot memorise ... even with Adam": look at what
        follows the output layer, at the shapes the loss compares, and at detached tensors; the hint lists the
        suspects it found (the last module, broadcasting shapes, parameters without gradient). "slow to
        memorise": raise the learning rate, or `max_steps` to confirm. Functional dropout
        (`F.dropout(..., training=self.training)`) stays on: if a model only memorises without it, expect a
        noisier curve.

    Example:
        A classifier ending in `nn.Softmax(dim=1)` trained with CrossEntropyLoss: loss 1.62 -> 0.92 (57% of
        initial), stalled: fail, "cannot memorise 4 samples even with Adam 3e-4", suspect: `Softmax`.
    """
    m = measure(ctx, p)
    return judge(m, p, ctx.rerun).result(overfit_message(m))
