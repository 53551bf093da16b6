"""last-layer-bias: the output layer's bias should start at the label prior (log p, log-odds, target mean)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nncheck.context import Context, ProbeSkip
from nncheck.modelgraph import code_path, without_dropout
from nncheck.registry import param, probe
from nncheck.report import Result, failed, passed, warned

# Additive (Jeffreys) smoothing of class counts, so a class absent from the estimation batches gets a finite log p.
COUNT_SMOOTHING = 0.5
# Clamp for BCE priors (log-odds of 1e-4 = -9.2): a label never on in the batches gets a large negative, finite bias.
BCE_CLAMP = 1e-4
# A prior only counts as "far from uniform" when the labels show it beyond sampling noise: a chi-square test of the
# class counts against uniform (BCE: a binomial z-test against p = 0.5) must reject at one-sided p < 0.001
# (z > 3.09). Found by hypothesis: balanced 17-class labels, 256 samples, max/min of the estimated prior >= 3 and a
# "gain" of 0.043 nats (a warn) from the finite sample's own skew.
PRIOR_SIGNIFICANCE_Z = 3.09
# Print the bias literally up to this many values; beyond, the hint gives the line that computes it.
MAX_LITERAL = 32


@dataclass
class Target:
    """What the output layer's bias should be, and how it was derived."""

    bias: torch.Tensor  # the ideal bias (one value per output unit)
    strong: bool  # the prior is far from what a zero bias assumes (uniform classes, p = 0.5, mean 0)
    summary: dict[str, Any]  # numbers for `measured`
    formula: str  # how the values are computed, for the hint


def _split(ctx: Context, batches: list[Any]) -> tuple[list[Any], list[Any]]:
    """Estimation and judging batches: the first and second halves (of the samples, with a single batch)."""
    if len(batches) >= 2:
        half = len(batches) // 2
        return batches[:half], batches[half : 2 * half]
    n = ctx.batch_size(batches[0])
    if n < 4:
        raise ProbeSkip(f"a single batch of {n} samples is too small to estimate a label prior and judge it")
    return [ctx.slice_batch(batches[0], n // 2)], [ctx.slice_batch(batches[0], n - n // 2, start=n // 2)]


def _outputs(ctx: Context, model: nn.Module, batches: list[Any]) -> tuple[list[torch.Tensor], list[Any], float]:
    """Outputs, targets and the mean loss of ``model`` on ``batches`` (no gradient)."""
    outs, ys, total = [], [], 0.0
    with torch.no_grad():
        for b in batches:
            out, y = ctx.forward(model, b)
            total += float(ctx.loss(out, y))
            outs.append(ctx.output_tensor(out))
            ys.append(y)
    return outs, ys, total / len(batches)


def _per_unit(t: torch.Tensor, units: int, like: torch.Tensor) -> torch.Tensor:
    """``t`` (shaped like the output, or with its numel) as rows of ``units`` values, one per bias entry."""
    t = torch.as_tensor(t)
    if units == 1:
        return t.reshape(-1, 1)
    if like.dim() > 2 and like.shape[1] == units and like.shape[-1] != units:  # (B, C, H, W): channels on dim 1
        return t.reshape(like.shape).movedim(1, -1).reshape(-1, units)
    return t.reshape(-1, units)


def _chi2_uniform_z(counts: torch.Tensor) -> float:
    """z-score of the chi-square statistic of ``counts`` against a uniform distribution (Wilson-Hilferty)."""
    n, k = float(counts.sum()), counts.numel()
    if k < 2 or n <= 0:
        return 0.0
    e = n / k
    chi2 = float(((counts - e) ** 2 / e).sum())
    df = k - 1
    v = 2.0 / (9.0 * df)
    return ((chi2 / df) ** (1.0 / 3.0) - (1.0 - v)) / math.sqrt(v)


def seen_classes(ys: list[Any], c: int) -> torch.Tensor:
    """Boolean mask of the classes that occur as targets in ``ys`` (ignore_index / padding left out)."""
    labels = torch.cat([torch.as_tensor(y).reshape(-1).long().cpu() for y in ys])
    labels = labels[(labels >= 0) & (labels < c)]
    return torch.bincount(labels, minlength=c) > 0


def _ce_target(
    ctx: Context, outs: list[torch.Tensor], ys: list[Any], units: int, ratio_min: float, seen: torch.Tensor | None
) -> Target:
    """log p over the classes that occur as targets (``seen``, from every batch read). Classes that never occur
    (BOS / PAD tokens, a reserved class) are left out of the prior, its ratio, its test and the ideal bias (NaN:
    left as is); with every class seen the bias is log p, else log(p * K) over the K seen classes (uniform -> 0, the
    scale of a default-initialised bias, so the unseen classes keep their place)."""
    c = ctx.num_classes(outs[0]) or units
    labels = torch.cat([torch.as_tensor(y).reshape(-1).long() for y in ys])
    labels = labels[(labels >= 0) & (labels < c)]  # ignore_index / padding
    if not labels.numel():
        raise ProbeSkip("no class labels found in the batches")
    counts = torch.bincount(labels.cpu(), minlength=c).double()
    keep = torch.ones(c, dtype=torch.bool) if seen is None or not bool(seen.any()) else seen[:c]
    kept = counts[keep]
    p = (kept + COUNT_SMOOTHING) / (kept.sum() + COUNT_SMOOTHING * kept.numel())
    ratio = float(p.max() / p.min())
    z = _chi2_uniform_z(kept)
    bias = torch.full((c,), float("nan"), dtype=torch.float64)
    bias[keep] = p.log() if bool(keep.all()) else (p * kept.numel()).log()
    full_p = torch.zeros(c, dtype=torch.float64)
    full_p[keep] = p
    return Target(
        bias=bias,
        strong=ratio >= ratio_min and z > PRIOR_SIGNIFICANCE_Z,
        summary={
            "classes": c,
            "classes_seen": int(keep.sum()),
            "labels": int(labels.numel()),
            "prior_max_min_ratio": ratio,
            "nonuniform_z": z,
            "prior": full_p.tolist(),
        },
        formula="log p, p the class frequencies" + ("" if bool(keep.all()) else " of the classes that occur"),
    )


def _bce_target(outs: list[torch.Tensor], ys: list[Any], units: int, ratio_min: float) -> Target:
    y = torch.cat([_per_unit(t, units, o) for t, o in zip(ys, outs)]).double()
    p = y.mean(dim=0).clamp(BCE_CLAMP, 1 - BCE_CLAMP)
    odds = torch.maximum(p / (1 - p), (1 - p) / p)
    z = (y.mean(dim=0) - 0.5).abs() / (0.5 / math.sqrt(y.shape[0]))  # binomial z-test against p = 0.5
    return Target(
        bias=(p / (1 - p)).log().cpu(),
        strong=bool(((odds >= ratio_min) & (z > PRIOR_SIGNIFICANCE_Z)).any()),
        summary={"positive_rate": p.tolist(), "max_odds": float(odds.max())},
        formula="log(p / (1 - p)), p the rate of positive labels",
    )


def _mse_target(outs: list[torch.Tensor], ys: list[Any], units: int) -> Target:
    o = torch.cat([_per_unit(t, units, t) for t in outs]).double()
    y = torch.cat([_per_unit(t, units, o_) for t, o_ in zip(ys, outs)]).double()
    mean, std, out_mean = y.mean(dim=0), y.std(dim=0, unbiased=False), o.mean(dim=0)
    offset = float(((mean - out_mean).abs() / std.clamp_min(1e-12)).max())
    return Target(
        bias=mean.cpu(),
        strong=offset > 1.0,
        summary={
            "target_mean": mean.tolist(),
            "target_std": std.tolist(),
            "output_mean": out_mean.tolist(),
            "offset_in_stds": offset,
        },
        formula="the target mean",
    )


def _target(
    ctx: Context,
    outs: list[torch.Tensor],
    ys: list[Any],
    units: int,
    ratio_min: float,
    seen: torch.Tensor | None = None,
) -> Target:
    if ctx.loss_kind == "ce":
        return _ce_target(ctx, outs, ys, units, ratio_min, seen)
    if ctx.loss_kind == "bce":
        return _bce_target(outs, ys, units, ratio_min)
    return _mse_target(outs, ys, units)


def _bias_units(ctx: Context, layer: nn.Module, out: torch.Tensor) -> int:
    """How many output units the bias (or a bias, for a bias-less layer) must cover."""
    bias = getattr(layer, "bias", None)
    if isinstance(bias, torch.Tensor):
        return int(bias.numel())
    if ctx.loss_kind == "ce":
        return ctx.num_classes(out) or int(out.shape[-1])
    return int(out.shape[-1]) if out.dim() > 1 else 1


def _literal(values: torch.Tensor) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values.tolist()) + "]"


def _paste_line(name: str, target: Target, model: nn.Module | None = None) -> str:
    """The exact line to paste after the model is built (classes never seen as targets are left as they are)."""
    ref = f"{code_path(name, model)}.bias"
    values = target.bias
    known = ~torch.isnan(values)
    if values.numel() == 1:
        return f"with torch.no_grad(): {ref}.fill_({float(values[0]):.4g})"
    if values.numel() <= MAX_LITERAL and bool(known.all()):
        return f"with torch.no_grad(): {ref}.copy_(torch.tensor({_literal(values)}))"
    if values.numel() <= MAX_LITERAL:
        idx = torch.nonzero(known).reshape(-1).tolist()
        return f"with torch.no_grad(): {ref}[{idx}] = torch.tensor({_literal(values[known])})"
    return (
        f"counts = torch.bincount(train_labels, minlength={values.numel()}).float() + 0.5; "
        f"with torch.no_grad(): {ref}.copy_((counts / counts.sum()).log())"
    )


def _unseen_note(target: Target) -> list[str]:
    unseen = torch.nonzero(torch.isnan(target.bias)).reshape(-1).tolist()
    if not unseen:
        return []
    shown = ", ".join(str(i) for i in unseen[:10]) + (", ..." if len(unseen) > 10 else "")
    return [
        f"classes {shown} never occur as targets in the batches read ({len(unseen)} of {target.bias.numel()}; e.g. "
        "BOS / PAD tokens): the prior, its ratio and the ideal bias are computed over the other classes, and their "
        "bias is left as it is"
    ]


def _tied_to(model: nn.Module, layer: nn.Module) -> str | None:
    """Qualified name of another module sharing ``layer``'s weight (weight tying), or None."""
    weight = getattr(layer, "weight", None)
    if not isinstance(weight, torch.Tensor):
        return None
    for n, m in model.named_modules():
        if m is not layer and getattr(m, "weight", None) is weight:
            return n
    return None


def _gain_text(kind: str, gain: float) -> str:
    return f"{100 * gain:.0f}% of the loss" if kind == "mse" else f"{gain:.3f} nats"


@dataclass(frozen=True)
class Params:
    """Parameters of last-layer-bias (`[tool.nncheck.probes.last-layer-bias]`)."""

    batches: int = param(
        8,
        fast=4,
        source=(
            'DESIGN.md §6 "Sampling noise in label priors": the prior is estimated on the first half of the '
            "batches and the gain judged on the other half. Measured on balanced 40-class tasks (8 batches of 32, "
            '5 seeds): judged on the same batches the noisy prior "gains" +0.06..+0.09 nats (a warn, nearly a '
            "fail); judged on the other half, -0.11..-0.30. examples/imbalanced.py (bias already at log p): "
            "held-out gain -0.013..+0.0003 nats. Full: 4 + 4 batches; fast: 2 + 2 (broken checks/ still gain > "
            "0.35 nats / 99%)."
        ),
    )
    prior_ratio: float = param(
        3.0,
        source=(
            'Karpathy, "A Recipe for Training Neural Networks" ("init well": an imbalanced 1:10 dataset -> set '
            "the logit bias so the network predicts 0.1 at init; regression with mean 50 -> initialise the final "
            'bias to 50); Lin et al. 2017 (focal loss, §4.1 "prior" initialisation). Thresholds from issue 3: a '
            'prior is "far from uniform" when max p / min p >= 3; fail when the ideal bias would lower the '
            "initial loss by > 0.1 nats (CE / BCE) or by more than half (MSE); warn at a quarter of that."
        ),
    )
    fail_gain_nats: float = param(
        0.1,
        source=(
            'Karpathy, "A Recipe for Training Neural Networks" ("init well": an imbalanced 1:10 dataset -> set '
            "the logit bias so the network predicts 0.1 at init; regression with mean 50 -> initialise the final "
            'bias to 50); Lin et al. 2017 (focal loss, §4.1 "prior" initialisation). Thresholds from issue 3: a '
            'prior is "far from uniform" when max p / min p >= 3; fail when the ideal bias would lower the '
            "initial loss by > 0.1 nats (CE / BCE) or by more than half (MSE); warn at a quarter of that."
        ),
    )
    warn_gain_nats: float = param(
        0.025,
        source=(
            'Karpathy, "A Recipe for Training Neural Networks" ("init well": an imbalanced 1:10 dataset -> set '
            "the logit bias so the network predicts 0.1 at init; regression with mean 50 -> initialise the final "
            'bias to 50); Lin et al. 2017 (focal loss, §4.1 "prior" initialisation). Thresholds from issue 3: a '
            'prior is "far from uniform" when max p / min p >= 3; fail when the ideal bias would lower the '
            "initial loss by > 0.1 nats (CE / BCE) or by more than half (MSE); warn at a quarter of that."
        ),
    )
    fail_gain_mse: float = param(
        0.5,
        source=(
            'Karpathy, "A Recipe for Training Neural Networks" ("init well": an imbalanced 1:10 dataset -> set '
            "the logit bias so the network predicts 0.1 at init; regression with mean 50 -> initialise the final "
            'bias to 50); Lin et al. 2017 (focal loss, §4.1 "prior" initialisation). Thresholds from issue 3: a '
            'prior is "far from uniform" when max p / min p >= 3; fail when the ideal bias would lower the '
            "initial loss by > 0.1 nats (CE / BCE) or by more than half (MSE); warn at a quarter of that."
        ),
    )
    warn_gain_mse: float = param(
        0.125,
        source=(
            'Karpathy, "A Recipe for Training Neural Networks" ("init well": an imbalanced 1:10 dataset -> set '
            "the logit bias so the network predicts 0.1 at init; regression with mean 50 -> initialise the final "
            'bias to 50); Lin et al. 2017 (focal loss, §4.1 "prior" initialisation). Thresholds from issue 3: a '
            'prior is "far from uniform" when max p / min p >= 3; fail when the ideal bias would lower the '
            "initial loss by > 0.1 nats (CE / BCE) or by more than half (MSE); warn at a quarter of that."
        ),
    )


@probe("last-layer-bias", title="Output bias at the label prior", order=20, params=Params)
def last_layer_bias(ctx: Context, p: Params) -> Result:
    """Checks that the output layer's bias starts at the label prior when the prior is far from uniform.

    What it does:
        Finds the output layer (the last parameterised module whose output has the model output's shape;
        `(B, C)`, `(B, T, C)` and `(B, C, H, W)` outputs alike) and derives the bias an uninformed model
        should start with from the labels: for cross-entropy log p (p the class frequencies), for
        BCE-with-logits log(p / (1 - p)) per output unit, for MSE the target mean. The prior is estimated
        on the first half of the batches (`batches`, 8: 4 + 4) and the gain judged on the other half: the
        loss of the model at init versus the loss of a copy with that bias written in. Judging on other
        batches keeps the sampling noise of the prior (10+ classes, a vocabulary) from looking like a gain.
        Classes that never occur as targets in the batches read (BOS / PAD tokens, reserved ids) are left out of
        the prior, its ratio, the gain and the ideal bias (their bias is left as it is; a note names them).

    Why is this bad?
        With a prior far from uniform (90/5/5 classes, 2% positives, targets around 100), a zero-ish bias
        makes the model start far above the best constant prediction: the first hundreds of steps only learn
        the class frequencies / the target mean, the loss curve is a "hockey stick", and large early gradients
        disturb the rest of the network. (Karpathy's recipe: "init well"; focal loss, Lin et al. 2017, §4.1.)

    Thresholds:
        applies when max p / min p >= `prior_ratio` (3) for cross-entropy (odds >= 3 for a BCE unit) and the
        counts reject a uniform prior beyond sampling noise (chi-square / binomial test, one-sided p < 0.001), or
        when |mean(y) - mean(output)| > std(y) for MSE (issue 3). fail when the bias would lower the held-out loss
        by more than `fail_gain_nats` (0.1) for CE / BCE or by more than half (`fail_gain_mse`) for MSE;
        warn at a quarter of that. An output layer without a bias and a strong prior: warn (the hint explains
        weight tying when the layer's weight is shared, e.g. with the embedding, and how to add a bias).

    How to fix:
        Paste the line of the hint after the model is built (it names the layer and holds the numbers), e.g.
        `with torch.no_grad(): model.head.bias.copy_(torch.tensor([-0.105, -2.99, -2.99]))`; for MSE, standardise
        the targets or `model.head.bias.fill_(mean)`. Take the frequencies from the whole training set.

    Example:
        A 3-class classifier with labels 90/5/5 and PyTorch's default init starts at 1.10 nats; with
        bias = log p it starts at 0.39: fail, "the output layer `model.head` with its bias at the prior (log p)
        would lower the initial loss from 1.1 to 0.39 (0.71 nats)", hint
        `with torch.no_grad(): model.head.bias.copy_(torch.tensor([-0.1021, -3.025, -3.025]))`.
    """
    kind = ctx.loss_kind
    if kind not in ("ce", "bce", "mse"):
        raise ProbeSkip(f"the ideal bias is known for cross-entropy, BCE and MSE; this loss is {ctx.loss_name or kind}")
    batches = ctx.batches(p.batches)
    est, judge = _split(ctx, batches)
    model = without_dropout(ctx.fresh_model(train=True))
    found = ctx.output_layer(model, batches[0])
    if found is None:
        raise ProbeSkip("the model has no parameterised layer")
    name, layer = found
    outs, ys, _ = _outputs(ctx, model, est)
    judge_outs, judge_ys, l_cur = _outputs(ctx, model, judge)
    if not all(isinstance(y, torch.Tensor) for y in ys + judge_ys):
        raise ProbeSkip("the targets are not tensors")
    units = _bias_units(ctx, layer, outs[0])
    ratio_min = p.prior_ratio
    seen = None
    if kind == "ce":
        seen = seen_classes(ys + judge_ys, ctx.num_classes(outs[0]) or units)
    target = _target(ctx, outs, ys, units, ratio_min, seen)  # judged on the other batches
    overall = _target(ctx, outs + judge_outs, ys + judge_ys, units, ratio_min, seen)  # for the gate and the hint
    notes = _unseen_note(overall)
    where = f"the output layer `{code_path(name, model)}`" if name else "the model's output layer"
    summary = {k: v for k, v in overall.summary.items() if not isinstance(v, list) or len(v) <= MAX_LITERAL}
    measured: dict[str, Any] = {"output_layer": code_path(name, model), **summary, "batches": [len(est), len(judge)]}
    nats = kind != "mse"
    fail_at = float(p.fail_gain_nats if nats else p.fail_gain_mse)
    warn_at = float(p.warn_gain_nats if nats else p.warn_gain_mse)
    expected: dict[str, Any] = {"gain_below": warn_at, "fail_above": fail_at}
    if kind == "ce":
        expected["prior_max_min_ratio_below"] = ratio_min
    if not overall.strong:
        what = {
            "ce": "the classes are close to balanced",
            "bce": "the labels are close to 50/50",
            "mse": "the outputs at init are within one std of the target mean",
        }[kind]
        return passed(
            f"{what}: no prior to build into the bias of {where}", measured=measured, expected=expected, notes=notes
        )

    if not hasattr(layer, "bias"):
        raise ProbeSkip(f"cannot tell which parameter of {where} ({type(layer).__name__}) is its output bias")

    bias = getattr(layer, "bias", None)
    line = _paste_line(name, overall, model)
    if not isinstance(bias, torch.Tensor):
        tied = _tied_to(model, layer)
        v = overall.bias.numel()
        if tied is not None:
            hint = (
                f"{where} shares its weight with `{code_path(tied, model)}` (weight tying, as GPT-2 / nanoGPT), the "
                "usual reason it has no bias; tying only concerns the weight, so add a separate bias on the module "
                f"your `model()` returns: `self.head_bias = nn.Parameter(torch.zeros({v}))` in __init__, "
                f"`logits = self.{name.split('.')[-1]}(h) + self.head_bias` in forward, then start it at the prior "
                f"(values: {overall.formula}; `counts = torch.bincount(train_targets.flatten(), minlength={v}) + 0.5; "
                "with torch.no_grad(): model.head_bias.copy_((counts / counts.sum()).log())`). Without a bias the "
                "network must learn the token frequencies through its weights, which takes many steps."
            )
        else:
            hint = (
                f"Give {where} a bias (`bias=True` where model() builds it) and start it at the prior: `{line}`. "
                "Without a bias the network must learn the prior through its weights, which takes many steps."
            )
        return warned(
            f"{where} has no bias while the labels have a strong prior (ideal bias: {overall.formula})"
            + (f"; its weight is tied to `{code_path(tied, model)}`" if tied is not None else ""),
            measured=measured,
            expected=expected,
            hint=hint,
            notes=notes,
        )
    if bias.numel() != overall.bias.numel():
        raise ProbeSkip(f"the bias of {where} has {bias.numel()} values for {overall.bias.numel()} output units")

    copy = without_dropout(ctx.fresh_model(train=True))
    with torch.no_grad():
        new_bias = dict(copy.named_modules())[name].bias
        ideal = target.bias.to(new_bias.device, new_bias.dtype).reshape(new_bias.shape)
        new_bias.copy_(torch.where(torch.isnan(ideal), new_bias, ideal))  # unseen classes: left as they are
    _, _, l_new = _outputs(ctx, copy, judge)
    gain = l_cur - l_new  # nats for CE / BCE; a share of the loss for MSE
    if kind == "mse":
        gain = gain / l_cur if l_cur > 0 else 0.0
    measured = {"loss_at_init": l_cur, "loss_with_prior_bias": l_new, "gain": gain, **measured}
    if overall.bias.numel() <= MAX_LITERAL:
        measured["ideal_bias"] = [None if math.isnan(v) else v for v in overall.bias.tolist()]
    message = (
        f"{where} with its bias at the prior ({target.formula}) would lower the initial loss from {l_cur:.4g} to "
        f"{l_new:.4g} ({_gain_text(kind, gain)}, on batches the prior was not estimated from)"
    )
    hint = (
        f"Start the bias of {where} at the prior, right after building the model: `{line}` "
        f"(values from {len(est) + len(judge)} batches; compute them on the whole training set)."
    )
    if kind == "mse":
        hint += " Or standardise the targets ((y - mean) / std) and undo it at prediction time."
    if gain > fail_at:
        return failed(message, measured=measured, expected=expected, hint=hint, notes=notes)
    if gain > warn_at:
        return warned(message, measured=measured, expected=expected, hint=hint, notes=notes)
    return passed(
        f"the bias of {where} is already close to the prior: writing it in changes the initial loss by "
        f"{_gain_text(kind, gain)} ({l_cur:.4g} -> {l_new:.4g})",
        measured=measured,
        expected=expected,
        notes=notes,
    )
