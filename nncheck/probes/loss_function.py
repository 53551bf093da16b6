"""loss-function: the loss gets what it expects (logits, probabilities, labels) and its gradient reaches the output."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nncheck.kit import Context, Finding, Findings, ProbeSkip, Result, Status, code_path, param, probe
from nncheck.losses import Head, Recorder, bound
from nncheck.tensors import first_tensor, map_tensors

# Size of the perturbation of the other samples' outputs, in units of the output's standard deviation.
ISOLATION_NOISE = 0.5

LOSSES = {
    "cross_entropy": "cross-entropy",
    "nll_loss": "NLL",
    "binary_cross_entropy_with_logits": "BCE-with-logits",
    "binary_cross_entropy": "BCE",
    "mse_loss": "MSE",
}
SIGMOID_OPS = {"sigmoid", "expit", "hardsigmoid"}
# Modules that squash the output (a model ending in one of them returns probabilities, not logits).
SQUASH_MODULES = (nn.Softmax, nn.LogSoftmax, nn.Softmax2d, nn.Sigmoid, nn.Hardsigmoid)
# Ops that make raw scores (logits): a BCE input made by one of these never went through a sigmoid.
AFFINE_OPS = {"linear", "conv1d", "conv2d", "conv3d", "matmul", "__matmul__", "mm", "bmm", "addmm", "einsum", "baddbmm"}


@dataclass(frozen=True)
class Params:
    """Parameters of loss-function (`[tool.nncheck.probes.loss-function]`)."""

    batches: int = param(
        4,
        fast=1,
        source="A few batches, so that a loss input which leaves its range only on a later batch is seen (BCELoss "
        "raises there); the fast budget reads the first batch only.",
    )
    simplex_tol: float = param(
        0.001,
        source="Measured on checks/, examples/ and tests/setups/ (seeds 0-2): float32 softmax rows sum to 1 within "
        "1.4e-7 (checks/lf_softmax_before_cross_entropy.py, checks/ob_softmax_before_cross_entropy.py) and "
        "LogSoftmax rows have |logsumexp| <= 2e-7 (checks/lf_log_softmax_nll_ok.py); every batch of raw logits has "
        "a row with |row sum - 1| >= 0.028 and one with |logsumexp| >= 0.31.",
    )
    nll_logprob_tol: float = param(
        0.1,
        source="Max |logsumexp| of an NLL input row, measured (seeds 0-2): <= 2e-7 for LogSoftmax outputs "
        "(checks/lf_log_softmax_nll_ok.py), 1.97 for raw scores (checks/lf_nll_on_raw_logits.py).",
    )
    sigmoid_min_spread: float = param(
        0.01,
        source="BCE-with-logits inputs, measured (seeds 0-2): a sigmoid's outputs span [0.30, 0.70] "
        "(checks/lf_sigmoid_before_bce_with_logits.py); raw logits of a fresh model straddle 0 on every other "
        "setup (examples/multilabel.py, checks/llb_bce_rare_positives.py, tests/setups/vae.py). A narrower range "
        "is a near-constant output that tells nothing.",
    )
    max_label_values: int = param(
        100,
        source="Class label sets up to CIFAR-100's 100 classes; integral targets with more distinct values read as "
        "counts or ratings (checks/lf_mse_on_class_labels.py has 4).",
    )
    isolation: bool = param(
        True,
        source="On: every loss of checks/, examples/ and tests/setups/ is a mean or sum of per-sample terms. "
        "Contrastive, in-batch-negative and ranking losses couple the samples on purpose: turn it off for them.",
    )
    # A loss that is a mean (or sum) of per-sample terms has dLoss/d output_i independent of the other samples'
    # outputs; a loss that mixes the batch (log_softmax(dim=0) in a hand-written cross-entropy) does not.
    term_ratio: float = param(
        100.0,
        source="Two orders of magnitude between the weighted terms of a multi-task loss at init: the sum's gradient is "
        "then the largest term's and the others barely train (Kendall, Gal & Cipolla 2018, 'Multi-Task Learning Using "
        "Uncertainty to Weigh Losses', §1 and Fig. 1: performance depends strongly on the relative weights; Chen et "
        "al. 2018, GradNorm). Measured: checks/real/two_head_classifier_regressor.py 1.4-2.1x, "
        "checks/real/two_head_unscaled_regression.py ~5e5x (seeds 0-2).",
    )
    isolation_tol: float = param(
        0.0001,
        source="Relative change of sample 0's output gradient when the other outputs move by 0.5 x their std, "
        "measured (seeds 0-2): exactly 0 on every other setup of checks/, examples/ and tests/setups/ where it is "
        "measurable (CE, BCE, MSE, NLL, Poisson, VAE, LM losses), 0.017-0.030 on checks/lf_softmax_over_batch.py; "
        "float32 rounding (~1e-7) stays three decades below.",
    )


# ---------------------------------------------------------------------------------------------- wording
HINT_LOSS_ERROR = (
    "Fix the loss input: see the error above (BCELoss needs values in [0, 1]: use `nn.BCEWithLogitsLoss()` on raw "
    "outputs)."
)
HINT_DOUBLE_SOFTMAX = (
    "Remove {who}: CrossEntropyLoss applies log_softmax itself. Return raw logits (`return self.head(h)`) and apply "
    "`torch.softmax(logits, dim=1)` only at inference."
)
NOTE_CE_ON_LOG_PROBS = (
    "cross-entropy receives log-probabilities (log_softmax outputs): harmless, since log_softmax is idempotent, but "
    "redundant: drop the log_softmax or use `nn.NLLLoss()`."
)
HINT_MULTI_HOT = (
    "Targets are multi-hot (several labels per sample): use BCEWithLogitsLoss, one sigmoid per label: `loss = "
    "nn.BCEWithLogitsLoss()` on the raw logits (the same output layer, one unit per label), and threshold "
    "`torch.sigmoid(logits) > 0.5` at inference. CrossEntropyLoss is for one class per sample (an index, or a "
    "distribution summing to 1)."
)
HINT_SOFT_TARGETS = (
    "CrossEntropyLoss reads float targets as a distribution over the classes: normalise each row (`y / y.sum(1, "
    "keepdim=True)`) for soft labels, pass class indices (`y.argmax(1)`, integer dtype) for one class per sample, or "
    "use `nn.BCEWithLogitsLoss()` when several labels can be on at once."
)
HINT_NLL = (
    "NLLLoss expects log-probabilities: end the model with `nn.LogSoftmax(dim=1)` (or `torch.log_softmax(logits, "
    "dim=1)`), or use `nn.CrossEntropyLoss()` on raw logits."
)
HINT_DOUBLE_SIGMOID = (
    "Remove {who}: BCEWithLogitsLoss applies the sigmoid itself. Return raw logits and apply `torch.sigmoid(logits)` "
    "only at inference."
)
HINT_BCE = (
    "BCELoss expects probabilities: train on raw logits with `nn.BCEWithLogitsLoss()` (numerically stable), or end "
    "the model with `nn.Sigmoid()`."
)
HINT_MSE_SHAPES = (
    "Give the output and the target the same shape: `loss(out.squeeze(-1), y)` or `loss(out, y.view_as(out))`."
)
HINT_MSE_LABELS = (
    "For class labels use `nn.CrossEntropyLoss()` with one output per class (or `nn.BCEWithLogitsLoss()` for 0/1 "
    "labels); MSE on class indices orders the classes. If the targets are counts or ratings, MSE is fine and this "
    "warning does not apply."
)
HINT_NONFINITE = "Find where the NaN/inf comes from with `{rerun}`."
HINT_NO_GRADIENT = (
    "Compute the loss from the model output with differentiable ops only: no `.detach()`, `.item()`, `.numpy()`, "
    "`.data`, `round()`, `argmax()` or comparisons between the output and the loss."
)
HINT_MIXES_BATCH = (
    "Look for a reduction over the batch dim inside the loss: `log_softmax(logits, dim=0)` / `softmax(..., dim=0)` "
    "instead of `dim=1` (or `dim=-1`), a normalisation by batch statistics (`out / out.sum(0)`, `out - out.mean(0)`), "
    "a `sum(0)` before the per-sample term. If the loss couples samples on purpose (contrastive, in-batch negatives, "
    "ranking), set `isolation = false` under [tool.nncheck.probes.loss-function] in pyproject.toml."
)
NOTE_REDUCTION_SUM = (
    "{losses} uses reduction='sum': the gradient grows with the batch size, so the learning rate must shrink when "
    "the batch grows (or use reduction='mean')."
)


def _producer(origin: str | None, squashing_module: str | None, default: str) -> str:
    """How a hint names what squashed the output: the module, the functional call, or ``default``."""
    if squashing_module:
        return f"`{squashing_module}`"
    if origin:
        return f"the `{origin}` call on the output"
    return default


def _also_warnings(f: Findings) -> None:
    """Mark the warnings of a failing result as such, so that "this warning" in their hints reads right."""
    if f.status is Status.FAIL:
        f.items = [
            Finding(i.status, f"also (warning) {i.message}", f"Also (warning): {i.hint}")
            if i.status is Status.WARN
            else i
            for i in f.items
        ]


# ---------------------------------------------------------------------------------------------- measure
def class_rows(x: torch.Tensor) -> torch.Tensor:
    """A cross-entropy / NLL input as (N, C) rows (the class dim is 1, or 0 for an unbatched input)."""
    if x.dim() == 1:
        return x[None]
    return x.movedim(1, -1).reshape(-1, x.shape[1])


@dataclass
class LossCall:
    """Numbers about one call of a torch loss function (None: not measured for this loss or input)."""

    reduction: str = "mean"
    origin: str | None = None  # the op that produced the input, looking through reshapes and casts
    lo: float | None = None  # input min / max
    hi: float | None = None
    row_sum_err: float | None = None  # CE / NLL: max |row sum - 1| over the class rows
    lse_err: float | None = None  # CE / NLL: max |logsumexp| of a row
    shapes: list[list[int]] | None = None  # MSE: [input shape, target shape]
    # CE with float targets of the input's shape (class probabilities): 0/1 rows with several 1s (multi-hot), and
    # the largest |row sum - 1|
    multi_hot_rows: int | None = None
    target_rows: int | None = None
    target_row_sum_err: float | None = None
    labels: list[int] | None = None  # MSE: the target's distinct values when all integral (at most max_labels + 1)


def loss_call(name: str, args: dict[str, Any], rec: Recorder, max_labels: int) -> LossCall:
    """Numbers about one loss call's input and target."""
    x, y = args.get("input"), args.get("target")
    c = LossCall(reduction=args.get("reduction", "mean"))
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        return c
    x = x.detach().double()
    c.origin = rec.origin(args["input"])
    c.lo, c.hi = float(x.min()), float(x.max())
    if name in ("cross_entropy", "nll_loss") and x.dim() >= 1 and (x.dim() == 1 or x.shape[1] >= 2):
        rows = class_rows(x)
        c.row_sum_err = float((rows.sum(-1) - 1).abs().max())
        c.lse_err = float(rows.logsumexp(-1).abs().max())
    if (
        name == "cross_entropy"
        and isinstance(y, torch.Tensor)
        and y.is_floating_point()
        and y.shape == args["input"].shape
        and y.dim() >= 2
    ):
        rows = class_rows(y.detach().double())
        binary = bool(((rows == 0) | (rows == 1)).all())
        c.target_rows = int(rows.shape[0])
        c.multi_hot_rows = int((rows.sum(-1) > 1).sum()) if binary else 0
        c.target_row_sum_err = float((rows.sum(-1) - 1).abs().max())
    if name == "mse_loss" and isinstance(y, torch.Tensor):
        c.shapes = [list(x.shape), list(y.shape)]
        yd = y.detach().double()
        integral = bool((yd == yd.round()).all()) and yd.numel() > 0
        c.labels = sorted({int(v) for v in yd.unique()[: max_labels + 1].tolist()}) if integral else None
    return c


@dataclass
class Measurement:
    """What the loss functions received over the probed batches, and how the loss's gradient behaves."""

    loss: str
    loss_kind: str
    rerun_numerics: str  # the command that runs the numerics and data probes on this setup
    calls: dict[str, list[LossCall]] = field(default_factory=dict)  # torch loss function name -> its calls
    errors: list[str] = field(default_factory=list)  # the loss raised
    batches: int = 0
    zero_grad_batches: int = 0
    nonfinite_grad_batches: int = 0  # NaN/inf in dLoss/d output: a numerics problem, not a missing gradient
    no_grad_path: bool = False  # the loss does not require grad at all
    squashing_module: str | None = None  # `model[3]` when a Softmax / Sigmoid module produces the output
    isolation_measured: bool = False
    isolation_change: float | None = None  # None: could not be measured
    terms: list[Head] = field(default_factory=list)  # the recognised terms of a multi-task loss (>= 2), at init


def measure(ctx: Context, p: Params) -> Measurement:
    """Run forward + loss on each batch under the recorder, probe the loss's gradient w.r.t. the output, then (on
    the first batch) the loss's isolation between samples."""
    batches = ctx.batches(p.batches)
    m = Measurement(ctx.loss_name, ctx.loss_kind, ctx.rerun("numerics", "data"))
    model = ctx.fresh_model(train=True, dropout=False)
    for k, b in enumerate(batches):
        ctx.check_time()
        rec = Recorder()
        with torch.no_grad(), rec, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's broadcasting warning: reported as a result instead
            try:
                out, y = ctx.forward(model, b)
            except Exception as e:  # scripted / compiled code may refuse a TorchFunctionMode
                raise ProbeSkip(f"the forward pass cannot run under torch's function recorder: {e}") from e
            try:
                ctx.loss(out, y)
            except Exception as e:  # e.g. BCELoss on values outside [0, 1] raises on CPU
                m.errors.append(f"batch {k}: {type(e).__name__}: {str(e).splitlines()[0]}")
        for call in rec.calls:
            if call.name in LOSSES:
                m.calls.setdefault(call.name, []).append(loss_call(call.name, bound(call), rec, p.max_label_values))
        if k == 0:
            name = _squashing_module(ctx, model, b, out)
            m.squashing_module = code_path(name, model) if name else None
        _gradient_probe(ctx, out, y, m)
        m.batches += 1
    heads = ctx.heads()
    if len(heads) >= 2 and all(h.value is not None for h in heads):
        m.terms = heads
    if p.isolation and batches:
        ctx.check_time()
        m.isolation_measured = True
        m.isolation_change = isolation_change(ctx, batches[0], ISOLATION_NOISE)
    return m


def _squashing_module(ctx: Context, model: nn.Module, batch: Any, out: Any) -> str | None:
    """Qualified name of the squashing module (Softmax, Sigmoid...) that produces the model output, if one does."""
    t = out if isinstance(out, torch.Tensor) else first_tensor(out)
    if t is None:
        return None
    for name, mod, o in reversed(ctx.execution_order(model, batch)[:-1]):
        if isinstance(o, torch.Tensor) and o.shape == t.shape and torch.equal(o, t):
            return name if name and isinstance(mod, SQUASH_MODULES) else None
    return None


def _gradient_probe(ctx: Context, out: Any, y: Any, m: Measurement) -> None:
    """Does the loss have a non-zero gradient w.r.t. the model output?"""
    leaves: list[torch.Tensor] = []

    def leaf(t: torch.Tensor) -> torch.Tensor:
        if not t.is_floating_point():
            return t
        t = t.detach().clone().requires_grad_(True)
        leaves.append(t)
        return t

    out_leaf = map_tensors(out, leaf)
    with torch.enable_grad():
        try:
            loss = ctx.loss(out_leaf, y)
        except Exception:
            return  # reported by measure()
        if not isinstance(loss, torch.Tensor) or not loss.requires_grad:
            m.no_grad_path = True
            m.zero_grad_batches += 1
            return
        grads = torch.autograd.grad(loss.sum(), leaves, allow_unused=True)
    if any(g is not None and not bool(torch.isfinite(g).all()) for g in grads):
        m.nonfinite_grad_batches += 1  # NaN > 0 is False: without this a NaN gradient would count as zero
    elif all(g is None or not bool(g.abs().gt(0).any()) for g in grads):
        m.zero_grad_batches += 1


def _sample_grad(ctx: Context, out: Any, y: Any, n: int, noise: float | None) -> torch.Tensor | None:
    """dLoss/d output of sample 0 (every output tensor with a batch dim), the other samples' outputs moved by
    ``noise`` x std when given. None when the loss cannot be differentiated."""
    leaves: list[torch.Tensor] = []
    g = torch.Generator(device="cpu").manual_seed(0)

    def leaf(t: torch.Tensor) -> torch.Tensor:
        if not t.is_floating_point() or t.dim() == 0 or t.shape[0] != n:
            return t
        t = t.detach().clone()
        if noise:
            delta = torch.randn(t.shape, generator=g, dtype=t.dtype).to(t.device)
            delta[0] = 0
            t = t + noise * (float(t.float().std()) if t.numel() > 1 else 1.0) * delta
        t.requires_grad_(True)
        leaves.append(t)
        return t

    out_leaf = map_tensors(out, leaf)
    if not leaves:
        return None
    with torch.enable_grad():
        try:
            loss = ctx.loss(out_leaf, y)
        except Exception:
            return None
        if not isinstance(loss, torch.Tensor) or not loss.requires_grad:
            return None
        grads = torch.autograd.grad(loss.sum(), leaves, allow_unused=True)
    parts = [gr[0].flatten().double() for gr in grads if gr is not None]
    return torch.cat(parts) if parts else None


def isolation_change(ctx: Context, batch: Any, noise: float) -> float | None:
    """Relative change of sample 0's output gradient when only the other samples' outputs change (0 for a loss
    that treats samples independently). None when it cannot be measured."""
    n = ctx.batch_size(batch)
    if n < 2:
        return None
    model = ctx.fresh_model(train=True, dropout=False)
    with torch.no_grad():
        out, y = ctx.forward(model, batch)
    g0 = _sample_grad(ctx, out, y, n, None)
    g1 = _sample_grad(ctx, out, y, n, noise)
    if g0 is None or g1 is None or g0.shape != g1.shape:
        return None
    norm = float(g0.norm())
    if not (math.isfinite(norm) and norm > 0 and bool(torch.isfinite(g1).all())):
        return None
    return float((g1 - g0).norm()) / norm


# ---------------------------------------------------------------------------------------------- judge
def _values(calls: list[LossCall], key: str, missing: float) -> list[float]:
    """One number per call (``missing`` where the call has none)."""
    return [missing if (v := getattr(c, key)) is None else v for c in calls]


def _all_below(calls: list[LossCall], key: str, tol: float) -> bool:
    """Every call has the number and it is below ``tol``."""
    vals = [getattr(c, key) for c in calls]
    return bool(vals) and all(v is not None and v < tol for v in vals)


def _origin(calls: list[LossCall]) -> str | None:
    return next((c.origin for c in calls if c.origin), None)


def judge(m: Measurement, p: Params) -> Findings:
    """Each loss function's rule on what it received, then the gradient, the isolation and the reduction."""
    f = Findings(
        measured={
            "loss": m.loss,
            "loss_kind": m.loss_kind,
            "loss_calls": sorted(m.calls),
            "batches": m.batches,
            "squashing_module": m.squashing_module,
        }
    )
    squash = m.squashing_module
    if m.errors:
        f.measured["loss_errors"] = m.errors
        f.fail(f"the loss raised on a later batch: {m.errors[0]}", HINT_LOSS_ERROR)

    if ce := m.calls.get("cross_entropy", []):
        err, lo = max(_values(ce, "row_sum_err", 1.0)), min(_values(ce, "lo", 0.0))
        f.measured.update(ce_row_sum_err=err, ce_input_min=lo)
        f.expected["ce_input"] = "raw logits (rows not a probability simplex)"
        if _all_below(ce, "row_sum_err", p.simplex_tol) and lo >= 0:
            f.fail(
                f"double softmax: cross-entropy receives probabilities (every row sums to 1 within {err:.1e}, "
                f"min {lo:.3g})",
                HINT_DOUBLE_SOFTMAX.format(who=_producer(_origin(ce), squash, "the softmax")),
            )
        elif _all_below(ce, "lse_err", p.simplex_tol):
            f.note(NOTE_CE_ON_LOG_PROBS)

    hot = sum(c.multi_hot_rows or 0 for c in ce)
    if hot:
        rows = sum(c.target_rows or 0 for c in ce)
        f.measured.update(ce_multi_hot_target_rows=hot, ce_target_rows=rows)
        f.expected["ce_targets"] = "class indices, or class probabilities summing to 1 per row"
        f.fail(
            f"targets are multi-hot: cross-entropy receives 0/1 float targets with several 1s per row ({hot} of {rows} "
            "rows); it reads them as class probabilities, which must sum to 1, and can never predict two classes "
            "at once",
            HINT_MULTI_HOT,
        )
    elif ce and (err := max(c.target_row_sum_err or 0.0 for c in ce)) > p.simplex_tol:
        f.measured["ce_target_row_sum_err"] = err
        f.fail(
            f"cross-entropy receives float targets (class probabilities) whose rows do not sum to 1 (max |sum - 1| "
            f"= {err:.3g})",
            HINT_SOFT_TARGETS,
        )

    if nll := m.calls.get("nll_loss", []):
        lse = max(_values(nll, "lse_err", 0.0))
        f.measured["nll_logsumexp_err"] = lse
        f.expected["nll_logsumexp_err_max"] = p.nll_logprob_tol
        if lse > p.nll_logprob_tol:
            probs = _all_below(nll, "row_sum_err", p.simplex_tol)
            what = "probabilities (rows sum to 1)" if probs else "raw scores (rows are not log-probabilities)"
            f.fail(f"NLL loss receives {what}: max |logsumexp| of a row = {lse:.3g}, expected 0", HINT_NLL)

    if bcel := m.calls.get("binary_cross_entropy_with_logits", []):
        lo, hi, origin = min(_values(bcel, "lo", -1.0)), max(_values(bcel, "hi", 2.0)), _origin(bcel)
        f.measured.update(bce_logits_input_min=lo, bce_logits_input_max=hi, bce_logits_input_op=origin)
        f.expected["bce_logits_input"] = "raw logits (not a sigmoid's output)"
        hint = HINT_DOUBLE_SIGMOID.format(who=_producer(origin, squash, "the sigmoid"))
        if origin in SIGMOID_OPS:
            f.fail(f"BCE-with-logits receives a `{origin}` output (values in [{lo:.3g}, {hi:.3g}])", hint)
        elif lo > 0 and hi < 1 and hi - lo >= p.sigmoid_min_spread:
            f.warn(f"BCE-with-logits receives values all in (0, 1) ([{lo:.3g}, {hi:.3g}]): probabilities?", hint)

    if bce := m.calls.get("binary_cross_entropy", []):
        lo, hi, origin = min(_values(bce, "lo", 0.0)), max(_values(bce, "hi", 1.0)), _origin(bce)
        f.measured.update(bce_input_min=lo, bce_input_max=hi, bce_input_op=origin)
        f.expected["bce_input"] = "probabilities in [0, 1] (a sigmoid's output)"
        if lo < 0 or hi > 1:
            f.fail(f"BCE receives values outside [0, 1] ([{lo:.3g}, {hi:.3g}])", HINT_BCE)
        elif origin in AFFINE_OPS:
            f.fail(
                f"BCE receives raw logits straight from a `{origin}` (values [{lo:.3g}, {hi:.3g}] happen to lie in "
                "[0, 1] now; training will push them out and the loss will crash or give NaN)",
                HINT_BCE,
            )

    if mse := m.calls.get("mse_loss", []):
        shapes = next((c.shapes for c in mse if c.shapes and c.shapes[0] != c.shapes[1]), None)
        if shapes:
            f.measured["mse_shapes"] = shapes
            f.expected["mse_shapes"] = "output and target of the same shape"
            f.fail(
                f"MSE broadcasts an output of shape {tuple(shapes[0])} against a target of shape {tuple(shapes[1])}",
                HINT_MSE_SHAPES,
            )
        labels = [c.labels for c in mse]
        values = sorted({v for ls in labels if ls for v in ls})
        if all(ls is not None for ls in labels) and 2 <= len(values) <= p.max_label_values and values[0] >= 0:
            f.measured["mse_target_values"] = values[:20]
            f.warn(
                f"MSE on integral targets with {len(values)} distinct values ({values[:6]}...): class labels?",
                HINT_MSE_LABELS,
            )

    f.measured.update(zero_grad_batches=m.zero_grad_batches, nonfinite_grad_batches=m.nonfinite_grad_batches)
    f.expected["zero_grad_batches"] = 0
    if m.nonfinite_grad_batches:
        f.expected["nonfinite_grad_batches"] = 0
        f.warn(
            f"the loss's gradient w.r.t. the output is NaN/inf on {m.nonfinite_grad_batches} of {m.batches} batches: "
            "a numerics problem (log of 0, division by 0, NaN in the data), not a wrong loss",
            HINT_NONFINITE.format(rerun=m.rerun_numerics),
        )
    if m.zero_grad_batches and m.zero_grad_batches == m.batches - m.nonfinite_grad_batches:
        why = "is not connected to the output" if m.no_grad_path else "has a zero gradient w.r.t. the output"
        finite = " with a finite gradient" if m.nonfinite_grad_batches else ""
        f.fail(
            f"the loss {why} on all {m.zero_grad_batches} batches{finite}: training cannot change the model",
            HINT_NO_GRADIENT,
        )

    if m.isolation_measured:
        change = m.isolation_change
        f.measured["isolation_change"] = change
        if change is not None:
            f.expected["isolation_change_max"] = p.isolation_tol
            if change > p.isolation_tol:
                f.fail(
                    f"the loss mixes the samples of a batch: the gradient w.r.t. sample 0's output changed by "
                    f"{change:.3g} (relative) when only the OTHER samples' outputs changed (0 for a per-sample loss "
                    "averaged over the batch)",
                    HINT_MIXES_BATCH,
                )

    if m.terms:
        judge_terms(m.terms, p, f)

    if sums := sorted({n for n, calls in m.calls.items() for c in calls if c.reduction == "sum"}):
        f.measured["reduction_sum"] = sums
        f.note(NOTE_REDUCTION_SUM.format(losses=", ".join(LOSSES[n] for n in sums)))
    _also_warnings(f)
    return f


def judge_terms(terms: list[Head], p: Params, f: Findings) -> None:
    """A multi-task loss: warn when its weighted terms differ by more than ``term_ratio`` at init."""
    size = {h.name: abs(h.weight * (h.value or 0.0)) for h in terms}
    f.measured["loss_terms"] = {
        h.name: {"loss": h.kind, "value": h.value, "weight": h.weight, "weighted": size[h.name]} for h in terms
    }
    big = max(terms, key=lambda h: size[h.name])
    small = min(terms, key=lambda h: size[h.name])
    ratio = size[big.name] / size[small.name] if size[small.name] > 0 else float("inf")
    f.measured["loss_term_ratio"] = ratio
    f.expected["loss_term_ratio_max"] = p.term_ratio
    if ratio <= p.term_ratio:
        return
    # the weight that brings the small term to the big one's size at init (and the big one's, for the other way)
    up = small.weight * size[big.name] / size[small.name] if size[small.name] > 0 else float("inf")
    down = big.weight * size[small.name] / size[big.name]
    f.warn(
        f"the terms of the multi-task loss differ by {ratio:.3g}x at init: {big.name} ({big.kind}, weight "
        f"{big.weight:.3g}) contributes {size[big.name]:.4g}, {small.name} ({small.kind}, weight {small.weight:.3g}) "
        f"{size[small.name]:.4g}",
        f"The sum's gradient is {big.name}'s: {small.name} barely trains. Standardise the targets of the large term "
        f"(regression in raw units: `(y - mean) / std`), or weight the terms: equal at init with weight {up:.3g} on "
        f"{small.name} (or {down:.3g} on {big.name}); or learn the weights (Kendall et al. 2018: `loss = sum(exp(-s_i) "
        "* L_i + s_i)` with learnable s_i).",
    )


@probe("loss-function", title="Loss function fits the outputs", order=90, params=Params)
def loss_function(ctx: Context, p: Params) -> Result:
    """Checks that the loss receives what it expects and that its gradient reaches the model output.

    What it does:
        Runs forward + loss on the first {batches} batches (train mode, dropout off) under a
        `torch.overrides.TorchFunctionMode` that records every torch call: which loss functions run
        (`cross_entropy`, `nll_loss`, `binary_cross_entropy[_with_logits]`, `mse_loss`, also inside a user loss),
        what they receive, their `reduction`, and which op produced their input (e.g. a `sigmoid`). Then:
        - cross-entropy on rows that are a probability simplex (>= 0, sum to 1 within {simplex_tol}): fail (double
          softmax); on log-probabilities (logsumexp = 0): pass with a note (log_softmax is idempotent, so it is
          harmless);
        - cross-entropy on float targets of the output's shape (class probabilities): 0/1 rows with several 1s
          (multi-hot targets: several labels per sample) fail with "use BCEWithLogitsLoss"; rows that do not sum to 1
          (within {simplex_tol}) fail;
        - NLL on probabilities or on raw scores (a row's |logsumexp| > {nll_logprob_tol}): fail (NLLLoss expects
          log_softmax outputs);
        - BCE-with-logits on a sigmoid's output: fail; on values all in (0, 1) (spread >= {sigmoid_min_spread})
          with no sigmoid seen: warn;
        - BCE (no logits) on values outside [0, 1], or made directly by a Linear / Conv (raw logits): fail;
        - MSE with a target of another shape than the output (broadcasting): fail; MSE on integral targets
          with few values (at most {max_label_values}: class labels): warn;
        - a loss with no gradient w.r.t. the output (detached, `.item()`, `round`, `argmax`): fail; a NaN/inf
          gradient is counted apart: warn, pointing at `--only numerics`;
        - loss isolation ({isolation}): on the first batch, the outputs of samples 1..N-1 are moved (0.5 std) and
          the gradient w.r.t. sample 0's output must not change (it cannot for a mean of per-sample terms): fail
          when it changes by more than {isolation_tol} (e.g. `log_softmax(logits, dim=0)` in a hand-written CE);
          contrastive losses couple samples on purpose: `isolation = false`;
        - a multi-task loss (several terms recognised on the output tensors of a multi-output model, see
          `ctx.heads()`): warn when the weighted terms differ by more than {term_ratio} at init, with the weight that
          makes them equal;
        - `reduction="sum"`: a note.
        A loss that returns a non-scalar is already rejected when the setup loads.

    Why is this bad?
        CrossEntropyLoss and BCEWithLogitsLoss apply (log-)softmax / sigmoid themselves: fed probabilities they
        squash them again, the loss cannot go below a floor and the gradients vanish (the "double softmax",
        the most frequent loss bug in Islam et al., FSE 2019, and Humbatova et al., ICSE 2020). NLLLoss on raw
        scores is unbounded below and diverges. BCELoss on raw logits crashes (CPU) or asserts (CUDA) as soon as
        a value leaves [0, 1]. MSE on class indices imposes an order on the classes. A loss whose gradient does
        not reach the output never trains the model. A loss mixing the samples learns which sample of the
        batch is most likely a class, not which class a sample is. A summed loss grows with the batch size, so
        the right learning rate depends on it.

    Thresholds:
        {simplex_tol} (float32 softmax rows sum to 1 within ~1e-7);
        {nll_logprob_tol};
        {sigmoid_min_spread};
        {max_label_values};
        {isolation_tol} (relative change; exactly 0 measured on every correct setup, 0.017-0.03 for
        log_softmax over the batch).

    How to fix:
        Return raw logits from the model and let the loss apply softmax / sigmoid (apply them at inference
        only); use `nn.NLLLoss` only after `log_softmax`; use `nn.BCEWithLogitsLoss` instead of `Sigmoid + BCELoss`;
        use `nn.CrossEntropyLoss` for class labels; compute the loss from the output with differentiable ops.

    Example:
        `nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4), nn.Softmax(dim=1))` trained with
        `nn.CrossEntropyLoss()`: fail, "double softmax: cross-entropy receives probabilities (every row sums to 1
        within 1.3e-07, min 0.108)", expected raw logits; hint: "Remove `model[3]`: CrossEntropyLoss applies
        log_softmax itself. ..."
    """
    m = measure(ctx, p)
    kinds = " and ".join(LOSSES[n] for n in sorted(m.calls)) or f"a custom loss ({m.loss})"
    verbs = ("receive", "have") if len(m.calls) > 1 else ("receives", "has")
    return judge(m, p).result(f"{kinds} {verbs[0]} outputs of the expected kind and {verbs[1]} a gradient w.r.t. them")
