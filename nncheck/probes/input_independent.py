"""input-independent: a model trained on real inputs must beat the same model trained on blanked inputs."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nncheck.context import INIT_SEED_OFFSET, MAX_CACHED_BATCHES
from nncheck.kit import Context, Findings, ProbeSkip, Result, line_plot, param, probe
from nncheck.losses import SequenceCrossEntropy
from nncheck.modelgraph import BATCHNORM_TYPES, DROPOUT_TYPES, preserved_buffers, without_dropout
from nncheck.setup import Batch
from nncheck.state import RngStates, preserved_global_state, preserved_rngs
from nncheck.tensors import first_tensor, is_float, iter_tensors
from nncheck.trace import CHECKPOINT_EVERY, Checkpoint, Trace

# Losses of A and B equal to this relative tolerance at every step of the first IDENTICAL_MIN_STEPS: the input has
# no effect at all (early fail). Even a model whose first layer starts at zero diverges from step 2 (its gradient
# depends on x), so 5 identical steps are conclusive.
IDENTICAL_RTOL = 1e-6
IDENTICAL_MIN_STEPS = 5
# Early stops (checked every `eval_every` steps): pass once train advantage >= 0.05 and held-out >= 0.03
# (correct examples reach these after 10-50 steps; shuffled labels never reach a held-out advantage > 0.001);
# warn once train advantage >= 0.1 while held-out <= -0.1 (only shuffled labels do that; correct examples never
# fall below -0.024 held-out).
CLEAR_PASS_TRAIN, CLEAR_PASS_HELDOUT = 0.05, 0.03
CLEAR_WARN_TRAIN, CLEAR_WARN_HELDOUT = 0.1, -0.1
# The shortest run before the "clear memorisation" early stop. The correct tiny ViT of
# tests/test_input_independent.py (3 training batches) has a held-out advantage of -0.11 at step 25 that recovers
# later: a transformer's held-out loss dips while it first fits the training batches. 60 = the fast budget, where
# shuffled labels (checks/ii_labels_shuffled.py) are already at -0.075..-0.12.
MIN_MEMORISATION_STEPS = 60
# Neither copy lowered its training loss by this fraction of its initial loss: the model does not train at all (LR,
# gradient flow), so real-vs-blank says nothing about the input; skip and point to those probes. Measured: the
# LR-too-low / too-high and vanishing-gradient setups of checks/ stay within 1%; every correct example and every
# input bug of checks/ moves at least one copy by more than 3%.
NO_PROGRESS = 0.01
# Blanked inputs hold one constant per tensor, so every sample of a blanked batch is the same sample. With a
# per-sample forward the outputs of CHEAP_SAMPLES of them, repeated to the batch size, are the outputs of the whole
# blanked batch, and the loss against the batch's own targets and its gradient are the same. The blank copy B then
# costs CHEAP_SAMPLES / batch size of a step, so it trains beside the trace from the start. Used only when the losses
# of the two ways agree to CHEAP_RTOL on every batch at init (float32 sums in another order differ by ~1e-7
# relative), when the forward of 2 real samples gives the rows of the whole real batch (no batch statistics couple
# the samples), and never with a BatchNorm or an active dropout module: over identical samples a BatchNorm's batch
# variance is 0, so its train-mode output is rounding noise scaled by 1/sqrt(eps) whose values depend on the batch
# size (BatchNorm1d MLPs, measured: cheap and whole-batch losses 0.4-39% apart after 10 steps while equal at init to
# 1e-6), and dropout would repeat one sample's mask over the batch. B then runs on whole batches.
CHEAP_SAMPLES = 2
CHEAP_RTOL = 1e-5


# ---------------------------------------------------------------------------------------------- blanking
def blank(t: torch.Tensor) -> torch.Tensor:
    """Float inputs -> zeros; integer inputs (tokens) -> their most frequent value, so the input is one constant
    token (and 0/1 masks keep their common 'keep' value, so attention masks stay valid); bool masks unchanged."""
    if is_float(t):
        return torch.zeros_like(t)
    if t.dtype == torch.bool or t.numel() == 0:
        return t
    return torch.full_like(t, int(torch.mode(t.reshape(-1).cpu()).values))


def split_batches(ctx: Context, n_train: int) -> tuple[list[Batch], Batch | None]:
    """``n_train`` training batches and one held-out batch; a single batch is split in two halves."""
    batches = ctx.batches(n_train + 1)
    if len(batches) >= 2:
        return batches[: min(n_train, len(batches) - 1)], batches[-1]
    bs = ctx.batch_size(batches[0])
    if bs < 2:
        return batches, None
    half = bs // 2
    return [ctx.slice_batch(batches[0], half)], ctx.slice_batch(batches[0], bs - half, start=half)


# ---------------------------------------------------------------------------------------------- one step
def uses_train_step(ctx: Context) -> bool:
    """The blank copy steps with the setup's ``train_step``: there is one, and the default forward keeps the targets
    out of the blanked inputs (with a custom forward the whole batch is blanked: the copy keeps nncheck's step, whose
    loss takes the targets of the real batch)."""
    return ctx.setup.train_step is not None and not ctx.setup.custom_forward


@contextlib.contextmanager
def own_scalers(ctx: Context, states: list[Any]) -> Iterator[None]:
    """Run a copy's ``train_step`` with its own GradScaler states (``states``: empty for a fresh run; updated in
    place), the user's GradScalers put back afterwards (another copy may be mid-run with them)."""
    saved = ctx.scaler_states()
    ctx.load_scaler_states(list(states) or None)
    try:
        yield
    finally:
        states[:] = ctx.scaler_states()
        ctx.load_scaler_states(saved)


def step_pair(
    ctx: Context,
    models: tuple[nn.Module, nn.Module],
    opts: tuple[torch.optim.Optimizer, torch.optim.Optimizer],
    batch: Batch,
    blank_batch: Batch,
    scalers: tuple[list[Any], list[Any]] | None = None,
) -> tuple[float, float]:
    """One training step of the real-input copy A and the blank-input copy B on the same batch. B's loss uses
    the targets of the unperturbed batch (a custom forward may build targets from the inputs, e.g. a language
    model's shifted tokens: blanking them too would change the task). With the setup's ``train_step`` (and the
    default forward, whose blanked batch keeps its targets) each copy steps with it, its GradScalers in the states
    of ``scalers`` (A's, B's; updated in place)."""
    losses = []
    target: Any = None
    if uses_train_step(ctx):
        for model, opt, b, states in zip(models, opts, (batch, blank_batch), scalers or ([], [])):
            with own_scalers(ctx, states):
                losses.append(ctx.user_train_step(model, opt, b))
        return losses[0], losses[1]
    for model, opt, b in zip(models, opts, (batch, blank_batch)):
        opt.zero_grad(set_to_none=True)
        out, y = ctx.forward(model, b)
        if target is None:
            target = y.detach() if isinstance(y, torch.Tensor) else y
        loss = ctx.loss(out, target)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses[0], losses[1]


def eval_pair(ctx: Context, models: tuple[nn.Module, nn.Module], batch: Batch) -> tuple[float, float]:
    """Loss of A on ``batch`` and of B on the blanked ``batch`` (same targets), no gradient."""
    with torch.no_grad():
        out_a, y = ctx.forward(models[0], batch)
        out_b, _ = ctx.forward(models[1], ctx.map_inputs(batch, blank))
        return float(ctx.loss(out_a, y)), float(ctx.loss(out_b, y))


def rel_gap(l_real: float, l_blank: float) -> float:
    """(L_blank - L_real) / |L_blank|; +inf when the blank copy diverged, -inf when the real one did."""
    if not math.isfinite(l_real):
        return -math.inf
    if not math.isfinite(l_blank):
        return math.inf
    return (l_blank - l_real) / max(abs(l_blank), 1e-12)


def advantage(gap: float, gap_init: float) -> float:
    """The gap with A's initial handicap credited back: ``gap - min(gap_init, 0)``."""
    return gap - min(gap_init, 0.0)


def identical(la: list[float], lb: list[float], rtol: float = IDENTICAL_RTOL) -> bool:
    """A's and B's losses agree at every step: the input has no effect on the model."""
    return all(abs(a - b) <= rtol * max(abs(b), 1e-12) for a, b in zip(la, lb))


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


# ---------------------------------------------------------------------------------------------- measure
@dataclass
class PairRun:
    """One side-by-side training run of the real-input copy A and the blank-input copy B."""

    la: list[float] = field(default_factory=list)  # A's training losses, per step
    lb: list[float] = field(default_factory=list)
    checkpoints: list[tuple[int, float, float]] = field(default_factory=list)  # (step, held-out L_A, L_B)
    adv_train: float = math.nan
    adv_held: float = math.nan
    g0_train: float = math.nan
    g0_held: float = math.nan
    l0_real: float = math.nan
    l0_blank: float = math.nan
    stop: str = ""
    baseline: Baseline | None = None  # set when copy A beat the best constant prediction (B not needed)


def train_pair(
    ctx: Context,
    train: list[Batch],
    held: Batch | None,
    steps: int,
    eval_every: int,
    min_steps: int,
    memorisation_stop: bool = True,
) -> PairRun:
    """Train A and B from one seed on ``train`` (cycled) for up to ``steps`` steps, with the early stops (the
    confirmation run keeps only the "clear pass" one: it must run the full budget before confirming a warn)."""
    blanks = [ctx.map_inputs(b, blank) for b in train]
    models = (without_dropout(ctx.fresh_model()), without_dropout(ctx.fresh_model()))
    opts = (ctx.optimizer(models[0]), ctx.optimizer(models[1]))
    run = PairRun()
    init = [eval_pair(ctx, models, b) for b in train]
    run.l0_real, run.l0_blank = _mean([a for a, _ in init]), _mean([b for _, b in init])
    run.g0_train = rel_gap(run.l0_real, run.l0_blank)
    run.g0_held = rel_gap(*eval_pair(ctx, models, held)) if held is not None else math.nan
    n = len(train)
    scalers: tuple[list[Any], list[Any]] = ([], [])
    for i in range(steps):
        ctx.check_time()
        a, b = step_pair(ctx, models, opts, train[i % n], blanks[i % n], scalers)
        run.la.append(a)
        run.lb.append(b)
        if not math.isfinite(a):
            break
        done = i + 1
        if done % eval_every and done != steps:
            continue
        run.adv_train = advantage(rel_gap(_mean(run.la[-n:]), _mean(run.lb[-n:])), run.g0_train)
        if held is not None:
            run.checkpoints.append((done, *eval_pair(ctx, models, held)))
            run.adv_held = advantage(rel_gap(*run.checkpoints[-1][1:]), run.g0_held)
        if done == steps:
            break
        if done >= IDENTICAL_MIN_STEPS and identical(run.la, run.lb):
            run.stop = "identical losses"
            break
        if done < max(min_steps, n):
            continue
        held_ok = held is None or run.adv_held >= CLEAR_PASS_HELDOUT
        if run.adv_train >= CLEAR_PASS_TRAIN and held_ok:
            run.stop = "clear pass"
        elif (
            held is not None
            and memorisation_stop
            and done >= MIN_MEMORISATION_STEPS
            and run.adv_train >= CLEAR_WARN_TRAIN
            and run.adv_held <= CLEAR_WARN_HELDOUT
        ):
            run.stop = "clear memorisation"
        if run.stop:
            break
    return run


@dataclass
class Baseline:
    """The real-input model of the shared training trace against the best constant prediction (the limit of a
    model trained on blanked inputs): losses on the trace's training batches and on its held-out batch."""

    constant_train: float
    constant_heldout: float
    step: int = 0  # the trace checkpoint judged
    real_train: float = math.nan
    real_heldout: float = math.nan

    @property
    def gap_train(self) -> float:
        return rel_gap(self.real_train, self.constant_train)

    @property
    def gap_heldout(self) -> float:
        return rel_gap(self.real_heldout, self.constant_heldout)


def _constant_output(ctx: Context, outs: list[torch.Tensor], ys: list[Any]) -> Callable[[torch.Tensor], Any] | None:
    """For cross-entropy, BCE-with-logits and MSE: a function giving, for an output, the best constant prediction of
    the targets ``ys`` in its shape (log class prior with Jeffreys smoothing, logit of the positive rate, target
    mean); None for other losses and layouts."""
    if not all(isinstance(y, torch.Tensor) for y in ys) or not all(isinstance(o, torch.Tensor) for o in outs):
        return None
    if ctx.loss_kind == "ce":
        classes = ctx.num_classes(outs[0])
        if classes is None or any(y.is_floating_point() for y in ys):
            return None
        labels = torch.cat([y.reshape(-1) for y in ys]).long()
        labels = labels[(labels >= 0) & (labels < classes)]
        counts = torch.bincount(labels, minlength=classes).double()
        log_prior = ((counts + 0.5) / (counts.sum() + 0.5 * classes)).log().to(outs[0].dtype)
        last = isinstance(ctx.loss_fn, SequenceCrossEntropy) or outs[0].dim() == 2

        def ce(out: torch.Tensor) -> torch.Tensor:
            shape = [1] * out.dim()
            shape[-1 if last else 1] = classes
            return torch.zeros_like(out) + log_prior.to(out.device).view(shape)

        return ce
    if ctx.loss_kind in ("mse", "bce"):
        y_all = torch.cat([y.detach().double() for y in ys])
        mean = y_all.mean(0, keepdim=True)
        if ctx.loss_kind == "bce":
            mean = torch.logit(mean.clamp(1e-6, 1 - 1e-6))

        def regress(out: torch.Tensor) -> torch.Tensor | None:
            const = mean.expand(out.shape[0], *mean.shape[1:]).to(out.dtype).to(out.device)
            return const.reshape(out.shape) if const.numel() == out.numel() else None

        return regress
    return None


def constant_baseline(ctx: Context, trace: Trace) -> Baseline | None:
    """The losses of the best constant prediction fitted on the targets of the trace's training batches (on them and
    on its held-out batch), or None when nncheck does not know it for this loss (its own side-by-side run decides
    then). The outputs' shapes and the targets are those of the trace's step-0 forwards."""
    if len(trace.init_outputs) != len(trace.batches) + 1 or any(meta is None for meta, _ in trace.init_outputs):
        return None
    outs = [torch.zeros(meta[0], dtype=meta[1], device=ctx.device) for meta, _ in trace.init_outputs if meta]
    ys = [y for _, y in trace.init_outputs]
    const = _constant_output(ctx, outs[:-1], ys[:-1])
    if const is None:
        return None
    values = []
    with torch.no_grad():
        for out, y in zip(outs, ys):
            c = const(out)
            if c is None:
                return None
            values.append(float(ctx.loss(c, y)))
    if not all(math.isfinite(v) for v in values):
        return None
    return Baseline(_mean(values[:-1]), values[-1])


class BlankArm:
    """Copy B of the side-by-side run, mirroring the shared training trace (copy A): the same seeding, optimizer,
    batches in turn and dropout masks (the same random draws), with the inputs blanked and the real targets."""

    def __init__(self, ctx: Context, trace: Trace) -> None:
        with preserved_global_state():
            ctx.seed_all()
            self.model = ctx.fresh_model(train=True)
            ctx.seed_all()
            self.opt = ctx.optimizer(self.model)
            self.rngs = RngStates.capture()
        self.scalers: list[Any] = []  # the GradScaler states of this copy's run of the setup's train_step
        self.batches = [ctx.map_inputs(b, blank) for b in trace.batches]
        # the targets of the trace's step-0 forwards (training batches, then the held-out one): a custom forward may
        # build them from the inputs (a language model's shifted tokens), so the blank copy keeps the real ones
        self.targets = [y for _, y in trace.init_outputs]
        self.heldout = ctx.map_inputs(trace.heldout, blank)
        self.losses: list[float] = []
        # seeded per batch as the trace's step-0 losses are (Context.init_forward): a forward that draws noise draws
        # the same for both copies, so a model that ignores its input has identical losses at init
        self.init = self.evaluate(ctx, list(zip(self.batches, self.targets)), first=0)
        held0 = self.evaluate(ctx, [(self.heldout, self.targets[-1])], first=len(self.batches))[0]
        self.heldout_losses = {0: held0}
        self.exact_steps = 0  # steps B takes on whole batches before the cheap ones (the identical-losses check)
        self.cheap = self._cheap_agrees(ctx, trace.batches[0])

    # ------------------------------------------------------------------ the cheap forward (CHEAP_SAMPLES)
    def _few(self, ctx: Context, batch: Batch) -> Batch | None:
        """The first CHEAP_SAMPLES samples of a blanked batch whose samples are all the same; None otherwise."""
        try:
            n = ctx.batch_size(batch)
        except ProbeSkip:
            return None
        if n <= CHEAP_SAMPLES:
            return None
        for t in iter_tensors(ctx.inputs_of(batch)):
            if t.dim() == 0 or t.shape[0] != n or not torch.equal(t, t[:1].expand_as(t)):
                return None
        try:
            return ctx.slice_batch(batch, CHEAP_SAMPLES)
        except ProbeSkip:
            return None

    def _cheap_loss(self, ctx: Context, few: Batch, target: Any) -> torch.Tensor:
        """The loss of a whole blanked batch from the forward of its first samples: the first output repeated.
        Raises ValueError when the output is not one tensor row per sample."""
        out, _ = ctx.forward(self.model, few)
        if not isinstance(out, torch.Tensor) or out.dim() == 0 or out.shape[0] != CHEAP_SAMPLES:
            raise ValueError("the output of the cut batch is not one tensor row per sample")
        n = int(target.shape[0])
        return ctx.loss(out[:1].expand(n, *out.shape[1:]).contiguous(), target)

    def _per_sample(self, ctx: Context, real: Batch) -> bool:
        """The model's forward (in its mode, at init) of the first CHEAP_SAMPLES samples of the first real batch gives
        the rows of the whole batch's (``Context.init_forward``): no batch statistics couple the samples (an
        nn.BatchNorm, F.batch_norm, `h - h.mean(0)` change the rows when the other samples differ)."""
        full, _ = ctx.init_forward(0)
        with preserved_rngs(), preserved_buffers(self.model), torch.no_grad():
            ctx.seed_all(INIT_SEED_OFFSET)
            out, _ = ctx.forward(self.model, ctx.slice_batch(real, CHEAP_SAMPLES))
        if not isinstance(out, torch.Tensor) or not isinstance(full, torch.Tensor):
            return False
        if out.shape != (CHEAP_SAMPLES, *full.shape[1:]):
            return False
        scale = float(full.abs().max()) if full.numel() else 0.0
        return bool(torch.allclose(out, full[:CHEAP_SAMPLES], rtol=CHEAP_RTOL, atol=CHEAP_RTOL * max(scale, 1e-12)))

    def _cheap_agrees(self, ctx: Context, real: Batch) -> bool:
        """Every batch (training and held-out) can be cut (``_few``), the output is one tensor per sample, the
        forward is per sample on real inputs (``_per_sample``), no dropout module is on, and the cheap losses at
        init equal those of the whole batches (``CHEAP_RTOL``)."""
        modules = list(self.model.modules())
        if uses_train_step(ctx) or any(isinstance(m, BATCHNORM_TYPES) for m in modules):
            return False
        if any(isinstance(m, DROPOUT_TYPES) and float(getattr(m, "p", 0.0) or 0.0) > 0 for m in modules):
            return False  # B trains with its dropout on: one sample's mask repeated is not the batch's masks
        self._small = [self._few(ctx, b) for b in [*self.batches, self.heldout]]
        if any(f is None for f in self._small) or not all(isinstance(t, torch.Tensor) for t in self.targets):
            return False
        try:
            if not self._per_sample(ctx, real):
                return False
            pairs = list(zip([*self.batches, self.heldout], self.targets))
            cheap = self.evaluate(ctx, pairs, few=self._small, first=0)
        except Exception:  # a forward or loss that does not take a cut batch: B runs on whole batches
            return False
        full = [*self.init, self.heldout_losses[0]]
        return all(math.isfinite(a) and abs(a - b) <= CHEAP_RTOL * max(abs(b), 1e-12) for a, b in zip(cheap, full))

    def evaluate(
        self, ctx: Context, pairs: list[tuple[Batch, Any]], few: list[Batch] | None = None, first: int | None = None
    ) -> list[float]:
        """Losses without gradient, dropout off; modes, buffers and random generators put back. With ``few`` (the
        cut batches of the pairs), from the cheap forward; with ``first``, pair k's forward seeded as
        ``Context.init_forward`` seeds cached batch ``first + k``."""
        modes = {m: m.training for m in self.model.modules()}
        try:
            with preserved_rngs(), preserved_buffers(self.model), torch.no_grad():
                without_dropout(self.model)
                losses = []
                for k, (b, y) in enumerate(pairs):
                    if first is not None:
                        ctx.seed_all(INIT_SEED_OFFSET + first + k)
                    out = (
                        self._cheap_loss(ctx, few[k], y)
                        if few is not None
                        else ctx.loss(ctx.forward(self.model, b)[0], y)
                    )
                    losses.append(float(out))
                return losses
        finally:
            for m, mode in modes.items():
                m.training = mode

    def extend(self, ctx: Context, steps: int) -> None:
        with preserved_global_state():
            self.rngs.restore()
            while len(self.losses) < steps:
                ctx.check_time()
                i = len(self.losses) % len(self.batches)
                cheap = self.cheap and len(self.losses) >= self.exact_steps
                if uses_train_step(ctx):
                    with own_scalers(ctx, self.scalers):
                        self.losses.append(ctx.user_train_step(self.model, self.opt, self.batches[i]))
                else:
                    self.opt.zero_grad(set_to_none=True)
                    if cheap:
                        loss = self._cheap_loss(ctx, self._small[i], self.targets[i])
                    else:
                        out, _ = ctx.forward(self.model, self.batches[i])
                        loss = ctx.loss(out, self.targets[i])
                    loss.backward()
                    self.opt.step()
                    self.losses.append(float(loss.detach()))
                if len(self.losses) % CHECKPOINT_EVERY == 0:
                    held = [(self.heldout, self.targets[-1])]
                    few = [self._small[-1]] if cheap else None
                    self.heldout_losses[len(self.losses)] = self.evaluate(ctx, held, few)[0]
            self.rngs = RngStates.capture()


def trace_pair(ctx: Context, p: Params) -> PairRun | None:
    """The side-by-side run with the shared training trace as copy A and a mirrored blank copy B, checkpoints every
    CHECKPOINT_EVERY steps, with the early stops of ``train_pair``. B first runs IDENTICAL_MIN_STEPS steps (identical
    losses: the input has no effect); then, up to ``p.baseline_steps``, A alone is compared with the best constant
    prediction (a clear win ends the run: ``run.baseline``, no further B steps); after that B catches up and the two
    copies are compared. None when the trace has no held-out batch."""
    trace = ctx.trace(0)
    if trace.heldout is None:
        return None
    n = len(trace.batches)
    base = constant_baseline(ctx, trace)
    b = BlankArm(ctx, trace)
    run = PairRun()
    run.l0_real, run.l0_blank = _mean(trace.init_losses), _mean(b.init)
    run.g0_train = rel_gap(run.l0_real, run.l0_blank)
    held0 = trace.checkpoints[0].heldout
    run.g0_held = rel_gap(held0, b.heldout_losses[0]) if held0 is not None else math.nan
    steps = max(p.steps, CHECKPOINT_EVERY)
    # identical losses need identical losses at init (same weights, same targets, dropout off): when the copies
    # already differ there, the input reaches the output and B's first steps are not needed for that check. The
    # setup's train_step may change its inputs before the model (masking, augmentation): B always runs those steps
    same_at_init = identical(trace.init_losses, b.init) or uses_train_step(ctx)
    if same_at_init:  # the identical-losses check compares whole batches, step for step
        b.exact_steps = IDENTICAL_MIN_STEPS
    for done in range(CHECKPOINT_EVERY, steps + 1, CHECKPOINT_EVERY):
        cp = ctx.trace_checkpoint(done)
        run.la = trace.losses_within(done)
        if cp is None or len(run.la) < done:  # the real-input copy went non-finite
            run.lb = b.losses[: len(run.la)]
            if not run.la or math.isfinite(run.la[-1]):
                run.la.append(math.nan)
            return run
        if done <= IDENTICAL_MIN_STEPS and same_at_init:
            b.extend(ctx, done)
            if done == IDENTICAL_MIN_STEPS and identical(run.la, b.losses):
                run.lb, run.stop = list(b.losses), "identical losses"
                _compare(run, cp, b, done, n)
                return run
        if base is not None and done <= p.baseline_steps and done >= n and cp.heldout is not None:
            base.step, base.real_train, base.real_heldout = done, _mean(run.la[-n:]), cp.heldout
            if base.gap_train >= CLEAR_PASS_TRAIN and base.gap_heldout >= CLEAR_PASS_HELDOUT:
                run.baseline, run.stop, run.lb = base, "beats the best constant", list(b.losses)
                return run
            if done < min(p.baseline_steps, steps) and not b.cheap:
                continue  # B waits (its steps cost as much as A's): A may still beat the constant
            if done >= steps and not p.decide_at_cap and not b.cheap:
                run.lb = list(b.losses)  # the fast budget ends here, undecided: no need for B to catch up
                return run
        if not p.decide_at_cap and (max(p.min_steps, n) > steps or not b.cheap):
            # the cap decides nothing (the fast budget): B is not needed when no early stop can come by then, or
            # when its steps cost as much as A's (a clear pass by the cap is then left to the full budget)
            if done >= steps:
                run.lb = list(b.losses)
                return run
            continue
        b.extend(ctx, done)
        run.lb = b.losses[:done]
        _compare(run, cp, b, done, n)
        if done >= max(p.min_steps, n):
            if run.adv_train >= CLEAR_PASS_TRAIN and run.adv_held >= CLEAR_PASS_HELDOUT:
                run.stop = "clear pass"
            elif done >= MIN_MEMORISATION_STEPS and run.adv_train >= CLEAR_WARN_TRAIN:
                if run.adv_held <= CLEAR_WARN_HELDOUT:
                    run.stop = "clear memorisation"
        if run.stop or done >= steps:
            break
    return run


def _compare(run: PairRun, cp: Checkpoint, b: BlankArm, done: int, n: int) -> None:
    """The advantages of A over B after ``done`` steps (training losses of the last pass; the held-out batch)."""
    run.adv_train = advantage(rel_gap(_mean(run.la[-n:]), _mean(run.lb[-n:])), run.g0_train)
    if cp.heldout is not None and done in b.heldout_losses:
        run.checkpoints.append((done, cp.heldout, b.heldout_losses[done]))
        run.adv_held = advantage(rel_gap(cp.heldout, b.heldout_losses[done]), run.g0_held)


@dataclass
class Measurement:
    """The early pass against the best constant, or the side-by-side run, and the confirmation run when the first one
    points to memorisation."""

    run: PairRun | None  # on `batches` training batches, one held-out batch (None: the early pass decided)
    train_batches: int
    custom_forward: bool  # the setup has its own forward(model, batch): named in the hint
    confirm: PairRun | None = None  # on every cached batch but the held-out one (the warn path only)
    confirm_batches: int = 0
    baseline: Baseline | None = None


def measure(ctx: Context, p: Params) -> Measurement:
    """The early pass on the shared trace; else the side-by-side run and, when it points to memorisation, a
    confirmation run on more data (see ``memorising``)."""
    train, held = split_batches(ctx, p.batches)
    if first_tensor(ctx.inputs_of(train[0])) is None:
        raise ProbeSkip("the batch holds no input tensor to blank")
    eval_every = max(1, p.eval_every)
    run = trace_pair(ctx, p)
    if run is not None:
        train = ctx.trace(0).batches
        if run.baseline is not None:
            return Measurement(None, len(train), ctx.setup.custom_forward, baseline=run.baseline)
    else:  # a single batch (no held-out batch for the trace): its own run on the batch's halves
        run = train_pair(ctx, train, held, max(1, p.steps), eval_every, p.min_steps)
    m = Measurement(run, len(train), ctx.setup.custom_forward)
    if held is not None and memorising(run, p):
        # confirm on more data before warning: a correct model generalises once it trains on more batches
        cached = ctx.batches(MAX_CACHED_BATCHES)  # split_batches held out batch len(train)
        more = cached[: len(train)] + cached[len(train) + 1 :]
        if len(cached) >= 2 and len(more) > len(train):
            held2 = cached[len(train)]
            m.confirm = train_pair(ctx, more, held2, p.confirm_steps, eval_every, p.min_steps, memorisation_stop=False)
            m.confirm_batches = len(more)
    return m


# ---------------------------------------------------------------------------------------------- judge
OVERWRITE_HINT = (
    "In {where}: look for the input being overwritten (`x = x * 0`, `x = torch.zeros_like(x)`, "
    "`x = self.some_buffer`), detached into a constant, or replaced by another tensor before the first layer; "
    "the first layer must receive the batch, e.g. `def forward(self, x): return self.net(x)`. Also check that "
    "`data()` yields real inputs, not zeros."
)
IGNORED_HINT = (
    "The output does not depend on the input at all (the same losses as with blanked inputs, step for step). "
    "{overwrite} If the input does reach the first layer, its signal vanishes before the output (a tiny init scale, "
    "saturated activations): run `{rerun}`."
)
UNUSED_HINT = (
    "With real inputs the model trains but ends no better than a constant prediction: it does not use its input. "
    "A too-high learning rate that kills ReLUs / collapses the model to the label prior does this (run `{rerun}`). "
    "{overwrite}"
)
HELDOUT_HINT = (
    "The model learns the training batches but its predictions on the held-out batch are no better than a "
    "constant. Either the labels are not aligned with the inputs (a shuffle applied to labels only, "
    "`y = y[torch.randperm(len(y))]`, a DataLoader over two separately shuffled datasets, a sort of x without "
    "y): keep x and y in one Dataset and shuffle them together (`TensorDataset(x, y)` + `shuffle=True`); or the "
    "task needs more data / steps than this short run (raise [tool.nncheck.probes.input-independent] steps)."
)


def _inputs_hint(m: Measurement, same: bool, rerun: Callable[..., str]) -> str:
    where = "your `forward(model, batch)` and the model's forward()" if m.custom_forward else "forward()"
    overwrite = OVERWRITE_HINT.format(where=where)
    if same:
        return IGNORED_HINT.format(overwrite=overwrite, rerun=rerun("activations", "gradient-flow"))
    return UNUSED_HINT.format(overwrite=overwrite, rerun=rerun("learning-rate", "activations"))


def memorising(run: PairRun, p: Params) -> bool:
    """Real inputs beat blank ones on the training batches but not on the held-out batch (the warn path)."""
    return (
        math.isfinite(run.la[-1])
        and not run.adv_train < p.fail_advantage
        and bool(run.checkpoints)
        and run.adv_held < p.heldout_advantage
    )


def heldout_verdict(m: Measurement, p: Params) -> tuple[float, str]:
    """The held-out advantage judged (the confirmation run's when it clears the model) and the words on it."""
    run, again = m.run, m.confirm
    assert run is not None
    if again is None:
        return run.adv_held, ""
    if not (again.adv_held < p.heldout_advantage):
        return again.adv_held, (
            f" (held-out advantage {run.adv_held:.3f} after {len(run.la)} steps on {m.train_batches} batches; "
            f"{again.adv_held:.3f} after {len(again.la)} steps on {m.confirm_batches} batches)"
        )
    adv_held = min(run.adv_held, again.adv_held) if math.isfinite(again.adv_held) else run.adv_held
    return adv_held, (
        f"; confirmed on {m.confirm_batches} training batches for {len(again.la)} steps: held-out advantage "
        f"{again.adv_held:.3f}"
    )


def _series(run: PairRun) -> dict[str, Any]:
    """Both copies' loss curves (training steps, held-out checkpoints) as one plot."""
    xs = list(range(1, len(run.la) + 1))
    curves: dict[str, Any] = {"real inputs (A), train": (xs, run.la), "blank inputs (B), train": (xs, run.lb)}
    if run.checkpoints:
        cx = [c[0] for c in run.checkpoints]
        curves["real inputs (A), held-out"] = (cx, [c[1] for c in run.checkpoints])
        curves["blank inputs (B), held-out"] = (cx, [c[2] for c in run.checkpoints])
    return {"loss": line_plot("Real vs blanked inputs", curves)}


def _numbers(m: Measurement) -> str:
    n, run = m.train_batches, m.run
    assert run is not None
    return f"L_real {_mean(run.la[-n:]):.4g} vs L_blank {_mean(run.lb[-n:]):.4g}"


def _baseline_findings(b: Baseline) -> Findings:
    return Findings(
        measured={
            "early_pass": f"beats the best constant prediction at step {b.step} of the shared training trace",
            "steps": b.step,
            "train_batches": None,
            "train_loss_real": b.real_train,
            "train_loss_constant": b.constant_train,
            "train_gap_to_constant": b.gap_train,
            "heldout_loss_real": b.real_heldout,
            "heldout_loss_constant": b.constant_heldout,
            "heldout_gap_to_constant": b.gap_heldout,
        },
        expected={"train_gap_to_constant_min": CLEAR_PASS_TRAIN, "heldout_gap_to_constant_min": CLEAR_PASS_HELDOUT},
    )


def judge(m: Measurement, p: Params, rerun: Callable[..., str]) -> Findings:
    """Raises ProbeSkip when the baseline cannot be judged. ``rerun``: the re-run line of other probes (hints)."""
    if m.baseline is not None:
        f = _baseline_findings(m.baseline)
        f.measured["train_batches"] = m.train_batches
        return f
    run, n = m.run, m.train_batches
    assert run is not None
    la, lb = run.la, run.lb
    if not math.isfinite(la[-1]):
        raise ProbeSkip(
            f"the real-input copy's loss became {la[-1]} at step {len(la)}: training diverges "
            "(see the learning-rate and numerics probes)"
        )
    if not p.decide_at_cap and not run.stop:
        raise ProbeSkip(
            f"inconclusive within {len(la)} steps: the real inputs did not yet beat the best constant prediction "
            f"clearly, and the side-by-side run with blanked inputs needs more steps than the fast budget gives; "
            f"`{rerun('input-independent', budget='full')}` judges it"
        )
    l_real, l_blank = _mean(la[-n:]), _mean(lb[-n:])
    same = identical(la, lb)
    f = Findings(
        measured={
            "steps": len(la),
            "stopped_early": run.stop or None,
            "train_batches": n,
            "train_loss_real": l_real,
            "train_loss_blank": l_blank,
            "train_gap": rel_gap(l_real, l_blank),
            "train_gap_init": run.g0_train,
            "train_advantage": run.adv_train,
            "identical_losses": same,
        },
        expected={"train_advantage_min": p.fail_advantage, "heldout_advantage_min": p.heldout_advantage},
        series=_series(run),
    )
    if run.checkpoints:
        _, h_real, h_blank = run.checkpoints[-1]
        f.measured.update(
            {
                "heldout_loss_real": h_real,
                "heldout_loss_blank": h_blank,
                "heldout_gap": rel_gap(h_real, h_blank),
                "heldout_gap_init": run.g0_held,
                "heldout_advantage": run.adv_held,
            }
        )
    f.measured.update({"init_loss_real": run.l0_real, "init_loss_blank": run.l0_blank})
    stalled = l_real > (1 - NO_PROGRESS) * run.l0_real and l_blank > (1 - NO_PROGRESS) * run.l0_blank
    if run.adv_train < p.fail_advantage and stalled and not same:
        raise ProbeSkip(
            f"neither copy trains in {len(la)} steps (real inputs {run.l0_real:.4g} -> {l_real:.4g}, blank "
            f"{run.l0_blank:.4g} -> {l_blank:.4g}): the baseline cannot be judged; see the learning-rate and "
            "gradient-flow probes"
        )
    if run.adv_train < p.fail_advantage:
        effect = " (identical at every step: the input has no effect)" if same else ""
        f.fail(
            f"real inputs do not beat blanked inputs on the training batches after {len(la)} steps: "
            f"{_numbers(m)}{effect}, advantage {run.adv_train:.3f} < {p.fail_advantage:g}",
            _inputs_hint(m, same, rerun),
        )
        return f
    if m.confirm is not None:
        again = m.confirm
        f.measured.update(
            {
                "confirm_train_batches": m.confirm_batches,
                "confirm_steps": len(again.la),
                "confirm_stopped_early": again.stop or None,
                "confirm_train_advantage": again.adv_train,
                "confirm_heldout_advantage": again.adv_held,
            }
        )
        f.series = _series(again)
    adv_held, confirm_txt = heldout_verdict(m, p)
    if run.checkpoints and adv_held < p.heldout_advantage:
        f.warn(
            f"real inputs beat blanked inputs on the training batches ({_numbers(m)}, advantage {run.adv_train:.3f}) "
            f"but are worse on the held-out batch (L_real {f.measured['heldout_loss_real']:.4g} vs L_blank "
            f"{f.measured['heldout_loss_blank']:.4g}, advantage {run.adv_held:.3f} < {p.heldout_advantage:g}"
            f"{confirm_txt}): memorising; labels may be misaligned with inputs",
            HELDOUT_HINT,
        )
    return f


def _summary(m: Measurement, p: Params) -> str:
    b = m.baseline
    if b is not None:
        return (
            f"after {b.step} training steps the real inputs beat the best constant prediction (what a model of "
            f"blanked inputs converges to): train {b.real_train:.4g} vs {b.constant_train:.4g} (gap {b.gap_train:.3f}),"
            f" held-out {b.real_heldout:.4g} vs {b.constant_heldout:.4g} (gap {b.gap_heldout:.3f})"
        )
    assert m.run is not None
    adv_held, confirm_txt = heldout_verdict(m, p)
    held_txt = f", held-out {adv_held:.3f}" if m.run.checkpoints else ", no held-out batch"
    return (
        f"real inputs beat blanked inputs after {len(m.run.la)} steps: {_numbers(m)} (advantage: train "
        f"{m.run.adv_train:.3f}{held_txt}){confirm_txt}"
    )


# ---------------------------------------------------------------------------------------------- probe
@dataclass(frozen=True)
class Params:
    """Parameters of input-independent (`[tool.nncheck.probes.input-independent]`)."""

    baseline_steps: int = param(
        60,
        fast=10,
        source=(
            "Steps of the shared training trace within which the real-input model may pass early by beating the "
            "best constant prediction (cross-entropy, BCE, MSE) by the clear-pass margins on the training batches "
            "and the held-out batch; a design choice bounding the cost when it does not (the side-by-side run "
            "decides then). Measured on the correct setups of checks/ and examples/ (seed 0): see the README's "
            "cost table."
        ),
    )
    steps: int = param(
        180,
        fast=10,
        source=(
            "Longest side-by-side run (early stops end most runs sooner). 60 is the shortest that separates the "
            "slowest correct example (examples/embedding_bag.py, seed 2: held-out advantage -0.024 at step 30, "
            "+0.002 at step 60) from labels shuffled independently of the inputs (checks/ii_labels_shuffled.py: "
            "-0.075 to -0.12 at step 60, seeds 0-2); 180 gives slower models three times as long. The fast budget "
            "stops at 10, the steps of the shared training trace the learning-rate probe reads (see decide_at_cap)."
        ),
    )
    decide_at_cap: bool = param(
        True,
        fast=False,
        source=(
            "Judge a run that reached `steps` without an early stop. The fast budget does not: 10 steps separate a "
            "model that ignores its input (identical losses from step 5, checks/ii_*.py) and fast learners (an early "
            "pass), but not a slow correct model from one that cannot use its input, nor memorisation (labels "
            "shuffled apart from the inputs need >= 60 steps): those end as an inconclusive skip that points to the "
            "full budget."
        ),
    )
    batches: int = param(
        3,
        source=(
            "Training batches cycled (one more cached batch is held out; a single batch is split in halves). The "
            "measurements quoted for steps, fail_advantage and heldout_advantage were made with 3."
        ),
    )
    eval_every: int = param(
        5,
        source=(
            "Steps between checkpoints (held-out loss of both copies, early stops): a design choice, one extra "
            "forward pair per 5 training steps."
        ),
    )
    min_steps: int = param(
        10,
        source="Shortest run before an early stop (and at least one pass over the training batches): a design choice.",
    )
    # gap = (L_blank - L_real) / |L_blank|: the share of the blank copy's loss that the real inputs remove.
    # advantage = gap - min(gap at init, 0): at init a random model with real inputs is often *worse* than one with a
    # constant input (its input-dependent outputs are random noise); that handicap is credited back, so "A pulls ahead
    # of B" counts even before A's loss is below B's. Measured with 3 training batches, seeds 0-2: the correct setups
    # of checks/ and examples/ reach a training advantage of >= 0.0146 at step 30 and >= 0.0258 at step 60 (lowest:
    # checks/ok_deepsets_point_cloud.py, checks/data_autoencoder_target_is_input_ok.py; examples/ alone: >= 0.036
    # and >= 0.093).
    fail_advantage: float = param(
        0.01,
        source=(
            'Karpathy, "A Recipe for Training Neural Networks" (2019): "train an input-independent baseline (e.g. '
            "easiest is to just set all your inputs to zero). This should perform worse than when you actually "
            'plug in your data." Models that ignore their input (checks/ii_input_zeroed_in_forward.py, '
            "checks/ii_input_times_zero_cnn.py, checks/ii_wrong_tensor_fed.py) give exactly 0; every correct setup "
            "of checks/ and examples/ is >= 0.0146 at step 30 (seeds 0-2)."
        ),
    )
    heldout_advantage: float = param(
        -0.03,
        source=(
            "Labels shuffled independently of the inputs (checks/ii_labels_shuffled.py) give -0.075 to -0.12 at "
            "step 60 (memorising noise makes the real-input copy worse than the blank one on unseen samples); the "
            "lowest of examples/ is examples/embedding_bag.py, seed 2: -0.024 at step 30 (seeds 0-2)."
        ),
    )
    confirm_steps: int = param(
        180,
        source=(
            "Length of the confirmation run on every cached batch but the held-out one (up to 7), on the warn path "
            "only. The correct tiny ViT of tests/test_input_independent.py is at -0.11 to -0.24 held-out at step 25 "
            "with 3 batches, and with 7 batches still -0.025 to -0.165 at step 60 but +0.44 to +0.72 at step 180 "
            "(seeds 0-2)."
        ),
    )


@probe("input-independent", title="Input-independent baseline", order=40, params=Params)
def input_independent(ctx: Context, p: Params) -> Result:
    """Checks that the model does better with its real inputs than with inputs set to zero.

    What it does:
        Karpathy's input-independent baseline. Copy A is the shared training trace (the user's optimizer at the
        user's LR on `batches` training batches, cycled); copy B, from the same seed, optimizer and random draws,
        trains on the same batches with the inputs blanked (float tensors -> zeros, integer token tensors -> one
        constant token, their most frequent value); their losses are evaluated with dropout off. B's loss uses the
        targets of the unperturbed batch, so targets built from the inputs (a language model's shifted tokens) stay
        right. First, for up to {baseline_steps} steps, A alone is compared with the best constant prediction
        (cross-entropy, BCE, MSE: what B converges to); a clear win passes early. A blanked batch holds one sample
        repeated, so when the forward is per sample (the rows of 2 real samples equal the whole batch's; no
        BatchNorm, no active dropout module, the same losses at init either way), B runs on 2 samples whose output
        is repeated to the batch size (2/32 of a step for a batch of 32) and trains beside A from step 0; otherwise
        B waits and catches up on whole batches only when the constant did not settle it. Compared on the training
        batches (mean loss over the last pass) and on one held-out batch: gap = (L_B - L_A) / |L_B|, advantage = gap
        - min(gap at init, 0) (a random model is often worse with real inputs than with a constant one at init; that
        handicap is credited back). Stops early when the answer is clear: identical losses over the first 5 steps
        (fail), both advantages clearly positive (pass), or train clearly positive with held-out clearly negative
        (warn, not before step 60). Before warning, the verdict is confirmed by a second run on every cached batch
        but the held-out one for {confirm_steps} steps: it warns only if the held-out advantage is still below
        `heldout_advantage` (a correct model generalises with more data; a transformer's held-out loss may dip while
        it first fits 3 batches). With a `train_step` in the setup (and the default forward), both copies step with
        it, each with its own GradScaler states, and B always takes its first 5 steps: the step may change its
        inputs before the model (masking, augmentation), so equal losses at init are not needed for the
        identical-losses check.

    Why is this bad?
        B can only learn the best constant prediction. If A does no better, the model ignores its input: the
        input is overwritten or detached in forward(), the wrong tensor is fed to the first layer, or the data
        yields blank inputs. Training "works" (the loss falls to the label prior) and then plateaus forever.
        If A beats B on the batches it trains on but is worse on unseen samples, it memorises: the labels are
        likely misaligned with the inputs (shuffled separately), or the task needs more data than this run.

    Thresholds:
        fail when the training-batch advantage < {fail_advantage}; warn when it passes but the held-out
        advantage < {heldout_advantage} (A is clearly worse than B on unseen samples). Measured on checks/ and
        examples/ (3 seeds): input-ignoring models give exactly 0 (|L_A - L_B| < 1e-6); every correct setup is
        >= 0.0146 (train) at step 30; labels shuffled independently of the inputs reach a held-out advantage of
        -0.075 to -0.12 at step 60 while the slowest correct example is at +0.002.
        Skips when neither copy lowers its loss by 1% (the model does not train at all: LR / gradient flow
        problems, reported by their own probes) and when the real-input loss becomes non-finite.

    How to fix:
        Make sure forward() feeds the batch to the first layer unchanged (no `x * 0`, `torch.zeros_like(x)`,
        `self.buffer` in place of x), and that x and y are shuffled together
        (`DataLoader(TensorDataset(x, y), shuffle=True)`).

    Example:
        `def forward(self, x): x = torch.zeros_like(x); return self.net(x)` trains to the label prior:
        fail after 5 steps, L_real 1.6 vs L_blank 1.6, identical at every step: advantage 0.000.
    """
    m = measure(ctx, p)
    return judge(m, p, ctx.rerun).result(_summary(m, p))
