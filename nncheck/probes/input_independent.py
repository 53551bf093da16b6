"""input-independent: a model trained on real inputs must beat the same model trained on blanked inputs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nncheck.context import MAX_CACHED_BATCHES, Context, ProbeSkip
from nncheck.modelgraph import without_dropout
from nncheck.registry import param, probe
from nncheck.report import Result, failed, passed, warned
from nncheck.setup import Batch
from nncheck.tensors import first_tensor, is_float

# Losses of A and B equal to this relative tolerance at every step of the first IDENTICAL_MIN_STEPS: the input has
# no effect at all (early fail). Even a model whose first layer starts at zero diverges from step 2 (its gradient
# depends on x), so 5 identical steps are conclusive.
IDENTICAL_RTOL = 1e-6
IDENTICAL_MIN_STEPS = 5
# Held-out advantage below which "A beats B only on the training batches": labels shuffled independently of the
# inputs give -0.075 to -0.12 after 60 steps and -0.31 to -0.36 after 100 (memorising noise makes the real-input
# copy *worse* than the blank one on unseen samples); the slowest correct example (EmbeddingBag, seed 2) dips to
# -0.024 at 30 steps and is back at +0.002 at 60; all others stay >= 0.
HELDOUT_ADVANTAGE = -0.03
# Early stops (checked every `eval_every` steps): pass once train advantage >= 0.05 and held-out >= 0.03
# (correct examples reach these after 10-50 steps; shuffled labels never reach a held-out advantage > 0.001);
# warn once train advantage >= 0.1 while held-out <= -0.1 (only shuffled labels do that; correct examples never
# fall below -0.024 held-out).
CLEAR_PASS_TRAIN, CLEAR_PASS_HELDOUT = 0.05, 0.03
CLEAR_WARN_TRAIN, CLEAR_WARN_HELDOUT = 0.1, -0.1
# Training batches cycled (one more batch is held out), steps, checkpoint interval. The fast budget (60 steps) is
# the shortest run that separates the slowest correct example from shuffled labels on the held-out batch.
STEPS = 180
# The shortest run before the "clear memorisation" early stop. Held-out a_vit.py (a correct ViT, 3 training batches)
# has a held-out advantage of -0.11 at step 25 that recovers later (+0.39..+0.53 with 7 batches and 180 steps):
# a transformer's held-out loss dips while it first fits the training batches. 60 = the fast budget, where shuffled
# labels (checks/ii_labels_shuffled.py) are already at -0.075..-0.12.
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
    the targets of the unperturbed batch (a custom forward may build targets from the inputs, DESIGN.md §6)."""
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


# ---------------------------------------------------------------------------------------------- hints
def _command(ctx: Context, *ids: str) -> str:
    """A command that runs as written: the setup file's path, or the Python call for an in-process setup."""
    path = getattr(ctx.setup, "path", "") or ""
    if path.endswith(".py"):
        return f"nncheck run {path} " + " ".join(f"--only {i}" for i in ids)
    return f"nncheck.check(..., only={list(ids)!r})"


def _inputs_hint(ctx: Context, same: bool) -> str:
    where = "your `forward(model, batch)` and the model's forward()" if ctx.setup.custom_forward else "forward()"
    overwrite = (
        f"In {where}: look for the input being overwritten (`x = x * 0`, `x = torch.zeros_like(x)`, "
        "`x = self.some_buffer`), detached into a constant, or replaced by another tensor before the first layer; "
        "the first layer must receive the batch, e.g. `def forward(self, x): return self.net(x)`. Also check that "
        "`data()` yields real inputs, not zeros."
    )
    if same:
        return (
            "The output does not depend on the input at all (the same losses as with blanked inputs, step for "
            f"step). {overwrite} If the input does reach the first layer, its signal vanishes before the output "
            f"(a tiny init scale, saturated activations): run `{_command(ctx, 'activations', 'gradient-flow')}`."
        )
    return (
        "With real inputs the model trains but ends no better than a constant prediction: it does not use its "
        "input. A too-high learning rate that kills ReLUs / collapses the model to the label prior does this "
        f"(run `{_command(ctx, 'learning-rate', 'activations')}`). {overwrite}"
    )


HELDOUT_HINT = (
    "The model learns the training batches but its predictions on the held-out batch are no better than a "
    "constant. Either the labels are not aligned with the inputs (a shuffle applied to labels only, "
    "`y = y[torch.randperm(len(y))]`, a DataLoader over two separately shuffled datasets, a sort of x without "
    "y): keep x and y in one Dataset and shuffle them together (`TensorDataset(x, y)` + `shuffle=True`); or the "
    "task needs more data / steps than this short run (raise [tool.nncheck.probes.input-independent] steps)."
)


@dataclass(frozen=True)
class Params:
    """Parameters of input-independent (`[tool.nncheck.probes.input-independent]`)."""

    steps: int = param(
        180,
        fast=60,
        source=(
            "Training batches cycled (one more batch is held out), steps, checkpoint interval. The fast budget "
            "(60 steps) is the shortest run that separates the slowest correct example from shuffled labels on "
            "the held-out batch."
        ),
    )
    batches: int = param(
        3,
        source=(
            "Training batches cycled (one more batch is held out), steps, checkpoint interval. The fast budget "
            "(60 steps) is the shortest run that separates the slowest correct example from shuffled labels on "
            "the held-out batch."
        ),
    )
    eval_every: int = param(
        5,
        source=(
            "Training batches cycled (one more batch is held out), steps, checkpoint interval. The fast budget "
            "(60 steps) is the shortest run that separates the slowest correct example from shuffled labels on "
            "the held-out batch."
        ),
    )
    min_steps: int = param(10, source="The shortest run before an early stop.")
    fail_advantage: float = param(
        0.01,
        source=(
            'Karpathy, "A Recipe for Training Neural Networks": "train an input-independent baseline (e.g. '
            "easiest is to just set all your inputs to zero). This should perform worse than when you actually "
            "plug in your data.\"  gap = (L_blank - L_real) / |L_blank|: the share of the blank copy's loss that "
            "the real inputs remove. advantage = gap - min(gap at init, 0): at init a random model with real "
            "inputs is often *worse* than one with a constant input (its input-dependent outputs are random "
            'noise, up to 13% of the loss on the examples); that handicap is credited back, so "A pulls ahead of '
            "B\" counts even before A's loss is below B's.  Measured on checks/ and examples/ (seeds 0-2, full and "
            "fast budgets): models that ignore their input (zeros_like(x) / x * 0 in forward, a constant buffer "
            "fed instead of x) give advantage 0 exactly (both copies compute the same thing: |L_real - L_blank| < "
            "1e-6); every correct example reaches >= 0.036 on the training batches within 30 steps and >= 0.11 "
            "within 60. Fail below 0.01: 4 decades above the noise of input-ignoring models, 3.6x below the "
            "slowest correct example at 30 steps."
        ),
    )
    heldout_advantage: float = param(
        -0.03,
        source=(
            'Held-out advantage below which "A beats B only on the training batches": labels shuffled '
            "independently of the inputs give -0.075 to -0.12 after 60 steps and -0.31 to -0.36 after 100 "
            "(memorising noise makes the real-input copy *worse* than the blank one on unseen samples); the "
            "slowest correct example (EmbeddingBag, seed 2) dips to -0.024 at 30 steps and is back at +0.002 at "
            "60; all others stay >= 0."
        ),
    )
    confirm_steps: int = param(
        STEPS,
        source=(
            "Before warning, the verdict is confirmed by a second run on every cached batch but the held-out one "
            "(up to 7) for the full STEPS: more training data lets a correct model generalise (held-out a_vit.py: "
            "-0.11 with 3 batches at step 25, +0.39..+0.53 with 7 batches at 180 steps) while labels shuffled "
            "independently of the inputs stay below HELDOUT_ADVANTAGE with any amount of data. The confirmation "
            "costs up to 2 x STEPS steps, on the warn path only."
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
        confirmed by a second run on every cached batch but the held-out one for `confirm_steps` (180) steps: it
        warns only if the held-out advantage is still below `heldout_advantage` (a correct model generalises with
        more data; a transformer's held-out loss may dip while it first fits 3 batches).

    Why is this bad?
        B can only learn the best constant prediction. If A does no better, the model ignores its input: the
        input is overwritten or detached in forward(), the wrong tensor is fed to the first layer, or the data
        yields blank inputs. Training "works" (the loss falls to the label prior) and then plateaus forever.
        If A beats B on the batches it trains on but is worse on unseen samples, it memorises: the labels are
        likely misaligned with the inputs (shuffled separately), or the task needs more data than this run.

    Thresholds:
        fail when the training-batch advantage < fail_advantage (0.01); warn when it passes but the held-out
        advantage < heldout_advantage (-0.03, i.e. A is clearly worse than B on unseen samples). Measured on
        checks/ and examples/ (3 seeds): input-ignoring models give exactly 0 (|L_A - L_B| < 1e-6); correct
        examples >= 0.036 (train) after 30 steps; labels shuffled independently of the inputs reach a held-out
        advantage of -0.075 to -0.12 after 60 steps while the slowest correct example is at +0.002.
        Skips when neither copy lowers its loss by 1% (the model does not train at all: LR / gradient flow
        problems, reported by their own probes) and when the real-input loss becomes non-finite.

    How to fix:
        Make sure forward() feeds the batch to the first layer unchanged (no `x * 0`, `torch.zeros_like(x)`,
        `self.buffer` in place of x), and that x and y are shuffled together
        (`DataLoader(TensorDataset(x, y), shuffle=True)`).

    Example:
        `def forward(self, x): x = torch.zeros_like(x); return self.net(x)` trains to the label prior:
        fail after 5 steps, L_real 1.6 vs L_blank 1.6, identical at every step: advantage 0.000 < 0.01.
    """
    steps, eval_every = max(1, p.steps), max(1, p.eval_every)
    fail_adv, held_adv_min = p.fail_advantage, p.heldout_advantage
    train, held = split_batches(ctx, p.batches)
    if first_tensor(ctx.inputs_of(train[0])) is None:
        raise ProbeSkip("the batch holds no input tensor to blank")
    run = train_pair(ctx, train, held, steps, eval_every, p.min_steps)
    la, lb, n = run.la, run.lb, len(train)
    if not math.isfinite(la[-1]):
        raise ProbeSkip(
            f"the real-input copy's loss became {la[-1]} at step {len(la)}: training diverges "
            "(see the learning-rate and numerics probes)"
        )
    l_real, l_blank = _mean(la[-n:]), _mean(lb[-n:])
    adv_train, adv_held, checkpoints = run.adv_train, run.adv_held, run.checkpoints
    measured: dict[str, Any] = {
        "steps": len(la),
        "stopped_early": run.stop or None,
        "train_batches": n,
        "train_loss_real": l_real,
        "train_loss_blank": l_blank,
        "train_gap": rel_gap(l_real, l_blank),
        "train_gap_init": run.g0_train,
        "train_advantage": adv_train,
        "identical_losses": identical(la, lb),
    }
    if checkpoints:
        _, h_real, h_blank = checkpoints[-1]
        measured.update(
            {
                "heldout_loss_real": h_real,
                "heldout_loss_blank": h_blank,
                "heldout_gap": rel_gap(h_real, h_blank),
                "heldout_gap_init": run.g0_held,
                "heldout_advantage": adv_held,
            }
        )
    expected = {"train_advantage_min": fail_adv, "heldout_advantage_min": held_adv_min}
    kw: dict[str, Any] = {"measured": measured, "expected": expected, "series": _series(la, lb, checkpoints)}
    numbers = f"L_real {l_real:.4g} vs L_blank {l_blank:.4g}"
    l0_real, l0_blank = run.l0_real, run.l0_blank
    measured.update({"init_loss_real": l0_real, "init_loss_blank": l0_blank})
    stalled = l_real > (1 - NO_PROGRESS) * l0_real and l_blank > (1 - NO_PROGRESS) * l0_blank
    if adv_train < fail_adv and stalled and not measured["identical_losses"]:
        raise ProbeSkip(
            f"neither copy trains in {len(la)} steps (real inputs {l0_real:.4g} -> {l_real:.4g}, blank "
            f"{l0_blank:.4g} -> {l_blank:.4g}): the baseline cannot be judged; see the learning-rate and "
            "gradient-flow probes"
        )
    if adv_train < fail_adv:
        same = " (identical at every step: the input has no effect)" if measured["identical_losses"] else ""
        return failed(
            f"real inputs do not beat blanked inputs on the training batches after {len(la)} steps: "
            f"{numbers}{same}, advantage {adv_train:.3f} < {fail_adv:g}",
            hint=_inputs_hint(ctx, measured["identical_losses"]),
            **kw,
        )
    confirm_txt = ""
    if checkpoints and adv_held < held_adv_min and held is not None:
        # confirm on more data before warning: a correct model generalises once it trains on more batches
        cached = ctx.batches(MAX_CACHED_BATCHES)  # split_batches held out batch len(train)
        more = cached[: len(train)] + cached[len(train) + 1 :]
        if len(cached) >= 2 and len(more) > len(train):
            held2 = cached[len(train)]
            again = train_pair(ctx, more, held2, p.confirm_steps, eval_every, p.min_steps, memorisation_stop=False)
            measured.update(
                {
                    "confirm_train_batches": len(more),
                    "confirm_steps": len(again.la),
                    "confirm_stopped_early": again.stop or None,
                    "confirm_train_advantage": again.adv_train,
                    "confirm_heldout_advantage": again.adv_held,
                }
            )
            kw["series"] = _series(again.la, again.lb, again.checkpoints)
            if not (again.adv_held < held_adv_min):
                adv_held = again.adv_held
                confirm_txt = (
                    f" (held-out advantage {run.adv_held:.3f} after {len(la)} steps on {n} batches; "
                    f"{again.adv_held:.3f} after {len(again.la)} steps on {len(more)} batches)"
                )
            else:
                confirm_txt = (
                    f"; confirmed on {len(more)} training batches for {len(again.la)} steps: held-out advantage "
                    f"{again.adv_held:.3f}"
                )
                adv_held = min(adv_held, again.adv_held) if math.isfinite(again.adv_held) else adv_held
    if checkpoints and adv_held < held_adv_min:
        return warned(
            f"real inputs beat blanked inputs on the training batches ({numbers}, advantage {adv_train:.3f}) but "
            f"are worse on the held-out batch (L_real {measured['heldout_loss_real']:.4g} vs L_blank "
            f"{measured['heldout_loss_blank']:.4g}, advantage {run.adv_held:.3f} < {held_adv_min:g}{confirm_txt}): "
            "memorising; labels may be misaligned with inputs",
            hint=HELDOUT_HINT,
            **kw,
        )
    held_txt = f", held-out {adv_held:.3f}" if checkpoints else ", no held-out batch"
    return passed(
        f"real inputs beat blanked inputs after {len(la)} steps: {numbers} (advantage: train {adv_train:.3f}"
        f"{held_txt}){confirm_txt}",
        **kw,
    )


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


def _series(la: list[float], lb: list[float], checkpoints: list[tuple[int, float, float]]) -> dict[str, Any]:
    """Both copies' loss curves (training steps, held-out checkpoints) as one plot."""
    xs = list(range(1, len(la) + 1))
    curves: dict[str, Any] = {
        "real inputs (A), train": {"x": xs, "y": la},
        "blank inputs (B), train": {"x": xs, "y": lb},
    }
    if checkpoints:
        cx = [c[0] for c in checkpoints]
        curves["real inputs (A), held-out"] = {"x": cx, "y": [c[1] for c in checkpoints]}
        curves["blank inputs (B), held-out"] = {"x": cx, "y": [c[2] for c in checkpoints]}
    return {
        "loss": {
            "title": "Real vs blanked inputs",
            "xlabel": "step",
            "ylabel": "loss",
            "xscale": "linear",
            "yscale": "linear",
            "kind": "line",
            "curves": curves,
        }
    }
