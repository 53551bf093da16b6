"""input-independent: a model trained on real inputs must beat the same model trained on blanked inputs."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nncheck.context import MAX_CACHED_BATCHES
from nncheck.kit import Context, Findings, ProbeSkip, Result, line_plot, param, probe
from nncheck.modelgraph import without_dropout
from nncheck.setup import Batch
from nncheck.tensors import first_tensor, is_float

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
def step_pair(
    ctx: Context,
    models: tuple[nn.Module, nn.Module],
    opts: tuple[torch.optim.Optimizer, torch.optim.Optimizer],
    batch: Batch,
    blank_batch: Batch,
) -> tuple[float, float]:
    """One training step of the real-input copy A and the blank-input copy B on the same batch. B's loss uses
    the targets of the unperturbed batch (a custom forward may build targets from the inputs, e.g. a language
    model's shifted tokens: blanking them too would change the task)."""
    losses = []
    target: Any = None
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
    for i in range(steps):
        ctx.check_time()
        a, b = step_pair(ctx, models, opts, train[i % n], blanks[i % n])
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
class Measurement:
    """The side-by-side run, and the confirmation run when the first one points to memorisation."""

    run: PairRun  # on `batches` training batches, one held-out batch
    train_batches: int
    custom_forward: bool  # the setup has its own forward(model, batch): named in the hint
    confirm: PairRun | None = None  # on every cached batch but the held-out one (the warn path only)
    confirm_batches: int = 0


def measure(ctx: Context, p: Params) -> Measurement:
    """The side-by-side run; when it points to memorisation, a confirmation run on more data (see ``memorising``)."""
    train, held = split_batches(ctx, p.batches)
    if first_tensor(ctx.inputs_of(train[0])) is None:
        raise ProbeSkip("the batch holds no input tensor to blank")
    eval_every = max(1, p.eval_every)
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
    return f"L_real {_mean(run.la[-n:]):.4g} vs L_blank {_mean(run.lb[-n:]):.4g}"


def judge(m: Measurement, p: Params, rerun: Callable[..., str]) -> Findings:
    """Raises ProbeSkip when the baseline cannot be judged. ``rerun``: the re-run line of other probes (hints)."""
    run, n = m.run, m.train_batches
    la, lb = run.la, run.lb
    if not math.isfinite(la[-1]):
        raise ProbeSkip(
            f"the real-input copy's loss became {la[-1]} at step {len(la)}: training diverges "
            "(see the learning-rate and numerics probes)"
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

    steps: int = param(
        180,
        fast=60,
        source=(
            "Longest side-by-side run (early stops end most runs sooner). 60 is the shortest that separates the "
            "slowest correct example (examples/embedding_bag.py, seed 2: held-out advantage -0.024 at step 30, "
            "+0.002 at step 60) from labels shuffled independently of the inputs (checks/ii_labels_shuffled.py: "
            "-0.075 to -0.12 at step 60, seeds 0-2); 180 gives slower models three times as long."
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
        Karpathy's input-independent baseline. Two copies of the model from one seed (dropout off) train side
        by side with the user's optimizer for up to `steps` steps on the same `batches` training batches
        (cycled); copy A sees the real inputs, copy B the inputs blanked (float tensors -> zeros, integer token
        tensors -> one constant token, their most frequent value). B's loss uses the targets of the unperturbed
        batch, so targets built from the inputs (a language model's shifted tokens) stay right. Compared on the
        training batches (mean loss over the last pass) and on one held-out batch:
        gap = (L_B - L_A) / |L_B|, advantage = gap - min(gap at init, 0) (a random model is often worse with
        real inputs than with a constant one at init; that handicap is credited back). Stops early when the
        answer is clear: identical losses (fail), both advantages clearly positive (pass), or train clearly
        positive with held-out clearly negative (warn, not before step 60). Before warning, the verdict is
        confirmed by a second run on every cached batch but the held-out one for {confirm_steps} steps: it
        warns only if the held-out advantage is still below `heldout_advantage` (a correct model generalises with
        more data; a transformer's held-out loss may dip while it first fits 3 batches).

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
