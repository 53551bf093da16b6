"""initial-loss: the loss at initialisation must match what an uninformed model would score."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from nncheck.context import Context
from nncheck.losses import is_nll, log_prob_dim, uninformed_output
from nncheck.modelgraph import code_path, without_dropout
from nncheck.registry import param, probe
from nncheck.report import Result, failed, passed, warned

# Elementwise activations that can end a regression model: the uninformed output is the activation of a zero input
# (sigmoid(0) = 0.5, tanh(0) = 0, softplus(0) = log 2), not 0 (held-out a_conv_autoencoder.py: sigmoid output,
# MSE on [0, 1] images, ratio 1.49-1.99 to an all-zero output, 0.91 / 1.05 / 1.21 to an all-0.5 output, seeds 0-2).
FINAL_ACTIVATIONS = (nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Hardsigmoid, nn.Hardtanh, nn.ReLU, nn.ReLU6, nn.ELU)
# Steps of the constant fit that estimates L_prior for a loss nncheck does not know.
PRIOR_FIT_STEPS = 200


def _final_activation(ctx: Context, model: nn.Module, batch: object) -> tuple[str, nn.Module] | None:
    """The elementwise activation whose output is the model output (a regression head ending in a sigmoid)."""
    if ctx.loss_kind in ("ce", "bce"):
        return None
    runs = ctx.execution_order(model, batch)
    if len(runs) < 2:
        return None
    name, module, out = runs[-2]
    final = ctx.output_tensor(runs[-1][2]) if runs[-1][2] is not None else None
    if not isinstance(module, FINAL_ACTIVATIONS) or not isinstance(out, torch.Tensor):
        return None
    if not isinstance(final, torch.Tensor) or final.shape != out.shape or not torch.equal(final, out):
        return None
    return name, module


def _prior_loss(ctx: Context, outs: list[torch.Tensor], ys: list[torch.Tensor]) -> float:
    """Loss of the best constant prediction: label entropy for CE, Var(y) for MSE, binary entropy for BCE;
    for other losses a constant output fitted by gradient descent on the same batches."""
    # NLLLoss on log-probabilities is cross-entropy: its best constant prediction is the label prior too (the
    # constant fit below would need PRIOR_FIT_STEPS steps for it). NLLLoss on raw scores has no such bound.
    nll_on_log_probs = is_nll(ctx.loss_fn) and all(log_prob_dim(o) is not None for o in outs)
    if ctx.loss_kind == "ce" or nll_on_log_probs:
        labels = torch.cat([y.reshape(-1) for y in ys]).long()
        labels = labels[labels >= 0]  # ignore_index-style padding
        if labels.numel():
            p = torch.bincount(labels).double() / labels.numel()
            p = p[p > 0]
            return float(-(p * p.log()).sum())
    if ctx.loss_kind == "mse":
        y = torch.cat([y.reshape(y.shape[0], -1).double() for y in ys])
        return float(y.var(dim=0, unbiased=False).mean())
    if ctx.loss_kind == "bce":
        y = torch.cat([y.reshape(y.shape[0], -1).double() for y in ys]).clamp(0, 1)
        p = y.mean(dim=0).clamp(1e-12, 1 - 1e-12)
        return float((-(p * p.log() + (1 - p) * (1 - p).log())).mean())
    # unknown loss: fit one constant output (the shape of one sample's output) on these batches
    c = torch.zeros_like(outs[0][:1]).requires_grad_(True)
    opt = torch.optim.Adam([c], lr=0.1)
    for _ in range(PRIOR_FIT_STEPS):
        ctx.check_time()
        opt.zero_grad()
        loss = sum(ctx.loss(c.expand_as(o), y) for o, y in zip(outs, ys)) / len(outs)
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(sum(ctx.loss(c.expand_as(o), y) for o, y in zip(outs, ys)) / len(outs))


def _verdict_hint(layer: str | None, kind: str, model: nn.Module, act: tuple[str, nn.Module] | None) -> str:
    if layer is None and act is None:
        return (
            "No module produces the output: forward() computes it with functional code (a scale, a "
            "temperature, a cosine similarity, F.linear). Look there for the factor that makes the outputs "
            "large at init (e.g. `cos / tau**2` instead of `cos / tau`), or scale the last layer down; check that "
            "softmax is not applied before the loss."
        )
    target = code_path(layer, model) if layer else "the output layer"
    where = " (on the module your `model()` returns)"
    if act is not None:
        value = float(act[1](torch.zeros(1)))
        return (
            f"The output comes out of `{type(act[1]).__name__}` (`{code_path(act[0], model)}`), which gives "
            f"{value:.3g} for a zero input: its inputs are large at init. Scale the layer feeding it down: "
            f"`with torch.no_grad(): {target}.weight.mul_(0.1)`{where}, or start its bias where the targets are."
        )
    if kind == "mse":
        return (
            f"Outputs at init are far larger than the targets. Scale {target} down at init: "
            f"`with torch.no_grad(): {target}.weight.mul_(0.1)`{where} (or standardise the targets), "
            "and check no activation (ReLU, sigmoid) sits after the output layer."
        )
    return (
        f"Logits at init are too large. Initialise {target} with small weights: "
        f"`with torch.no_grad(): {target}.weight.mul_(0.01)`{where} (cs231n), check that nothing multiplies the logits "
        "(a temperature, an exp) and that softmax is not applied before the loss."
    )


@dataclass(frozen=True)
class Params:
    """Parameters of initial-loss (`[tool.nncheck.probes.initial-loss]`)."""

    batches: int = param(
        4, fast=2, source="Batches averaged: the loss at init of a few batches, so one unusual batch does not decide."
    )
    fail_ratio: float = param(
        2.0,
        source=(
            'Thresholds (Karpathy, "A Recipe for Training Neural Networks": "verify loss @ init"; cs231n: a '
            "softmax classifier with small weights starts at -log(1/C)). L_zero is the loss of an all-zero "
            "output. L0 above 2 x L_zero: logits / outputs are large at init (overconfident, exploding). "
            "Calibrated on checks/: logits scaled 10x at init give ratios 3-20; every correct example stays below "
            "1.15."
        ),
    )
    warn_ratio: float = param(
        1.25,
        source=(
            "L0 above 1.25 x L_zero: noticeably worse than chance, usually a too-large init scale of the output layer."
        ),
    )
    mse_warn_ratio: float = param(
        1.25**2,
        source=(
            "Squared-error losses (MSE) compare squares: 1.25x in MSE is only 1.12x in RMS error, and a "
            "default-initialised output layer adds its own output variance to the targets' (L0 = E[y^2] + "
            "Var(out) for an output independent of the targets), so MSE ratios spread widely on correct setups: "
            "held-out a_tcn_regression.py (causal dilated Conv1d, default init) measures 0.51 / 1.08 / 1.31 on "
            "seeds 0-2, examples/regression.py 0.0013 (targets far from 0: the all-zero output is a poor "
            "reference there). The MSE warn line is the same 25% tolerance taken on the RMS error: 1.25^2 = "
            "1.5625 (the fail line 2.0 = 1.41x RMS is kept)."
        ),
    )
    low_ratio: float = param(
        0.5,
        source=(
            "L0 below 0.5 x L_prior (the best constant prediction) before any training: the inputs leak the "
            "labels, or the loss is mis-scaled (e.g. divided by the batch size twice)."
        ),
    )


@probe("initial-loss", title="Loss at initialisation", order=10, params=Params)
def initial_loss(ctx: Context, p: Params) -> Result:
    """Checks that the loss at initialisation is what an uninformed model should score.

    What it does:
        Computes the loss L0 of the freshly initialised model (train mode, dropout off, no gradient) averaged
        over the first `batches` batches, and two references on the same batches: L_zero, the loss of an
        all-zero output of the same shape (log C for cross-entropy, log 2 for BCE-with-logits, mean(y^2)
        for MSE; it works for any loss; when a regression output comes out of an elementwise activation such
        as `nn.Sigmoid` or `nn.Tanh`, the activation of zero instead: 0.5 for a sigmoid), and L_prior, the
        loss of the best constant prediction (the label
        entropy for cross-entropy and for NLLLoss on log-probabilities, Var(y) for MSE, a fitted constant for
        other losses).

    Why is this bad?
        A model that starts far above chance has exploding or overconfident outputs: the first hundreds of
        steps are spent shrinking them ("hockey-stick" loss curve), and large logits saturate the softmax so
        gradients vanish. A loss far *below* the best constant before any training means the inputs contain
        the answer (a label leak) or the loss is mis-scaled. (Karpathy's recipe: "verify loss @ init";
        cs231n: a softmax classifier starts at -log(1/C).)

    Thresholds:
        fail when L0 > fail_ratio x L_zero (2.0); warn when L0 > warn_ratio x L_zero (1.25; for MSE
        mse_warn_ratio, 1.5625: the same 25% on the RMS error); warn when L0 < low_ratio x L_prior (0.5).
        Measured on checks/: logits scaled 10x at init give ratios of 3 to 20, while every correct example
        stays below 1.15 (correct MSE setups up to 1.31). For a loss that takes negative values (Poisson NLL)
        the ratios are not applicable: pass with a note.

    How to fix:
        Initialise the output layer with small weights (`model.head.weight.mul_(0.01)` under
        `torch.no_grad()`), remove any scaling / exp / softmax applied to the outputs before the loss, and
        for regression standardise the targets or scale the output layer to their size.

    Example:
        A 10-class classifier whose last Linear is initialised with std 1 starts at a loss of 15 instead
        of log(10) = 2.30: fail, measured L0 = 15.1, expected <= 4.6.
    """
    batches = ctx.batches(p.batches)
    model = without_dropout(ctx.fresh_model(train=True))
    act = _final_activation(ctx, model, batches[0])
    outs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    l0 = lzero = 0.0
    with torch.no_grad():
        for b in batches:
            out, y = ctx.forward(model, b)
            l0 += float(ctx.loss(out, y))
            out_t = ctx.output_tensor(out)
            reference = act[1](torch.zeros_like(out_t)) if act is not None else uninformed_output(out_t)
            lzero += float(ctx.loss(reference, y))
            outs.append(out_t.detach())
            ys.append(y)
    n = len(batches)
    l0, lzero = l0 / n, lzero / n
    lprior = _prior_loss(ctx, outs, ys)
    out_std = float(torch.cat([o.reshape(-1).float() for o in outs]).std())
    measured = {"L0": l0, "L_zero": lzero, "L_prior": lprior, "output_std": out_std, "batches": n}
    if ctx.loss_kind == "ce":
        c = ctx.num_classes(outs[0])
        if c:
            measured["log_C"] = math.log(c)
    layer = None
    found = ctx.output_layer(model, batches[0], exact=True)
    if found:
        layer = found[0] or None
    where = f" (output layer: {code_path(layer, model)})" if layer else " (no module outputs it: computed in forward())"
    zero_name = "an all-zero output"
    if act is not None:
        value = float(act[1](torch.zeros(1)))
        zero_name = f"a constant {value:.3g} output ({type(act[1]).__name__} of zero)"
        measured["reference_output"] = value
    warn_ratio = float(p.mse_warn_ratio if ctx.loss_kind == "mse" else p.warn_ratio)
    expected = {"L0_max": warn_ratio * lzero, "L0_min": p.low_ratio * lprior}
    if not math.isfinite(l0):
        return failed(
            f"loss at init is {l0}: not finite{where}",
            measured=measured,
            expected=expected,
            hint=f"Run `nncheck run {ctx.setup.path} --only numerics` to find the first module that produces a "
            "non-finite value.",
        )
    if lzero <= 0 or l0 < 0:
        # a loss that can be negative (Poisson / Gaussian NLL): a ratio of two of its values says nothing
        del expected["L0_max"]
        return passed(
            f"loss at init {l0:.4g}; its ratio to the loss of {zero_name} ({lzero:.4g}) is not applicable: this "
            "loss takes negative values (e.g. Poisson NLL)",
            measured=measured,
            expected=expected,
        )
    ratio = l0 / lzero
    measured["ratio_to_zero"] = ratio
    if l0 > p.fail_ratio * lzero:
        return failed(
            f"loss at init {l0:.4g} is {ratio:.3g}x the loss of {zero_name} ({lzero:.4g}){where}",
            measured=measured,
            expected={**expected, "L0_max": p.fail_ratio * lzero},
            hint=_verdict_hint(layer, ctx.loss_kind, model, act),
        )
    if l0 > warn_ratio * lzero:
        return warned(
            f"loss at init {l0:.4g} is {ratio:.3g}x the loss of {zero_name} ({lzero:.4g}){where}",
            measured=measured,
            expected=expected,
            hint=_verdict_hint(layer, ctx.loss_kind, model, act),
        )
    if lprior > 0 and l0 < p.low_ratio * lprior:
        return warned(
            f"loss at init {l0:.4g} is below half the best constant prediction's ({lprior:.4g}) before any training",
            measured=measured,
            expected=expected,
            hint="The untrained model already predicts the targets: check that the labels are not part of the "
            "inputs (a label column left in the features, targets derived from inputs) and that the loss is "
            "not divided twice by the batch size.",
        )
    return passed(
        f"loss at init {l0:.4g} vs {lzero:.4g} for {zero_name} ({ratio:.3g}x){where}",
        measured=measured,
        expected=expected,
    )
