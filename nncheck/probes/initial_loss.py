"""initial-loss: the loss at initialisation must match what an uninformed model would score."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nncheck.kit import Context, Findings, ProbeSkip, Result, code_path, param, probe
from nncheck.losses import Head, ModelOwnLoss, is_nll, log_prob_dim, uninformed_output

# Elementwise activations that can end a regression model: the uninformed output is the activation of a zero input
# (sigmoid(0) = 0.5, tanh(0) = 0, softplus(0) = log 2), not 0. Measured on tests/setups/conv_autoencoder.py (sigmoid
# output, MSE on [0, 1] images), seeds 0-2: ratios 1.49-1.99 to an all-zero output, 0.91 / 1.05 / 1.21 to an
# all-0.5 output.
FINAL_ACTIVATIONS = (nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Hardsigmoid, nn.Hardtanh, nn.ReLU, nn.ReLU6, nn.ELU)
# Steps of the constant fit that estimates L_prior for a loss nncheck does not know.
PRIOR_FIT_STEPS = 200


@dataclass(frozen=True)
class Params:
    """Parameters of initial-loss (`[tool.nncheck.probes.initial-loss]`)."""

    batches: int = param(4, fast=2, source="A few batches averaged, so that one unusual batch does not decide.")
    fail_ratio: float = param(
        2.0,
        source=(
            'Karpathy, "A Recipe for Training Neural Networks" (2019): "verify loss @ init"; cs231n: a softmax '
            "classifier with small weights starts at -log(1/C). Measured on seeds 0-2: il_logits_scaled_at_init.py "
            "gives ratios of 2.3-4.0 and il_temperature_inverted.py 15-41; no correct setup of checks/ and "
            "examples/ exceeds 1.22."
        ),
    )
    warn_ratio: float = param(
        1.25,
        source=(
            "25% worse than an uninformed model: usually a too-large init scale of the output layer. Measured on "
            "seeds 0-2: the correct setups of checks/ and examples/ without a squared-error loss stay below 1.17 "
            "(lo_residual_dropout_bn_ok.py the highest)."
        ),
    )
    # MSE compares squares, and a default-initialised output layer adds its own output variance to the targets'
    # (L0 = E[y^2] + Var(out) for an output independent of the targets), so MSE ratios spread widely on correct
    # setups; examples/regression.py measures 0.0013 (targets far from 0: the all-zero output is a poor reference).
    mse_warn_ratio: float = param(
        1.25**2,
        source=(
            "warn_ratio's 25% taken on the RMS error (1.25^2) for squared-error losses. Measured: "
            "tests/setups/tcn_regression.py (causal dilated Conv1d, default init) gives 0.51 / 1.08 / 1.31 on "
            "seeds 0-2."
        ),
    )
    low_ratio: float = param(
        0.5,
        source=(
            "Far below the best constant prediction before any training: the inputs leak the labels, or the loss "
            "is mis-scaled (e.g. divided by the batch size twice)."
        ),
    )


# --- measure -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FinalActivation:
    """The elementwise activation a regression output comes out of."""

    name: str  # its type, e.g. "Sigmoid"
    path: str  # its Python path, e.g. "model[3]"
    at_zero: float  # its value for a zero input: the uninformed output


@dataclass(frozen=True)
class Measurement:
    l0: float  # the loss at init, averaged over the batches
    l_zero: float  # the loss of an uninformed output (all zeros, or the final activation of zero)
    l_prior: float  # the loss of the best constant prediction
    output_std: float
    batches: int
    loss_kind: str
    log_c: float | None  # cross-entropy: log of the number of classes
    layer: str | None  # the output layer's Python path; None: no module outputs the model output
    activation: FinalActivation | None
    head: str = "output"  # the output tensor judged (``output`` for a tensor output; ``output[0]``, ``output.logits``)
    heads: int = 1  # how many heads the model has


def no_heads_reason(ctx: Context) -> str:
    """Why a multi-output model's loss terms could not be read (the probe skips)."""
    if isinstance(ctx.loss_fn, ModelOwnLoss):
        return (
            "the model computes its own loss (`output.loss`) and no standard loss of `output.logits` reproduces it: "
            'name the head in the setup: `nncheck = {"heads": {"logits": <its loss>}}`'
        )
    return (
        "the model output is not one tensor and no term of the loss could be matched to one output tensor (a "
        "torch loss function of one output and one target): name the heads in the setup, e.g. "
        '`nncheck = {"heads": {0: nn.CrossEntropyLoss(), 1: nn.MSELoss()}}`'
    )


def measure(ctx: Context, p: Params) -> list[Measurement]:
    """One Measurement per head of the model (``ctx.heads()``)."""
    heads = ctx.heads()
    if not heads:
        raise ProbeSkip(no_heads_reason(ctx))
    batches = ctx.batches(p.batches)
    model = ctx.fresh_model(train=True, dropout=False)
    runs = [ctx.init_forward(i) for i in range(len(batches))]  # the model at init: read once for every probe
    return [measure_head(ctx, model, batches, runs, h, len(heads)) for h in heads]


def measure_head(
    ctx: Context, model: nn.Module, batches: list[Any], runs: list[tuple[Any, Any]], head: Head, heads: int
) -> Measurement:
    act = _final_activation(ctx, model, batches[0]) if head.path == () else None
    kind = head.kind
    outs: list[torch.Tensor] = []
    ys: list[Any] = []
    l0 = lzero = 0.0
    with torch.no_grad():
        for out, y in runs:
            out_t, y_t = head.tensor(out), head.target(y)
            l0 += float(head.loss(out_t, y_t))
            reference = act[1](torch.zeros_like(out_t)) if act is not None else uninformed_output(out_t)
            lzero += float(head.loss(reference, y_t))
            outs.append(out_t.detach())
            ys.append(y_t)
    n = len(runs)
    l_prior = _prior_loss(ctx, head, outs, ys)
    output_std = float(torch.cat([o.reshape(-1).float() for o in outs]).std())
    classes = head.num_classes(outs[0]) if kind == "ce" else None
    found = ctx.head_layer(model, batches[0], head, exact=True)
    layer = found[0] if found else None  # "": the model itself is the only module
    activation = None
    if act is not None:
        activation = FinalActivation(type(act[1]).__name__, code_path(act[0], model), float(act[1](torch.zeros(1))))
    return Measurement(
        l0=l0 / n,
        l_zero=lzero / n,
        l_prior=l_prior,
        output_std=output_std,
        batches=n,
        loss_kind=kind,
        log_c=math.log(classes) if classes else None,
        layer=code_path(layer, model) if layer else None,
        activation=activation,
        head=head.name,
        heads=heads,
    )


def _final_activation(ctx: Context, model: nn.Module, batch: object) -> tuple[str, nn.Module] | None:
    """The elementwise activation whose output is the model output (a regression head ending in a sigmoid)."""
    if ctx.loss_kind in ("ce", "bce"):
        return None
    runs = ctx.execution_order(model, batch)
    if len(runs) < 2:
        return None
    name, module, out = runs[-2]
    final = runs[-1][2]
    if not isinstance(module, FINAL_ACTIVATIONS) or not isinstance(out, torch.Tensor):
        return None
    if not isinstance(final, torch.Tensor) or final.shape != out.shape or not torch.equal(final, out):
        return None
    return name, module


def _prior_loss(ctx: Context, head: Head, outs: list[torch.Tensor], ys: list[Any]) -> float:
    """Loss of the best constant prediction: label entropy for CE, Var(y) for MSE, binary entropy for BCE;
    for other losses a constant output fitted by gradient descent on the same batches."""
    # NLLLoss on log-probabilities is cross-entropy: its best constant prediction is the label prior too (the
    # constant fit below would need PRIOR_FIT_STEPS steps for it). NLLLoss on raw scores has no such bound.
    nll_on_log_probs = (is_nll(head.loss) or head.kind == "nll") and all(log_prob_dim(o) is not None for o in outs)
    tensors = all(isinstance(y, torch.Tensor) for y in ys)
    if tensors and (head.kind == "ce" or nll_on_log_probs) and all(not y.is_floating_point() for y in ys):
        labels = torch.cat([y.reshape(-1) for y in ys]).long()
        labels = labels[labels >= 0]  # ignore_index-style padding
        if labels.numel():
            p = torch.bincount(labels).double() / labels.numel()
            p = p[p > 0]
            return float(-(p * p.log()).sum())
    if tensors and head.kind == "mse":
        y = torch.cat([y.reshape(y.shape[0], -1).double() for y in ys])
        return float(y.var(dim=0, unbiased=False).mean())
    if tensors and head.kind == "bce":
        y = torch.cat([y.reshape(y.shape[0], -1).double() for y in ys]).clamp(0, 1)
        p = y.mean(dim=0).clamp(1e-12, 1 - 1e-12)
        return float((-(p * p.log() + (1 - p) * (1 - p).log())).mean())
    # unknown loss: fit one constant output (the shape of one sample's output) on these batches
    c = torch.zeros_like(outs[0][:1]).requires_grad_(True)
    opt = torch.optim.Adam([c], lr=0.1)
    for _ in range(PRIOR_FIT_STEPS):
        ctx.check_time()
        opt.zero_grad()
        loss = sum(head.loss(c.expand_as(o), y) for o, y in zip(outs, ys)) / len(outs)
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(sum(head.loss(c.expand_as(o), y) for o, y in zip(outs, ys)) / len(outs))


# --- judge -------------------------------------------------------------------------------------------------------


def judge(m: Measurement, p: Params, rerun: Callable[..., str]) -> Findings:
    """Fail when L0 > fail_ratio x L_zero, warn above warn_ratio (mse_warn_ratio for MSE) or below
    low_ratio x L_prior; a loss that takes negative values has no meaningful ratio. ``rerun``: ``ctx.rerun``."""
    warn_ratio = p.mse_warn_ratio if m.loss_kind == "mse" else p.warn_ratio
    f = Findings(measured=_measured(m), expected={"L0_max": warn_ratio * m.l_zero, "L0_min": p.low_ratio * m.l_prior})
    w = _words(m)
    if not math.isfinite(m.l0):
        f.fail(NOT_FINITE.format(**w), NOT_FINITE_HINT.format(rerun=rerun("numerics")))
    elif m.l_zero <= 0 or m.l0 < 0:
        del f.expected["L0_max"]  # a loss that can be negative (Poisson / Gaussian NLL): ratios say nothing
    elif m.l0 > p.fail_ratio * m.l_zero:
        f.expected["L0_max"] = p.fail_ratio * m.l_zero
        f.fail(TOO_HIGH.format(**w), _too_high_hint(m))
    elif m.l0 > warn_ratio * m.l_zero:
        f.warn(TOO_HIGH.format(**w), _too_high_hint(m))
    elif m.l_prior > 0 and m.l0 < p.low_ratio * m.l_prior:
        f.warn(TOO_LOW.format(**w, times=_times(p.low_ratio)), TOO_LOW_HINT)
    return f


# --- word --------------------------------------------------------------------------------------------------------

NOT_FINITE = "loss at init is {l0}: not finite{where}"
NOT_FINITE_HINT = "Run `{rerun}` to find the first module that produces a non-finite value."
NOT_APPLICABLE = (
    "loss at init {l0:.4g}; its ratio to the loss of {zero_name} ({l_zero:.4g}) is not applicable: this loss takes "
    "negative values (e.g. Poisson NLL)"
)
TOO_HIGH = "loss at init {l0:.4g} is {ratio:.3g}x the loss of {zero_name} ({l_zero:.4g}){where}"
TOO_LOW = "loss at init {l0:.4g} is below {times} the best constant prediction's ({l_prior:.4g}) before any training"
TOO_LOW_HINT = (
    "The untrained model already predicts the targets: check that the labels are not part of the inputs (a label "
    "column left in the features, targets derived from inputs) and that the loss is not divided twice by the batch "
    "size."
)
PASSED = "loss at init {l0:.4g} vs {l_zero:.4g} for {zero_name} ({ratio:.3g}x){where}"
FUNCTIONAL_OUTPUT_HINT = (
    "No module produces the output: forward() computes it with functional code (a scale, a temperature, a cosine "
    "similarity, F.linear). Look there for the factor that makes the outputs large at init (e.g. `cos / tau**2` "
    "instead of `cos / tau`), or scale the last layer down; check that softmax is not applied before the loss."
)
ON_MODEL = " (on the module your `model()` returns)"
ACTIVATION_HINT = (
    "The output comes out of `{act.name}` (`{act.path}`), which gives {act.at_zero:.3g} for a zero input: its inputs "
    "are large at init. Scale the layer feeding it down: `with torch.no_grad(): {target}.weight.mul_(0.1)`"
    + ON_MODEL
    + ", or start its bias where the targets are."
)
REGRESSION_HINT = (
    "Outputs at init are far larger than the targets. Scale {target} down at init: `with torch.no_grad(): "
    "{target}.weight.mul_(0.1)`" + ON_MODEL + " (or standardise the targets), and check no activation (ReLU, "
    "sigmoid) sits after the output layer."
)
LOGITS_HINT = (
    "Logits at init are too large. Initialise {target} with small weights: `with torch.no_grad(): "
    "{target}.weight.mul_(0.01)`" + ON_MODEL + " (cs231n), check that nothing multiplies the logits (a temperature, "
    "an exp) and that softmax is not applied before the loss."
)


def initial_message(m: Measurement) -> str:
    """The message of a pass (the ratio, or why a ratio is not applicable)."""
    w = _words(m)
    if m.l_zero <= 0 or m.l0 < 0:
        return NOT_APPLICABLE.format(**w)
    return PASSED.format(**w) if "ratio" in w else ""


def _words(m: Measurement) -> dict[str, Any]:
    where = f" (output layer: {m.layer})" if m.layer else " (no module outputs it: computed in forward())"
    zero_name = "an all-zero output"
    if m.activation is not None:
        zero_name = f"a constant {m.activation.at_zero:.3g} output ({m.activation.name} of zero)"
    w = {"l0": m.l0, "l_zero": m.l_zero, "l_prior": m.l_prior, "where": where, "zero_name": zero_name}
    ratio = _ratio(m)
    if ratio is not None:
        w["ratio"] = ratio
    return w


def _ratio(m: Measurement) -> float | None:
    """L0 / L_zero, when it means something: a finite loss that takes no negative values."""
    if not math.isfinite(m.l0) or m.l_zero <= 0 or m.l0 < 0:
        return None
    return m.l0 / m.l_zero


def _times(ratio: float) -> str:
    return "half" if ratio == 0.5 else f"{ratio:g}x"


def _too_high_hint(m: Measurement) -> str:
    if m.layer is None and m.activation is None:
        return FUNCTIONAL_OUTPUT_HINT
    target = m.layer or "the output layer"
    if m.activation is not None:
        return ACTIVATION_HINT.format(act=m.activation, target=target)
    return (REGRESSION_HINT if m.loss_kind == "mse" else LOGITS_HINT).format(target=target)


def _measured(m: Measurement) -> dict[str, Any]:
    measured: dict[str, Any] = {
        "L0": m.l0,
        "L_zero": m.l_zero,
        "L_prior": m.l_prior,
        "output_std": m.output_std,
        "batches": m.batches,
    }
    if m.log_c is not None:
        measured["log_C"] = m.log_c
    if m.activation is not None:
        measured["reference_output"] = m.activation.at_zero
    ratio = _ratio(m)
    if ratio is not None:
        measured["ratio_to_zero"] = ratio
    return measured


@probe("initial-loss", title="Loss at initialisation", order=10, params=Params)
def initial_loss(ctx: Context, p: Params) -> Result:
    """Checks that the loss at initialisation is what an uninformed model should score.

    What it does:
        Computes the loss L0 of the freshly initialised model (train mode, dropout off, no gradient) averaged
        over the first batches ({batches}), and two references on the same batches: L_zero,
        the loss of an all-zero output of the same shape (log C for cross-entropy, log 2 for BCE-with-logits, mean(y^2)
        for MSE; it works for any loss; when a regression output comes out of an elementwise activation such
        as `nn.Sigmoid` or `nn.Tanh`, the activation of zero instead: 0.5 for a sigmoid), and L_prior, the
        loss of the best constant prediction (the label entropy for cross-entropy and for NLLLoss on
        log-probabilities, Var(y) for MSE, a fitted constant for other losses).

    Why is this bad?
        A model that starts far above chance has exploding or overconfident outputs: the first hundreds of
        steps are spent shrinking them ("hockey-stick" loss curve), and large logits saturate the softmax so
        gradients vanish. A loss far *below* the best constant before any training means the inputs contain
        the answer (a label leak) or the loss is mis-scaled. (Karpathy's recipe: "verify loss @ init";
        cs231n: a softmax classifier starts at -log(1/C).)

    Thresholds:
        fail when L0 > {fail_ratio} x L_zero; warn when L0 > {warn_ratio} x L_zero
        (for MSE {mse_warn_ratio}: the same 25% on the RMS error); warn when
        L0 < {low_ratio} x L_prior. Measured on checks/: il_logits_scaled_at_init.py (logits scaled at
        init) gives ratios of 2.3 to 4.0, il_temperature_inverted.py 15 to 41, while every correct setup stays
        below 1.17 (correct MSE setups up to 1.31). For a loss that takes negative values (Poisson NLL) the
        ratios are not applicable: pass with a note.

    How to fix:
        Initialise the output layer with small weights (`model.head.weight.mul_(0.01)` under
        `torch.no_grad()`), remove any scaling / exp / softmax applied to the outputs before the loss, and
        for regression standardise the targets or scale the output layer to their size.

    Example:
        A 10-class classifier whose last Linear is initialised with std 1 starts at a loss of 15 instead
        of log(10) = 2.30: fail, measured L0 = 15.1, expected <= 4.6.
    """
    ms = measure(ctx, p)
    if len(ms) == 1 and ms[0].head == "output":
        return judge(ms[0], p, ctx.rerun).result(initial_message(ms[0]))
    return judge_heads(ms, p, ctx.rerun).result("; ".join(f"{m.head}: {initial_message(m)}" for m in ms))


def judge_heads(ms: list[Measurement], p: Params, rerun: Callable[..., str]) -> Findings:
    """Each head judged on its own loss term; the findings name the head, the numbers are kept per head."""
    f = Findings(measured={"heads": {}}, expected={"heads": {}})
    for m in ms:
        one = judge(m, p, rerun)
        f.measured["heads"][m.head] = {"loss_kind": m.loss_kind, **one.measured}
        f.expected["heads"][m.head] = one.expected
        for item in one.items:
            f.add(item.status, f"{m.head} ({m.loss_kind}): {item.message}", item.hint)
    return f
