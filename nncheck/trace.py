"""The shared training trace: one seeded run of the user's optimizer at the user's LR, recorded once per setup and
read by every probe that needs to see training (numerics, gradient-flow, determinism, learning-rate).

Before it, each of those probes trained its own copy of the model for the same purpose; the trace runs the steps
once and records what they need at each step: the loss, which parameters got a gradient (non-zero, finite), which
ones moved, the gradient / weight norms per module at the first steps, the update / weight ratios of the first
step, a fingerprint of every parameter and buffer after each step, and the first non-finite value (output, loss,
gradient or update). A probe asks for ``ctx.trace(steps)``: the trace is extended to that many steps if it is shorter,
and since the random generators are saved at its end and restored when it is extended, a trace built in one go and
one built in pieces are identical: no verdict depends on which probe asked first.

The run: a copy of the model at init in train mode (dropout as the user trains), the user's optimizer, the run's
seed, the first ``TRACE_BATCHES`` cached batches in turn (one batch fewer when the data has no more: the next one is
held out). Every ``CHECKPOINT_EVERY`` steps (and at init) it records the loss of each training batch and of the
held-out batch, with dropout off and without gradient, buffers (BatchNorm statistics) and random generators put
back: the learning-rate probe's "before / after", the input-independent probe's real-input curve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nncheck.modelgraph import forward_hooks, preserved_buffers, without_dropout
from nncheck.state import RngStates, preserved_global_state, preserved_rngs
from nncheck.tensors import iter_tensors

if TYPE_CHECKING:
    from nncheck.context import Context
    from nncheck.setup import Batch

# Batches the trace cycles through, the next cached one being held out: the input-independent probe's split (its
# thresholds were measured with 3 training batches); one pass over them averages out batches of different
# difficulty for the learning-rate probe.
TRACE_BATCHES = 3
# Steps between two checkpoints (the loss of the held-out batch, dropout off): the input-independent probe's
# evaluation interval. Every TRAIN_EVAL_EVERY steps the checkpoint also holds the loss of each training batch (the
# learning-rate probe's "after", its confirm lengths being multiples of it).
CHECKPOINT_EVERY = 5
TRAIN_EVAL_EVERY = 10
# Steps whose per-module gradient table is kept: step 0 (at init) and step 1 (when a zero-initialised module blocked
# every gradient behind it at step 0, e.g. a zero-initialised output layer).
MODULE_TABLE_STEPS = 2


@dataclass
class Event:
    """The first non-finite value of the trace. ``stage``: "output", "loss" or "gradient" of step ``step`` (the
    update of that step was not applied; ``rng`` replays the step's random draws), or "update": the optimizer step
    ``step`` left ``tensor`` non-finite although its gradients were finite."""

    stage: str
    step: int
    batch: int  # index into Trace.batches
    rng: tuple[torch.Tensor, torch.Tensor | None] | None = None
    loss: float = math.nan
    tensor: str = ""


@dataclass
class Checkpoint:
    """Losses after ``step`` steps, dropout off, no gradient: per training batch, and on the held-out batch."""

    step: int
    train: list[float] | None  # None between two training-batch evaluations (see TRAIN_EVAL_EVERY)
    heldout: float | None

    @property
    def train_mean(self) -> float:
        return sum(self.train) / len(self.train) if self.train else math.nan


@dataclass
class ModuleGrads:
    """A module's gradient and weight norms (weight and bias together) at one step."""

    grad_norm: float
    weight_norm: float


@dataclass
class Trace:
    """What the shared training run recorded; see the module docstring. Step ``k`` is the k-th optimizer step
    (0-based); lists are indexed by step."""

    batches: list[Any]
    heldout: Any  # a batch the trace never trains on (None when the data has a single batch)
    optimizer: str
    group_lrs: list[float]
    checkpoints: dict[int, Checkpoint] = field(default_factory=dict)  # at step 0 and every CHECKPOINT_EVERY steps
    losses: list[float] = field(default_factory=list)  # training loss of each step, before its update (finite)
    event: Event | None = None
    updates: int = 0  # optimizer steps applied
    first_grad: dict[str, int] = field(default_factory=dict)  # parameter -> first step it had a gradient
    first_nonzero: dict[str, int] = field(default_factory=dict)  # ... a non-zero gradient
    first_nonfinite: dict[str, int] = field(default_factory=dict)  # ... a non-finite gradient
    first_changed: dict[str, int] = field(default_factory=dict)  # ... first step whose update changed it
    module_order: list[str] = field(default_factory=list)  # modules with parameters, in the order step 0 ran them
    module_grads: list[dict[str, ModuleGrads]] = field(default_factory=list)  # per step < MODULE_TABLE_STEPS
    update_ratios: dict[str, float] = field(default_factory=dict)  # module -> ||update|| / ||weight|| of step 0
    fingerprints: list[dict[str, tuple[float, float]]] = field(default_factory=list)  # state after each step
    model: nn.Module | None = None  # the trained copy (read it, do not train it)
    optimizer_state: torch.optim.Optimizer | None = None
    # per batch of batches + [heldout] at step 0: the output's shape and dtype (None when the output is not one
    # tensor) and the targets, from the model at init (``Context.init_forward``)
    init_outputs: list[tuple[tuple[torch.Size, torch.dtype] | None, Any]] = field(default_factory=list)
    _params0: dict[str, torch.Tensor] = field(default_factory=dict)
    _rngs: RngStates | None = None
    _scalers: list[dict[str, Any]] = field(default_factory=list)  # the states of a custom train step's GradScalers

    @property
    def steps(self) -> int:
        """Steps run (the step of a non-finite output / loss / gradient counts: it ran, its update did not)."""
        return self.updates if self.event is None or self.event.stage == "update" else self.updates + 1

    @property
    def init_losses(self) -> list[float]:
        """Per training batch, at init (dropout off, no gradient)."""
        train = self.checkpoints[0].train
        assert train is not None
        return train

    @property
    def stopped(self) -> bool:
        return self.event is not None

    def event_within(self, steps: int) -> Event | None:
        """The non-finite event if it happened in the first ``steps`` steps."""
        return self.event if self.event is not None and self.event.step < steps else None

    def losses_within(self, steps: int) -> list[float]:
        """The training losses of the first ``steps`` steps, ending with the non-finite one if the loss went there."""
        out = self.losses[:steps]
        e = self.event_within(steps)
        if e is not None and e.stage in ("loss", "output") and len(out) == e.step:
            out.append(e.loss)
        return out


# ---------------------------------------------------------------------------------------------- helpers
def fingerprint(model: nn.Module) -> dict[str, tuple[float, float]]:
    """Per state-dict tensor, (sum, sum of squares) in float64: equal states give equal fingerprints, and a change
    of one element by one float32 ulp changes them (float64 holds float32 sums of up to 2**29 terms exactly)."""
    items = [(k, v) for k, v in model.state_dict().items() if isinstance(v, torch.Tensor) and v.numel()]
    if not items:
        return {}
    flat = [v.detach().reshape(-1).to(torch.float64) for _, v in items]
    sums = torch.stack([f.sum() for f in flat]).tolist()
    squares = torch.stack([f.square().sum() for f in flat]).tolist()
    return {k: (s, q) for (k, _), s, q in zip(items, sums, squares)}


def eval_losses(ctx: Context, model: nn.Module, batches: list[Any]) -> list[float]:
    """The loss of each batch without gradient, dropout modules off, in the model's mode otherwise; the model's
    buffers (BatchNorm statistics a train-mode forward updates), modes and every random generator are put back."""
    modes = {m: m.training for m in model.modules()}
    try:
        with preserved_rngs(), preserved_buffers(model), torch.no_grad():
            without_dropout(model)
            return [float(ctx.batch_loss(model, b)) for b in batches]
    finally:
        for m, mode in modes.items():
            m.training = mode


def _has_own_params(m: nn.Module) -> bool:
    return any(True for _ in m.parameters(recurse=False))


def module_params(model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Trainable parameters grouped by the module that owns them (weight and bias of one module together)."""
    out: dict[str, list[tuple[str, nn.Parameter]]] = {}
    for mname, m in model.named_modules():
        ps = [(f"{mname}.{n}" if mname else n, p) for n, p in m.named_parameters(recurse=False) if p.requires_grad]
        if ps:
            out[mname] = ps
    return out


def module_grads(model: nn.Module, groups: dict[str, list[tuple[str, nn.Parameter]]]) -> dict[str, ModuleGrads]:
    """||grad|| and ||weight|| per module over its own parameters that have a gradient. Embedding rows that got no
    gradient (tokens absent from the batch) are left out of ||weight|| (they say nothing about the flow)."""
    mods = dict(model.named_modules())
    out: dict[str, ModuleGrads] = {}
    for name, ps in groups.items():
        g2 = w2 = 0.0
        for _, p in ps:
            if p.grad is None:
                continue
            g, w = p.grad.detach().float(), p.detach().float()
            if isinstance(mods[name], (nn.Embedding, nn.EmbeddingBag)) and g.dim() == 2:
                used = g.ne(0).any(dim=1)
                g, w = g[used], w[used]
            g2 += float(g.pow(2).sum())
            w2 += float(w.pow(2).sum())
        if g2 or w2:
            out[name] = ModuleGrads(math.sqrt(g2), math.sqrt(w2))
    return out


def _norm(ts: list[torch.Tensor]) -> float:
    return math.sqrt(sum(float(t.detach().double().pow(2).sum()) for t in ts)) if ts else 0.0


def _all_finite(tensors: list[torch.Tensor]) -> bool:
    """All finite, in one reduction: the largest max-abs value is NaN or inf exactly when one element is."""
    if not tensors:
        return True
    norms = torch._foreach_norm([t.detach().float() for t in tensors], ord=math.inf)
    return bool(torch.isfinite(torch.stack(norms).max()))


def _loss_and_output_sum(loss: torch.Tensor, out: Any) -> tuple[float, float]:
    """The loss and the sum of every float output, in one device sync (a NaN / inf output makes the sum non-finite;
    a huge finite sum may overflow too: the caller confirms element-wise)."""
    parts = [loss.detach().float().reshape(())]
    parts += [t.detach().float().sum() for t in iter_tensors(out) if t.is_floating_point() and t.numel()]
    values = torch.stack(parts).tolist()
    return values[0], sum(values[1:])


def _rng_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


# ---------------------------------------------------------------------------------------------- recording
def start(ctx: Context, model: nn.Module | None = None) -> Trace:
    """A trace of 0 steps: the model copy (or ``model``, in train mode), the optimizer, the losses at init."""
    with preserved_global_state():
        ctx.seed_all()
        model = ctx.fresh_model(train=True) if model is None else model.train()
        ctx.seed_all()
        opt = ctx.optimizer(model)
        cached = ctx.batches(TRACE_BATCHES + 1)
        batches = cached[: min(TRACE_BATCHES, len(cached) - 1)] if len(cached) > 1 else cached
        trace = Trace(
            batches=batches,
            heldout=cached[len(batches)] if len(cached) > len(batches) else None,
            optimizer=type(opt).__name__,
            group_lrs=[float(g["lr"]) for g in opt.param_groups if "lr" in g],
            model=model,
            optimizer_state=opt,
        )
        _checkpoint(ctx, trace)
        trace._params0 = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        trace._rngs = RngStates.capture()
        trace._scalers = ctx.scaler_states() if ctx.setup.train_step is not None else []
    return trace


def extend(ctx: Context, trace: Trace, steps: int) -> None:
    """Run the trace on to ``steps`` steps (no-op when it is that long or stopped at a non-finite value)."""
    if trace.stopped or trace.steps >= steps:
        return
    model, opt = trace.model, trace.optimizer_state
    assert model is not None and opt is not None and trace._rngs is not None
    names = {id(p): n for n, p in model.named_parameters()}
    params = [p for p in model.parameters() if p.requires_grad]
    groups = module_params(model)
    with preserved_global_state():
        trace._rngs.restore()
        if trace._scalers:
            ctx.load_scaler_states(trace._scalers)
        while trace.steps < steps and not trace.stopped:
            ctx.check_time()
            if trace.updates == 0:  # the first step records the module order through hooks: not timed
                _step(ctx, trace, model, opt, params, names, groups)
                continue
            with ctx.timed_step(trace.batches[trace.updates % len(trace.batches)]):  # a step time sample (context.py)
                _step(ctx, trace, model, opt, params, names, groups)
        trace._rngs = RngStates.capture()
        if trace._scalers:
            trace._scalers = ctx.scaler_states()


class _NonFiniteGradient(Exception):
    """Raised by the optimizer's step pre-hook to stop a user's train step whose gradients are not finite."""


def _record_grads(
    trace: Trace,
    k: int,
    model: nn.Module,
    params: list[nn.Parameter],
    names: dict[int, str],
    groups: Any,
    skipped: bool = False,
) -> bool:
    """Record which parameters have a gradient (non-zero, finite) at step ``k``; True when one is not finite. A
    ``skipped`` step (a GradScaler found inf and did not step: its scaled gradients may be inf by design) records
    which parameters got a gradient only."""
    with_grad = [p for p in params if p.grad is not None]
    if with_grad:
        norms = torch.stack(torch._foreach_norm([p.grad.detach().float() for p in with_grad], ord=math.inf)).tolist()
        for p, n in zip(with_grad, norms):
            name = names[id(p)]
            trace.first_grad.setdefault(name, k)
            if n != 0:
                trace.first_nonzero.setdefault(name, k)
            if not math.isfinite(n) and not skipped:
                trace.first_nonfinite.setdefault(name, k)
    if k < MODULE_TABLE_STEPS and len(trace.module_grads) == k:
        trace.module_grads.append(module_grads(model, groups))
    return any(names[id(p)] in trace.first_nonfinite for p in with_grad)


def _custom_step(
    ctx: Context,
    trace: Trace,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    params: list[nn.Parameter],
    names: dict[int, str],
    groups: dict[str, list[tuple[str, nn.Parameter]]],
) -> None:
    """One call of the setup's ``train_step``: the gradients are recorded by a pre-hook of ``optimizer.step()`` (after
    any clipping or unscaling), which stops a step whose gradients are not finite. Each call counts as one update,
    also when the user's step skipped ``optimizer.step()`` (a GradScaler that found inf: ``train-step`` judges it)."""
    k = trace.updates
    b = k % len(trace.batches)
    rng = _rng_state(ctx.device)
    order: list[str] = []
    bad: list[bool] = []
    stepped: list[bool] = []

    def pre_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        stepped.append(True)
        if _record_grads(trace, k, model, params, names, groups):
            bad.append(True)
            raise _NonFiniteGradient

    def record(mod: nn.Module, inp: Any, out: Any, name: str) -> None:
        if name not in order:
            order.append(name)

    handle = opt.register_step_pre_hook(pre_step)
    try:
        if k == 0:
            with forward_hooks([(n, m) for n, m in model.named_modules() if _has_own_params(m)], record):
                value = ctx.user_train_step(model, opt, trace.batches[b])
            trace.module_order = order
        else:
            value = ctx.user_train_step(model, opt, trace.batches[b])
    except _NonFiniteGradient:
        trace.event = Event("gradient", k, b, rng, math.nan)
        return
    finally:
        handle.remove()
    if not math.isfinite(value):
        trace.event = Event("loss", k, b, rng, value)
        return
    if not stepped:  # no optimizer.step() (a GradScaler skipped it): which parameters got a gradient
        _record_grads(trace, k, model, params, names, groups, skipped=True)
    trace.losses.append(value)
    trace.updates += 1
    _after_update(trace, model, params, groups, k, value)
    if trace.event is None and trace.updates % CHECKPOINT_EVERY == 0:
        _checkpoint(ctx, trace)


def _after_update(
    trace: Trace,
    model: nn.Module,
    params: list[nn.Parameter],
    groups: dict[str, list[tuple[str, nn.Parameter]]],
    k: int,
    value: float,
) -> None:
    """Record what the update of step ``k`` changed (or the first non-finite parameter it left)."""
    if not _all_finite(params):
        bad = next(n for n, p in model.named_parameters() if not _all_finite([p]))
        trace.event = Event("update", k, k % len(trace.batches), None, value, bad)
        return
    for n, p in model.named_parameters():
        if n in trace._params0 and n not in trace.first_changed and not torch.equal(p.detach(), trace._params0[n]):
            trace.first_changed[n] = k
    if k == 0:
        for m, ps in groups.items():
            before = [trace._params0[n] for n, _ in ps if n in trace._params0]
            upd = _norm([p.detach() - trace._params0[n] for n, p in ps if n in trace._params0])
            norm = _norm(before)
            trace.update_ratios[m or "<model>"] = upd / norm if norm > 0 else math.inf if upd > 0 else 0.0
    trace.fingerprints.append(fingerprint(model))


def _step(
    ctx: Context,
    trace: Trace,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    params: list[nn.Parameter],
    names: dict[int, str],
    groups: dict[str, list[tuple[str, nn.Parameter]]],
) -> None:
    if ctx.setup.train_step is not None:
        _custom_step(ctx, trace, model, opt, params, names, groups)
        return
    k = trace.updates
    b = k % len(trace.batches)
    batch: Batch = trace.batches[b]
    opt.zero_grad(set_to_none=True)
    rng = _rng_state(ctx.device)
    order: list[str] = []

    def record(mod: nn.Module, inp: Any, out: Any, name: str) -> None:
        if name not in order:
            order.append(name)

    if k == 0:
        with forward_hooks([(n, m) for n, m in model.named_modules() if _has_own_params(m)], record):
            out, y = ctx.forward(model, batch)
        trace.module_order = order
    else:
        out, y = ctx.forward(model, batch)
    loss = ctx.loss(out, y)
    value, out_sum = _loss_and_output_sum(loss, out)
    if not math.isfinite(out_sum) and not _all_finite([t for t in iter_tensors(out) if t.is_floating_point()]):
        trace.event = Event("output", k, b, rng, value)
        return
    if not math.isfinite(value):
        trace.event = Event("loss", k, b, rng, value)
        return
    trace.losses.append(value)
    if loss.requires_grad:  # else no parameter gets a gradient (gradient-flow reports it)
        loss.backward()
    if _record_grads(trace, k, model, params, names, groups):
        trace.event = Event("gradient", k, b, rng, value)
        return
    opt.step()
    trace.updates += 1
    _after_update(trace, model, params, groups, k, value)
    if trace.event is None and trace.updates % CHECKPOINT_EVERY == 0:
        _checkpoint(ctx, trace)


def _checkpoint(ctx: Context, trace: Trace) -> None:
    assert trace.model is not None
    train = trace.updates % TRAIN_EVAL_EVERY == 0
    batches = (trace.batches if train else []) + ([trace.heldout] if trace.heldout is not None else [])
    if trace.updates == 0:  # the model at init on the cached batches 0.. (the trace's batches, then its held-out one)
        losses = []
        with torch.no_grad():
            for i in range(len(batches)):
                out, y = ctx.init_forward(i)
                losses.append(float(ctx.loss(out, y)))
                meta = (out.shape, out.dtype) if isinstance(out, torch.Tensor) else None
                trace.init_outputs.append((meta, y))
    else:
        losses = eval_losses(ctx, trace.model, batches) if batches else []
    n = len(trace.batches) if train else 0
    trace.checkpoints[trace.updates] = Checkpoint(
        trace.updates, losses[:n] if train else None, losses[n] if len(losses) > n else None
    )


def checkpoint_at(ctx: Context, trace: Trace, steps: int) -> Checkpoint | None:
    """The checkpoint after ``steps`` steps (a multiple of CHECKPOINT_EVERY; with the training batches' losses at
    multiples of TRAIN_EVAL_EVERY), extending the trace to it; None when the trace stopped at a non-finite value
    before."""
    if steps % CHECKPOINT_EVERY:
        raise ValueError(f"checkpoints are every {CHECKPOINT_EVERY} steps, not at {steps}")
    extend(ctx, trace, steps)
    return trace.checkpoints.get(steps)
