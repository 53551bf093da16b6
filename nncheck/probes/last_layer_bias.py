"""last-layer-bias: the output layer's bias should start at the label prior (log p, log-odds, target mean)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nncheck.context import INIT_SEED_OFFSET
from nncheck.kit import Context, Findings, ProbeSkip, Result, code_path, param, probe
from nncheck.losses import Head, ModelOwnLoss, classes_last
from nncheck.modelgraph import without_dropout
from nncheck.state import preserved_rngs
from nncheck.trace import TRAIN_EVAL_EVERY

# Additive (Jeffreys) smoothing of class counts, so a class absent from the estimation batches gets a finite log p.
COUNT_SMOOTHING = 0.5
# Clamp for BCE priors (log-odds of 1e-4 = -9.2): a label never on in the batches gets a large negative, finite bias.
BCE_CLAMP = 1e-4
# A prior only counts as "far from uniform" when the labels show it beyond sampling noise: a chi-square test of the
# class counts against uniform (BCE: a binomial z-test against p = 0.5) must reject at one-sided p < 0.001
# (z > 3.09). Found by hypothesis: balanced 17-class labels, 256 samples, max/min of the estimated prior >= 3 and a
# "gain" of 0.043 nats (a warn) from the finite sample's own skew.
PRIOR_SIGNIFICANCE_Z = 3.09
# MSE: the target mean is a prior worth building in when it is more than this many target stds away from the mean
# output at init (Karpathy's recipe: "regression with mean 50 -> initialise the final bias to 50").
MSE_OFFSET_STDS = 1.0
# Print the bias literally up to this many values; beyond, the hint gives the line that computes it.
MAX_LITERAL = 32


@dataclass(frozen=True)
class Params:
    """Parameters of last-layer-bias (`[tool.nncheck.probes.last-layer-bias]`)."""

    # The prior is estimated on the first half of the batches and the gain judged on the other half: judged on the
    # batches it was estimated from, the sampling noise of a prior over many classes looks like a gain.
    batches: int = param(
        8,
        fast=4,
        source=(
            "Measured on balanced 40-class MLP classifiers built for the measurement (8 batches of 32, 5 seeds): a "
            "prior estimated on the 8 batches and judged on them 'gains' +0.06..+0.09 nats (sampling noise); "
            "estimated on 4 and judged on the other 4, -0.11..-0.30. With 2 + 2 batches (fast) the last-layer-bias "
            "setups of checks/ still gain >= 0.35 nats / 99%, seeds 0-2."
        ),
    )
    prior_ratio: float = param(
        3.0,
        source=(
            'Karpathy, "A Recipe for Training Neural Networks" ("init well": a 1:10 imbalanced dataset -> set the '
            'output bias to the prior); Lin et al. 2017 (focal loss, §4.1 "prior" initialisation). 3 is a third of '
            "the recipe's 1:10: a prior with max p / min p = 3 is worth ~0.13 nats at init (its KL to uniform)."
        ),
    )
    fail_share: float = param(
        0.5,
        source=(
            "A fail means training is badly hurt: the prior removes half or more of an uninformed output's loss (1 - "
            "H(p) / log C for cross-entropy), i.e. an uninformed model starts above twice the best constant's loss, "
            "the ratio initial-loss fails on (Karpathy's 'verify loss @ init', cs231n). From the labels alone, "
            "independent of the init's spread: 90/5/5 classes (checks/llb_imbalanced_default_bias.py) 64%, 2% "
            "positives (checks/llb_bce_rare_positives.py) 86%, targets around 100 "
            "(checks/llb_regression_target_mean_100.py) 99.9%; 81/11/8 pixel classes "
            "(checks/real/unet_segmenter_default_bias.py, a moderate prior) 44%. Cost measured as steps lost (Adam "
            "1e-3 from the default bias until the held-out loss reaches that of the prior bias at init, seed 0): 87 "
            "steps and 0.94 nats at init for llb_imbalanced_default_bias.py, 56 steps and 0.53 nats for the U-Net."
        ),
    )
    fail_gain_nats: float = param(
        0.1,
        source=(
            "The least gain (nats) a fail needs besides fail_share, so that a tiny loss is not failed on a tiny gain. "
            "Measured, seeds 0-2, both budgets: checks/llb_imbalanced_default_bias.py and "
            "checks/llb_bce_rare_positives.py gain >= 0.35 nats; examples/imbalanced.py (bias already at log p) "
            "-0.013..+0.0003 nats."
        ),
    )
    warn_gain_nats: float = param(0.025, source="A quarter of fail_gain_nats: a prior worth building in.")
    cost_steps: int = param(
        100,
        fast=20,
        source=(
            "How far the cost is followed on the shared training trace (the user's optimizer from the default "
            "bias): the steps until its training loss falls by the gain. Reported only, never judged (the verdict "
            "rests on fail_share, a property of the labels). Measured with this rule, seed 0, full budget: 60 steps "
            "for checks/llb_imbalanced_default_bias.py (Adam 1e-3) and for checks/real/unet_segmenter_default_bias.py "
            "(Adam 1e-3); 100 covers both with room. Fast: 20, twice the trace the learning-rate probe's fast confirm "
            "run (10 steps) reads anyway, so that a fast run stays cheap; it then often says 'not after 20 steps'."
        ),
    )
    warn_gain_mse: float = param(
        0.125,
        source=(
            "A quarter of fail_share, as warn_gain_nats is of fail_gain_nats. Measured, seeds 0-2, both budgets: "
            "the correct MSE setups past the gate (checks/data_autoencoder_target_is_input_ok.py, "
            "tests/setups/conv_autoencoder.py) -33%..-1%."
        ),
    )


# ---------------------------------------------------------------------------------------------- the prior
@dataclass
class Prior:
    """What the output layer's bias should be, how it was derived, and how far it is from what a zero bias assumes
    (uniform classes, p = 0.5, mean 0)."""

    bias: torch.Tensor  # the ideal bias (one value per output unit; NaN: a class never seen, left as it is)
    summary: dict[str, Any]  # numbers for `measured`
    formula: str  # how the values are computed, for the hint
    ratio: torch.Tensor | None = None  # CE: max p / min p; BCE: the odds of each unit (max(p, 1-p) / min(p, 1-p))
    z: torch.Tensor | None = None  # evidence against uniform / p = 0.5, like ``ratio``
    offset: float | None = None  # MSE: |mean(y) - mean(output)| / std(y), largest over the units


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


def ce_prior(c: int, ys: list[Any], seen: torch.Tensor | None) -> Prior:
    """log p over the classes that occur as targets (``seen``, from every batch read). Classes that never occur
    (BOS / PAD tokens, a reserved class) are left out of the prior, its ratio, its test and the ideal bias (NaN:
    left as is); with every class seen the bias is log p, else log(p * K) over the K seen classes (uniform -> 0, the
    scale of a default-initialised bias, so the unseen classes keep their place)."""
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
    return Prior(
        bias=bias,
        summary={
            "classes": c,
            "classes_seen": int(keep.sum()),
            "labels": int(labels.numel()),
            "prior_max_min_ratio": ratio,
            "nonuniform_z": z,
            "prior": full_p.tolist(),
        },
        formula="log p, p the class frequencies" + ("" if bool(keep.all()) else " of the classes that occur"),
        ratio=torch.tensor([ratio], dtype=torch.float64),
        z=torch.tensor([z], dtype=torch.float64),
    )


def bce_prior(outs: list[torch.Tensor], ys: list[Any], units: int) -> Prior:
    y = torch.cat([_per_unit(t, units, o) for t, o in zip(ys, outs)]).double()
    p = y.mean(dim=0).clamp(BCE_CLAMP, 1 - BCE_CLAMP)
    odds = torch.maximum(p / (1 - p), (1 - p) / p)
    return Prior(
        bias=(p / (1 - p)).log().cpu(),
        summary={"positive_rate": p.tolist(), "max_odds": float(odds.max())},
        formula="log(p / (1 - p)), p the rate of positive labels",
        ratio=odds,
        z=(y.mean(dim=0) - 0.5).abs() / (0.5 / math.sqrt(y.shape[0])),  # binomial z-test against p = 0.5
    )


def mse_prior(outs: list[torch.Tensor], ys: list[Any], units: int) -> Prior:
    o = torch.cat([_per_unit(t, units, t) for t in outs]).double()
    y = torch.cat([_per_unit(t, units, o_) for t, o_ in zip(ys, outs)]).double()
    mean, std, out_mean = y.mean(dim=0), y.std(dim=0, unbiased=False), o.mean(dim=0)
    offset = float(((mean - out_mean).abs() / std.clamp_min(1e-12)).max())
    return Prior(
        bias=mean.cpu(),
        summary={
            "target_mean": mean.tolist(),
            "target_std": std.tolist(),
            "output_mean": out_mean.tolist(),
            "offset_in_stds": offset,
        },
        formula="the target mean",
        offset=offset,
    )


def prior_of(
    head: Head, outs: list[torch.Tensor], ys: list[Any], units: int, seen: torch.Tensor | None = None
) -> Prior:
    if head.kind == "ce":
        return ce_prior(head.num_classes(outs[0]) or units, ys, seen)
    if head.kind == "bce":
        return bce_prior(outs, ys, units)
    return mse_prior(outs, ys, units)


# ---------------------------------------------------------------------------------------------- measure
def _split(ctx: Context, batches: list[Any]) -> tuple[list[Any], list[Any]]:
    """Estimation and judging batches: the first and second halves (of the samples, with a single batch)."""
    if len(batches) >= 2:
        half = len(batches) // 2
        return batches[:half], batches[half : 2 * half]
    n = ctx.batch_size(batches[0])
    if n < 4:
        raise ProbeSkip(f"a single batch of {n} samples is too small to estimate a label prior and judge it")
    return [ctx.slice_batch(batches[0], n // 2)], [ctx.slice_batch(batches[0], n - n // 2, start=n // 2)]


def _outputs(
    ctx: Context,
    model: nn.Module | None,
    batches: list[Any],
    head: Head,
    bias: torch.Tensor | None = None,
    first: int = 0,
) -> tuple[list[torch.Tensor], list[Any], float]:
    """The head's outputs, targets and mean loss of ``model`` on ``batches`` (no gradient); ``model`` None: the model
    at init, read from the cached batches ``first``.. (``ctx.init_forward``); ``bias``: added to the head's output
    along its units (the bias a bias-less output layer would have). Batch k's forward runs with the random
    generators seeded as ``ctx.init_forward`` seeds cached batch ``first + k`` (and put back after): a model or
    forward that samples (a VAE's reparameterisation, a diffusion step's noise) draws the same noise for the loss
    at init and with the prior, so that their difference is the bias's and not the sampling's (a summed VAE loss
    of ~1500 nats moved by 0.4-10 nats between two draws, checks/real/conv_vae.py, fast, seeds 0-2)."""
    outs, ys, total = [], [], 0.0
    with torch.no_grad(), preserved_rngs():
        for k, b in enumerate(batches):
            if model is None:
                out, y = ctx.init_forward(first + k)
            else:
                ctx.seed_all(INIT_SEED_OFFSET + first + k)
                out, y = ctx.forward(model, b)
            t, y_t = head.tensor(out), head.target(y)
            if bias is not None:
                t = add_per_unit(t, bias, head)
            total += float(head.loss(t, y_t))
            outs.append(t)
            ys.append(y_t)
    return outs, ys, total / len(batches)


def add_per_unit(t: torch.Tensor, bias: torch.Tensor, head: Head) -> torch.Tensor:
    """``t`` plus one value per output unit (the class dim of a ``(B, C, H, W)`` output, else the last dim)."""
    b = torch.nan_to_num(bias.to(t.device, t.dtype), nan=0.0)
    if t.dim() > 2 and not classes_last(head.loss) and t.shape[1] == b.numel():
        return t + b.reshape(1, -1, *([1] * (t.dim() - 2)))
    return t + b.reshape(*([1] * (t.dim() - 1)), -1) if b.numel() > 1 else t + b.reshape(())


def _bias_units(head: Head, layer: nn.Module, out: torch.Tensor) -> int:
    """How many output units the bias (or a bias, for a bias-less layer) must cover."""
    bias = getattr(layer, "bias", None)
    if isinstance(bias, torch.Tensor):
        return int(bias.numel())
    if head.kind == "ce":
        return head.num_classes(out) or int(out.shape[-1])
    return int(out.shape[-1]) if out.dim() > 1 else 1


def _tied_to(model: nn.Module, layer: nn.Module) -> str | None:
    """Qualified name of another module sharing ``layer``'s weight (weight tying), or None."""
    weight = getattr(layer, "weight", None)
    if not isinstance(weight, torch.Tensor):
        return None
    for n, m in model.named_modules():
        if m is not layer and getattr(m, "weight", None) is weight:
            return n
    return None


@dataclass
class Measurement:
    kind: str  # "ce" | "bce" | "mse"
    layer: str  # the output layer's qualified name ("" for the model itself)
    layer_path: str  # as written in code: model.head
    prior: Prior  # from every batch read: the gate, the hint, the measured values
    estimated: Prior  # from the estimation batches only: the bias written in to measure the gain
    batches: tuple[int, int]  # estimation, judging
    strong: bool  # the prior is far from what a zero bias assumes (``strong_prior``)
    has_bias: bool = True  # the output layer has a bias tensor
    tied: str | None = None  # the module whose weight a bias-less output layer shares, as written in code
    loss_at_init: float = 0.0  # on the judging batches
    loss_with_prior: float | None = None  # the same, with the estimated prior written into the bias
    gain: float | None = None  # nats for CE / BCE; a share of the loss for MSE
    head: str = "output"  # the output tensor judged (``output[0]``, ``output.logits`` for a multi-output model)
    # what the prior itself is worth, whatever the init: the share of an uninformed (all-zero) output's loss that the
    # best constant output (the prior, as a bias) removes, on the judging batches; 1 - H(p) / log C for cross-entropy
    prior_share: float | None = None
    steps_lost: int | None = None  # steps of the user's optimizer until the loss falls by the gain (``steps_lost``)
    steps_followed: int = 0  # how far the trace was followed for it (0: not measured)

    @property
    def where(self) -> str:
        return f"the output layer `{self.layer_path}`" if self.layer else "the model's output layer"

    @property
    def share(self) -> float | None:
        """The gain as a share of the loss at init (the MSE gain already is one)."""
        if self.gain is None:
            return None
        if self.kind == "mse":
            return self.gain
        return self.gain / self.loss_at_init if self.loss_at_init > 0 else 0.0


def prior_share(head: Head, outs: list[torch.Tensor], ys: list[Any], bias: torch.Tensor) -> float:
    """1 - L(a constant output at the prior) / L(an all-zero output) on ``outs`` / ``ys`` (the head's loss): what the
    prior is worth, independent of the init's own spread of outputs."""
    zero = const = 0.0
    with torch.no_grad():
        for t, y in zip(outs, ys):
            z = torch.zeros_like(t)
            zero += float(head.loss(z, y))
            const += float(head.loss(add_per_unit(z, bias, head), y))
    return 1.0 - const / zero if zero > 0 else 0.0


def measure(ctx: Context, p: Params, head: Head) -> Measurement:
    """The prior of the head's labels; when it is strong, the loss on the judging batches with the bias at init and
    with the prior (estimated on the other batches) written in (added to the output, for a layer without a bias)."""
    batches = ctx.batches(p.batches)
    est, held_out = _split(ctx, batches)
    model = without_dropout(ctx.fresh_model(train=True))
    found = ctx.head_layer(model, batches[0], head)
    if found is None:
        raise ProbeSkip("the model has no parameterised layer")
    name, layer = found
    cached = len(batches) >= 2  # est and held_out are the cached batches 0.. and half..: read them at init
    outs, ys, _ = _outputs(ctx, None if cached else model, est, head)
    held_outs, held_ys, l_cur = _outputs(ctx, None if cached else model, held_out, head, first=len(est))
    if not all(isinstance(y, torch.Tensor) for y in ys + held_ys):
        raise ProbeSkip("the targets are not tensors")
    units = _bias_units(head, layer, outs[0])
    seen = seen_classes(ys + held_ys, head.num_classes(outs[0]) or units) if head.kind == "ce" else None
    prior = prior_of(head, outs + held_outs, ys + held_ys, units, seen)
    m = Measurement(
        kind=head.kind,
        layer=name,
        layer_path=code_path(name, model),
        prior=prior,
        estimated=prior_of(head, outs, ys, units, seen),
        batches=(len(est), len(held_out)),
        strong=strong_prior(prior, p),
        loss_at_init=l_cur,
        head=head.name,
    )
    if not m.strong:
        return m
    # from every batch read: a property of the labels (an entropy), not a prediction judged on unseen batches
    m.prior_share = prior_share(head, outs + held_outs, ys + held_ys, m.prior.bias)
    if not hasattr(layer, "bias"):
        raise ProbeSkip(f"cannot tell which parameter of {m.where} ({type(layer).__name__}) is its output bias")
    bias = getattr(layer, "bias", None)
    if not isinstance(bias, torch.Tensor):
        tied = _tied_to(model, layer)
        m.has_bias, m.tied = False, None if tied is None else code_path(tied, model)
        init = None if cached else model
        _, _, m.loss_with_prior = _outputs(ctx, init, held_out, head, bias=m.estimated.bias, first=len(est))
    else:
        if bias.numel() != prior.bias.numel():
            raise ProbeSkip(f"the bias of {m.where} has {bias.numel()} values for {prior.bias.numel()} output units")
        copy = without_dropout(ctx.fresh_model(train=True))
        with torch.no_grad():
            new_bias = dict(copy.named_modules())[name].bias
            ideal = m.estimated.bias.to(new_bias.device, new_bias.dtype).reshape(new_bias.shape)
            new_bias.copy_(torch.where(torch.isnan(ideal), new_bias, ideal))  # unseen classes: left as they are
        _, _, m.loss_with_prior = _outputs(ctx, copy, held_out, head, first=len(est))
    m.gain = l_cur - m.loss_with_prior
    if m.gain > (p.warn_gain_mse * l_cur if m.kind == "mse" else p.warn_gain_nats):
        try:  # reported only: a trace that cannot run leaves the verdict as it is
            m.steps_lost, m.steps_followed = steps_lost(ctx, head.weight * m.gain, p.cost_steps)
        except Exception:
            m.steps_lost, m.steps_followed = None, 0
    if m.kind == "mse":
        m.gain = m.gain / l_cur if l_cur > 0 else 0.0
    return m


def steps_lost(ctx: Context, drop: float, cap: int) -> tuple[int | None, int]:
    """What the missing prior costs in training: the steps of the user's optimizer, on the shared training trace
    (from the default bias), until the mean training loss has fallen by ``drop`` (the gain the prior gives at step
    0, weighted as the head's term is in the total loss), and the steps followed; (None, steps followed) when it
    has not within ``cap`` steps, or the trace went non-finite."""
    every = TRAIN_EVAL_EVERY
    start = ctx.trace_checkpoint(0)
    if start is None or not start.train:
        return None, 0
    target = start.train_mean - drop
    for step in range(every, max(cap, every) + 1, every):
        cp = ctx.trace_checkpoint(step)
        if cp is None or not cp.train:
            return None, step - every
        if cp.train_mean <= target:
            return step, step
    return None, max(cap, every)


# ---------------------------------------------------------------------------------------------- judge
def strong_prior(prior: Prior, p: Params) -> bool:
    """The gate: a prior far from what a zero bias assumes. CE: max p / min p >= prior_ratio and a chi-square test
    rejecting uniform; BCE: the same for the odds of some unit (binomial test); MSE: the target mean more than
    MSE_OFFSET_STDS target stds from the mean output."""
    if prior.offset is not None:
        return prior.offset > MSE_OFFSET_STDS
    assert prior.ratio is not None and prior.z is not None
    return bool(((prior.ratio >= p.prior_ratio) & (prior.z > PRIOR_SIGNIFICANCE_Z)).any())


def judge(m: Measurement, p: Params) -> Findings:
    """fail: the prior bias would halve the loss at init (``fail_share``; for CE / BCE also at least
    ``fail_gain_nats``); warn: a gain above ``warn_gain_nats`` (MSE: ``warn_gain_mse`` of the loss). An output layer
    without a bias (weight tying, a bias-free architecture by design): a warning where a bias would fail, a note where
    it would warn."""
    warn_at = p.warn_gain_mse if m.kind == "mse" else p.warn_gain_nats
    expected: dict[str, Any] = {"gain_below": warn_at, "fail_share_of_loss": p.fail_share}
    if m.kind != "mse":
        expected["fail_gain_nats_min"] = p.fail_gain_nats
    if m.kind == "ce":
        expected["prior_max_min_ratio_below"] = p.prior_ratio
    f = Findings(measured=measured_of(m), expected=expected, notes=unseen_note(m.prior))
    if not m.strong or m.gain is None:
        return f
    share = m.share or 0.0
    prior = m.prior_share if m.prior_share is not None else share
    badly = prior >= p.fail_share and (m.gain >= p.fail_gain_nats if m.kind != "mse" else m.gain > warn_at)
    if not m.has_bias:
        tied = f"; its weight is tied to `{m.tied}`" if m.tied is not None else ""
        text = (
            f"{m.where} has no bias while the labels have a strong prior{tied}: a bias at the prior "
            f"({m.prior.formula}) would lower the initial loss from {m.loss_at_init:.4g} to {m.loss_with_prior:.4g} "
            f"({_gain_text(m.kind, m.gain)}, {100 * share:.0f}% of it){cost_text(m)}"
        )
        hint = tied_hint(m) if m.tied is not None else no_bias_hint(m)
        if badly:
            f.warn(text, hint)
        elif m.gain > warn_at:
            f.note(
                text + ": a bias-free output layer is a common design (weight tying; PaLM / LLaMA use no biases) and "
                "the model learns the prior in its first steps"
            )
    elif badly:
        f.fail(gain_message(m), prior_hint(m))
    elif m.gain > warn_at:
        f.warn(gain_message(m), prior_hint(m))
    return f


# ---------------------------------------------------------------------------------------------- word
BALANCED = {
    "ce": "the classes are close to balanced",
    "bce": "the labels are close to 50/50",
    "mse": "the outputs at init are within one std of the target mean",
}


def _gain_text(kind: str, gain: float) -> str:
    return f"{100 * gain:.0f}% of the loss" if kind == "mse" else f"{gain:.3f} nats"


def _literal(values: torch.Tensor) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values.tolist()) + "]"


def paste_line(m: Measurement) -> str:
    """The exact line to paste after the model is built (classes never seen as targets are left as they are)."""
    ref = f"{m.layer_path}.bias"
    values = m.prior.bias
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


def gain_message(m: Measurement) -> str:
    assert m.gain is not None and m.loss_with_prior is not None
    worth = (
        f"; the prior removes {100 * m.prior_share:.0f}% of an uninformed output's loss"
        if m.prior_share is not None
        else ""
    )
    return (
        f"{m.where} with its bias at the prior ({m.estimated.formula}) would lower the initial loss from "
        f"{m.loss_at_init:.4g} to {m.loss_with_prior:.4g} ({_cost_at_init(m.kind, m.gain)}, on batches the prior "
        f"was not estimated from{worth}){cost_text(m)}"
    )


def _cost_at_init(kind: str, gain: float) -> str:
    if kind == "mse":
        return f"{100 * gain:.0f}% of the loss at init"
    return f"{gain:.3f} nats at init above the prior-initialised loss"


def cost_text(m: Measurement) -> str:
    """What the gain costs in training steps, from the shared trace."""
    if m.steps_lost is not None:
        return (
            f"; from the default bias your optimizer needs {m.steps_lost} steps to lower the training loss by as "
            "much (the 'hockey stick' at the start of a training curve)"
        )
    if m.steps_followed:
        return (
            f"; from the default bias your optimizer has not lowered the training loss by as much after "
            f"{m.steps_followed} steps"
        )
    return ""


def prior_hint(m: Measurement) -> str:
    hint = (
        f"Start the bias of {m.where} at the prior, right after building the model: `{paste_line(m)}` "
        f"(values from {sum(m.batches)} batches; compute them on the whole training set)."
    )
    if m.kind == "mse":
        hint += " Or standardise the targets ((y - mean) / std) and undo it at prediction time."
    return hint


def no_bias_hint(m: Measurement) -> str:
    return (
        f"Give {m.where} a bias (`bias=True` where model() builds it) and start it at the prior: `{paste_line(m)}`. "
        "Without a bias the network must learn the prior through its weights, which takes many steps."
    )


def tied_hint(m: Measurement) -> str:
    v = m.prior.bias.numel()
    return (
        f"{m.where} shares its weight with `{m.tied}` (weight tying, as GPT-2 / nanoGPT), the usual reason it "
        "has no bias; tying only concerns the weight, so add a separate bias on the module your `model()` returns: "
        f"`self.head_bias = nn.Parameter(torch.zeros({v}))` in __init__, "
        f"`logits = self.{m.layer.split('.')[-1]}(h) + self.head_bias` in forward, then start it at the prior "
        f"(values: {m.prior.formula}; `counts = torch.bincount(train_targets.flatten(), minlength={v}) + 0.5; "
        "with torch.no_grad(): model.head_bias.copy_((counts / counts.sum()).log())`). Without a bias the network "
        "must learn the token frequencies through its weights, which takes many steps."
    )


def unseen_note(prior: Prior) -> list[str]:
    unseen = torch.nonzero(torch.isnan(prior.bias)).reshape(-1).tolist()
    if not unseen:
        return []
    shown = ", ".join(str(i) for i in unseen[:10]) + (", ..." if len(unseen) > 10 else "")
    return [
        f"classes {shown} never occur as targets in the batches read ({len(unseen)} of {prior.bias.numel()}; e.g. "
        "BOS / PAD tokens): the prior, its ratio and the ideal bias are computed over the other classes, and their "
        "bias is left as it is"
    ]


def measured_of(m: Measurement) -> dict[str, Any]:
    summary = {k: v for k, v in m.prior.summary.items() if not isinstance(v, list) or len(v) <= MAX_LITERAL}
    measured: dict[str, Any] = {"output_layer": m.layer_path, **summary, "batches": list(m.batches)}
    if m.gain is None:
        return measured
    measured = {
        "loss_at_init": m.loss_at_init,
        "loss_with_prior_bias": m.loss_with_prior,
        "gain": m.gain,
        "gain_share_of_loss": m.share,
        "prior_share_of_uninformed_loss": m.prior_share,
        "steps_lost": m.steps_lost,
        "steps_followed": m.steps_followed,
        **measured,
    }
    if m.prior.bias.numel() <= MAX_LITERAL:
        measured["ideal_bias"] = [None if math.isnan(v) else v for v in m.prior.bias.tolist()]
    return measured


def passed_message(m: Measurement) -> str:
    if m.gain is None:
        return f"{BALANCED[m.kind]}: no prior to build into the bias of {m.where}"
    if not m.has_bias:
        return (
            f"{m.where} has no bias; one at the prior would change the initial loss by {_gain_text(m.kind, m.gain)} "
            f"({m.loss_at_init:.4g} -> {m.loss_with_prior:.4g})"
        )
    return (
        f"the bias of {m.where} is already close to the prior: writing it in changes the initial loss by "
        f"{_gain_text(m.kind, m.gain)} ({m.loss_at_init:.4g} -> {m.loss_with_prior:.4g})"
    )


@probe("last-layer-bias", title="Output bias at the label prior", order=20, params=Params)
def last_layer_bias(ctx: Context, p: Params) -> Result:
    """Checks that the output layer's bias starts at the label prior when the prior is far from uniform.

    What it does:
        Finds the output layer (the last parameterised module whose output has the model output's shape;
        `(B, C)`, `(B, T, C)` and `(B, C, H, W)` outputs alike) and derives the bias an uninformed model
        should start with from the labels: for cross-entropy log p (p the class frequencies), for
        BCE-with-logits log(p / (1 - p)) per output unit, for MSE the target mean. The prior is estimated
        on the first half of the batches read ({batches}) and the gain judged on the other half: the loss of
        the model at init versus the loss of a copy with that bias written in. Judging on other batches keeps the
        sampling noise of the prior (10+ classes, a vocabulary) from looking like a gain. When the gain is worth a
        warning, its cost in training is read from the shared training trace (the user's optimizer from the
        default bias): the steps until the training loss has fallen by as much (followed up to {cost_steps}
        steps; reported, never judged).
        Classes that never occur as targets in the batches read (BOS / PAD tokens, reserved ids) are left out of
        the prior, its ratio, the gain and the ideal bias (their bias is left as it is; a note names them).

    Why is this bad?
        With a prior far from uniform (90/5/5 classes, 2% positives, targets around 100), a zero-ish bias
        makes the model start far above the best constant prediction: the first hundreds of steps only learn
        the class frequencies / the target mean, the loss curve is a "hockey stick", and large early gradients
        disturb the rest of the network. (Karpathy's recipe: "init well"; focal loss, Lin et al. 2017, §4.1.)

    Thresholds:
        applies when max p / min p >= {prior_ratio} for cross-entropy (the odds of a BCE unit likewise) and the
        counts reject a uniform prior beyond sampling noise (chi-square / binomial test, one-sided p < 0.001), or
        when |mean(y) - mean(output)| > std(y) for MSE. fail when training is badly hurt: the bias would lower
        the held-out loss by a share {fail_share} of it or more (the loss starts above twice the prior's), and
        for CE / BCE by at least {fail_gain_nats}; warn when it lowers it by more than {warn_gain_nats} (MSE:
        a share {warn_gain_mse}). An output layer without a bias (weight tying, bias-free architectures such as
        LLaMA): the gain is measured by adding the prior to the output; warn where a bias would fail (the hint
        explains weight tying and how to add a bias), a note where it would warn.
        Multi-output models: each head whose loss term is cross-entropy, BCE-with-logits or MSE is judged on
        its own (the logits of a Hugging Face output, the recognised terms of a multi-task loss).

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
    heads = ctx.heads()
    known = [h for h in heads if h.kind in KINDS]
    if not known:
        if not heads:
            raise ProbeSkip(no_heads_reason(ctx))
        kinds = ", ".join(f"{KIND_NAMES.get(h.kind, ctx.loss_name or h.kind)} on {h.name}" for h in heads)
        raise ProbeSkip(f"the ideal bias is known for cross-entropy, BCE-with-logits and MSE; the loss here is {kinds}")
    ms = [measure(ctx, p, h) for h in known]
    if len(ms) == 1 and ms[0].head == "output":
        return judge(ms[0], p).result(passed_message(ms[0]))
    f = Findings(measured={"heads": {}}, expected={"heads": {}})
    for m in ms:
        one = judge(m, p)
        f.measured["heads"][m.head] = one.measured
        f.expected["heads"][m.head] = one.expected
        f.notes += [f"{m.head}: {n}" for n in one.notes]
        for item in one.items:
            f.add(item.status, f"{m.head} ({KIND_NAMES[m.kind]}): {item.message}", item.hint)
    others = [h.name for h in heads if h.kind not in KINDS]
    if others:
        f.note(f"not judged (no known ideal bias for their loss): {', '.join(others)}")
    return f.result("; ".join(f"{m.head}: {passed_message(m)}" for m in ms))


KINDS = ("ce", "bce", "mse")
KIND_NAMES = {"ce": "cross-entropy", "bce": "BCE-with-logits", "mse": "MSE", "custom": "a custom loss"}


def no_heads_reason(ctx: Context) -> str:
    """Why no head of the model could be judged."""
    if isinstance(ctx.loss_fn, ModelOwnLoss):
        return (
            "the model computes its own loss (`output.loss`) and no standard loss of `output.logits` reproduces it: "
            'name the head in the setup: `nncheck = {"heads": {"logits": <its loss>}}`'
        )
    return (
        "the model output is not one tensor and no term of the loss could be matched to one output tensor (a torch "
        'loss function of one output and one target): name the heads, e.g. `nncheck = {"heads": {0: '
        "nn.CrossEntropyLoss(), 1: nn.MSELoss()}}`"
    )
