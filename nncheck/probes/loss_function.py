"""loss-function: the loss gets what it expects (logits, probabilities, labels) and its gradient reaches the output."""

from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from nncheck.context import Context, ProbeSkip
from nncheck.modelgraph import SHAPE_OPS, code_path, without_dropout
from nncheck.registry import param, probe
from nncheck.report import Result, failed, passed, warned
from nncheck.tensors import first_tensor, map_tensors

# Size of the perturbation of the other samples' outputs, in units of the output's standard deviation.
ISOLATION_NOISE = 0.5
# Integral MSE targets with at most this many distinct values look like class labels (CIFAR-100 has 100).
MAX_LABEL_VALUES = 100

LOSSES = {
    "cross_entropy": "cross-entropy",
    "nll_loss": "NLL",
    "binary_cross_entropy_with_logits": "BCE-with-logits",
    "binary_cross_entropy": "BCE",
    "mse_loss": "MSE",
}
SIGMOID_OPS = {"sigmoid", "expit", "hardsigmoid"}
# Ops that make raw scores (logits): a BCE input made by one of these never went through a sigmoid.
SQUASH_MODULES = (nn.Softmax, nn.LogSoftmax, nn.Softmax2d, nn.Sigmoid, nn.Hardsigmoid)
AFFINE_OPS = {"linear", "conv1d", "conv2d", "conv3d", "matmul", "__matmul__", "mm", "bmm", "addmm", "einsum", "baddbmm"}


@dataclass
class Call:
    name: str
    func: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    out: Any


class Recorder(TorchFunctionMode):
    """Records every top-level torch call (functions and Tensor methods) with its result (kept alive, so tensor
    ids stay unique), to find which op produced a tensor and what each loss function received."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Call] = []
        self.producer: dict[int, int] = {}

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", str(func))
        if isinstance(out, torch.Tensor):
            self.producer[id(out)] = len(self.calls)
        self.calls.append(Call(name, func, tuple(args), dict(kwargs), out))
        return out

    def origin(self, t: torch.Tensor) -> str | None:
        """Name of the op that produced ``t``, looking through reshapes and dtype casts."""
        for _ in range(50):
            i = self.producer.get(id(t))
            if i is None:
                return None
            call = self.calls[i]
            src = first_tensor(call.args)
            if call.name not in SHAPE_OPS or src is None:
                return call.name
            t = src
        return None


def bound(call: Call) -> dict[str, Any]:
    """The call's arguments by parameter name (`input`, `target`, `reduction`...)."""
    try:
        return dict(inspect.signature(call.func).bind(*call.args, **call.kwargs).arguments)
    except (TypeError, ValueError):
        return {"input": call.args[0] if call.args else None, "target": call.args[1] if len(call.args) > 1 else None}


def class_rows(x: torch.Tensor) -> torch.Tensor:
    """A cross-entropy / NLL input as (N, C) rows (the class dim is 1, or 0 for an unbatched input)."""
    if x.dim() == 1:
        return x[None]
    return x.movedim(1, -1).reshape(-1, x.shape[1])


@dataclass
class Evidence:
    """What the loss functions received over the probed batches."""

    calls: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # loss name -> per call facts
    errors: list[str] = field(default_factory=list)
    zero_grad_batches: int = 0
    nonfinite_grad_batches: int = 0  # NaN/inf in dLoss/d output: a numerics problem, not a missing gradient
    no_grad_path: bool = False
    batches: int = 0


def facts_of(name: str, args: dict[str, Any], rec: Recorder) -> dict[str, Any]:
    """Numbers about one loss call's input and target."""
    x, y = args.get("input"), args.get("target")
    f: dict[str, Any] = {"reduction": args.get("reduction", "mean"), "origin": None}
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        return f
    x = x.detach().double()
    f["origin"] = rec.origin(args["input"])
    f["min"], f["max"] = float(x.min()), float(x.max())
    if name in ("cross_entropy", "nll_loss") and x.dim() >= 1 and (x.dim() == 1 or x.shape[1] >= 2):
        rows = class_rows(x)
        f["row_sum_err"] = float((rows.sum(-1) - 1).abs().max())
        f["lse_err"] = float(rows.logsumexp(-1).abs().max())
    if name == "mse_loss" and isinstance(y, torch.Tensor):
        f["shapes"] = [list(x.shape), list(y.shape)]
        yd = y.detach().double()
        integral = bool((yd == yd.round()).all()) and yd.numel() > 0
        f["labels"] = sorted({int(v) for v in yd.unique()[: MAX_LABEL_VALUES + 1].tolist()}) if integral else None
    return f


def collect(ctx: Context, batches: list[Any]) -> tuple[Evidence, str | None]:
    """Run forward + loss on each batch under the recorder; probe the loss's gradient w.r.t. the output."""
    ev = Evidence()
    model = without_dropout(ctx.fresh_model(train=True))
    last_module: str | None = None
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
                ev.errors.append(f"batch {k}: {type(e).__name__}: {str(e).splitlines()[0]}")
        for call in rec.calls:
            if call.name in LOSSES:
                ev.calls.setdefault(call.name, []).append(facts_of(call.name, bound(call), rec))
        if k == 0:
            name = _last_module(ctx, model, b, out)
            last_module = code_path(name, model) if name else None
        _gradient_probe(ctx, out, y, ev)
        ev.batches += 1
    return ev, last_module


def _last_module(ctx: Context, model: nn.Module, batch: Any, out: Any) -> str | None:
    """Qualified name of the squashing module (Softmax, Sigmoid...) that produces the model output, if one does."""
    t = out if isinstance(out, torch.Tensor) else first_tensor(out)
    if t is None:
        return None
    for name, mod, o in reversed(ctx.execution_order(model, batch)[:-1]):
        if isinstance(o, torch.Tensor) and o.shape == t.shape and torch.equal(o, t):
            return name if name and isinstance(mod, SQUASH_MODULES) else None
    return None


def _gradient_probe(ctx: Context, out: Any, y: Any, ev: Evidence) -> None:
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
            return  # reported by collect()
        if not isinstance(loss, torch.Tensor) or not loss.requires_grad:
            ev.no_grad_path = True
            ev.zero_grad_batches += 1
            return
        grads = torch.autograd.grad(loss.sum(), leaves, allow_unused=True)
    if any(g is not None and not bool(torch.isfinite(g).all()) for g in grads):
        ev.nonfinite_grad_batches += 1  # NaN > 0 is False: without this a NaN gradient would count as zero
    elif all(g is None or not bool(g.abs().gt(0).any()) for g in grads):
        ev.zero_grad_batches += 1


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
    model = without_dropout(ctx.fresh_model(train=True))
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


# ---------------------------------------------------------------------------------------------- rules
def _all(facts: list[dict[str, Any]], key: str, pred: Any) -> bool:
    vals = [f.get(key) for f in facts]
    return bool(vals) and all(v is not None and pred(v) for v in vals)


def _origin(facts: list[dict[str, Any]]) -> str | None:
    return next((f["origin"] for f in facts if f.get("origin")), None)


def _producer(origin: str | None, last_module: str | None, default: str) -> str:
    if last_module:
        return f"`{last_module}`"
    if origin:
        return f"the `{origin}` call on the output"
    return default


@dataclass(frozen=True)
class Params:
    """Parameters of loss-function (`[tool.nncheck.probes.loss-function]`)."""

    batches: int = param(
        4, fast=1, source="Batches whose loss calls are recorded (the first one is enough for the fast budget)."
    )
    simplex_tol: float = param(
        0.001,
        source=(
            "Thresholds. Rows of a cross-entropy / NLL input that sum to 1 within this tolerance (all >= 0) are "
            "probabilities, and rows whose logsumexp is 0 within it are log-probabilities. float32 softmax rows "
            "sum to 1 within ~1e-6; raw logits of a freshly initialised model never do (measured on examples/ and "
            "checks/: |logsumexp| > 0.5 for every logit row)."
        ),
    )
    nll_logprob_tol: float = param(
        0.1,
        source=(
            "An NLL input whose rows have |logsumexp| above this is not log-probabilities (raw scores fed to NLLLoss)."
        ),
    )
    sigmoid_min_spread: float = param(
        0.01,
        source=(
            "Outputs fed to BCEWithLogits that all lie strictly in (0, 1) with at least this spread look like "
            "probabilities when no sigmoid call was seen (raw logits of a fresh model straddle 0 on every example "
            "of examples/)."
        ),
    )
    max_label_values: int = param(
        100,
        source=(
            "Integral MSE targets with at most this many distinct values look like class labels (CIFAR-100 has 100)."
        ),
    )
    isolation: bool = param(
        True,
        source="Run the loss-isolation check (off for losses that couple samples on purpose: contrastive, triplet).",
    )
    isolation_tol: float = param(
        0.0001,
        source=(
            "Loss isolation: dLoss/d output_i must not change when the outputs of the other samples j != i "
            "change, for any loss that is a mean (or sum) of per-sample terms; it does change when the loss mixes "
            "the batch (log_softmax(dim=0) in a hand-written CE: .notes/heldout/b_loss_softmax_over_batch.py). "
            "Measured (relative change of sample 0's gradient, other outputs moved by 0.5 x their std): exactly 0 "
            "on every correct file of checks/ + examples/ and the held-out a_*.py (CE, BCE, MSE, NLL, Poisson, "
            "VAE, LM losses), 0.017-0.030 on checks/lf_softmax_over_batch.py. 1e-4 leaves float32 rounding "
            "(~1e-7) three decades of room. Contrastive / in-batch-negative losses couple samples on purpose: "
            "`isolation = false` in [tool.nncheck.probes.loss-function]."
        ),
    )


@probe("loss-function", title="Loss function fits the outputs", order=90, params=Params)
def loss_function(ctx: Context, p: Params) -> Result:
    """Checks that the loss receives what it expects and that its gradient reaches the model output.

    What it does:
        Runs forward + loss on the first `batches` batches (train mode, dropout off) under a
        `torch.overrides.TorchFunctionMode` that records every torch call: which loss functions run
        (`cross_entropy`, `nll_loss`, `binary_cross_entropy[_with_logits]`, `mse_loss`, also inside a user loss),
        what they receive, their `reduction`, and which op produced their input (e.g. a `sigmoid`). Then:
        - cross-entropy on rows that are a probability simplex (>= 0, sum to 1): fail (double softmax);
          on log-probabilities (logsumexp = 0): pass with a note (log_softmax is idempotent, so it is harmless);
        - NLL on probabilities or on raw scores (logsumexp != 0): fail (NLLLoss expects log_softmax outputs);
        - BCE-with-logits on a sigmoid's output: fail; on values all in (0, 1) with no sigmoid seen: warn;
        - BCE (no logits) on values outside [0, 1], or made directly by a Linear / Conv (raw logits): fail;
        - MSE with a target of another shape than the output (broadcasting): fail; MSE on integral targets
          with few values (class labels): warn;
        - a loss with no gradient w.r.t. the output (detached, `.item()`, `round`, `argmax`): fail; a NaN/inf
          gradient is counted apart: warn, pointing at `--only numerics`;
        - loss isolation: on the first batch, the outputs of samples 1..N-1 are moved (0.5 std) and the gradient
          w.r.t. sample 0's output must not change (it cannot for a mean of per-sample terms): fail when it
          changes by more than `isolation_tol` (e.g. `log_softmax(logits, dim=0)` in a hand-written CE);
          contrastive losses couple samples on purpose: `isolation = false`;
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
        simplex_tol = 1e-3 (float32 softmax rows sum to 1 within ~1e-6); nll_logprob_tol = 0.1;
        sigmoid_min_spread = 0.01; max_label_values = 100; isolation_tol = 1e-4 (relative change; exactly 0
        measured on every correct setup, 0.017-0.03 for log_softmax over the batch).

    How to fix:
        Return raw logits from the model and let the loss apply softmax / sigmoid (apply them at inference
        only); use `nn.NLLLoss` only after `log_softmax`; use `nn.BCEWithLogitsLoss` instead of `Sigmoid + BCELoss`;
        use `nn.CrossEntropyLoss` for class labels; compute the loss from the output with differentiable ops.

    Example:
        A classifier ending in `nn.Softmax(dim=1)` trained with `nn.CrossEntropyLoss()`: fail, measured row sums
        1.000000 (a probability simplex), expected raw logits; hint: remove `model.3` (Softmax).
    """
    batches = ctx.batches(p.batches)
    ev, last = collect(ctx, batches)
    measured: dict[str, Any] = {
        "loss": ctx.loss_name,
        "loss_kind": ctx.loss_kind,
        "loss_calls": sorted(ev.calls),
        "batches": ev.batches,
        "squashing_module": last,
    }
    expected: dict[str, Any] = {}
    fails: list[tuple[str, str]] = []  # (message, hint)
    warns: list[tuple[str, str]] = []
    notes: list[str] = []
    tol = p.simplex_tol

    if ev.errors:
        measured["loss_errors"] = ev.errors
        fails.append(
            (
                f"the loss raised on a later batch: {ev.errors[0]}",
                "Fix the loss input: see the error above (BCELoss needs values in [0, 1]: use "
                "`nn.BCEWithLogitsLoss()` on raw outputs).",
            )
        )

    ce = ev.calls.get("cross_entropy", [])
    if ce:
        measured["ce_row_sum_err"] = max((f.get("row_sum_err", 1.0) for f in ce), default=None)
        measured["ce_input_min"] = min(f.get("min", 0.0) for f in ce)
        expected["ce_input"] = "raw logits (rows not a probability simplex)"
        origin = _origin(ce)
        if _all(ce, "row_sum_err", lambda v: v < tol) and measured["ce_input_min"] >= 0:
            who = _producer(origin, last, "the softmax")
            fails.append(
                (
                    f"double softmax: cross-entropy receives probabilities (every row sums to 1 within "
                    f"{measured['ce_row_sum_err']:.1e}, min {measured['ce_input_min']:.3g})",
                    f"Remove {who}: CrossEntropyLoss applies log_softmax itself. Return raw logits "
                    "(`return self.head(h)`) and apply `torch.softmax(logits, dim=1)` only at inference.",
                )
            )
        elif _all(ce, "lse_err", lambda v: v < tol):
            notes.append(
                "cross-entropy receives log-probabilities (log_softmax outputs): harmless, since log_softmax is "
                "idempotent, but redundant: drop the log_softmax or use `nn.NLLLoss()`."
            )

    nll = ev.calls.get("nll_loss", [])
    if nll:
        lse = max((f.get("lse_err", 0.0) for f in nll), default=0.0)
        measured["nll_logsumexp_err"] = lse
        expected["nll_logsumexp_err_max"] = p.nll_logprob_tol
        if lse > p.nll_logprob_tol:
            probs = _all(nll, "row_sum_err", lambda v: v < tol)
            what = "probabilities (rows sum to 1)" if probs else "raw scores (rows are not log-probabilities)"
            fails.append(
                (
                    f"NLL loss receives {what}: max |logsumexp| of a row = {lse:.3g}, expected 0",
                    "NLLLoss expects log-probabilities: end the model with `nn.LogSoftmax(dim=1)` "
                    "(or `torch.log_softmax(logits, dim=1)`), or use `nn.CrossEntropyLoss()` on raw logits.",
                )
            )

    bcel = ev.calls.get("binary_cross_entropy_with_logits", [])
    if bcel:
        lo, hi = min(f.get("min", -1.0) for f in bcel), max(f.get("max", 2.0) for f in bcel)
        origin = _origin(bcel)
        measured.update({"bce_logits_input_min": lo, "bce_logits_input_max": hi, "bce_logits_input_op": origin})
        expected["bce_logits_input"] = "raw logits (not a sigmoid's output)"
        hint = (
            f"Remove {_producer(origin, last, 'the sigmoid')}: BCEWithLogitsLoss applies the sigmoid itself. "
            "Return raw logits and apply `torch.sigmoid(logits)` only at inference."
        )
        if origin in SIGMOID_OPS:
            fails.append((f"BCE-with-logits receives a `{origin}` output (values in [{lo:.3g}, {hi:.3g}])", hint))
        elif lo > 0 and hi < 1 and hi - lo >= p.sigmoid_min_spread:
            warns.append(
                (f"BCE-with-logits receives values all in (0, 1) ([{lo:.3g}, {hi:.3g}]): probabilities?", hint)
            )

    bce = ev.calls.get("binary_cross_entropy", [])
    if bce:
        lo, hi = min(f.get("min", 0.0) for f in bce), max(f.get("max", 1.0) for f in bce)
        origin = _origin(bce)
        measured.update({"bce_input_min": lo, "bce_input_max": hi, "bce_input_op": origin})
        expected["bce_input"] = "probabilities in [0, 1] (a sigmoid's output)"
        hint = (
            "BCELoss expects probabilities: train on raw logits with `nn.BCEWithLogitsLoss()` (numerically "
            "stable), or end the model with `nn.Sigmoid()`."
        )
        if lo < 0 or hi > 1:
            fails.append((f"BCE receives values outside [0, 1] ([{lo:.3g}, {hi:.3g}])", hint))
        elif origin in AFFINE_OPS:
            fails.append(
                (
                    f"BCE receives raw logits straight from a `{origin}` (values [{lo:.3g}, {hi:.3g}] happen to "
                    "lie in [0, 1] now; training will push them out and the loss will crash or give NaN)",
                    hint,
                )
            )

    mse = ev.calls.get("mse_loss", [])
    if mse:
        shapes = next((f["shapes"] for f in mse if f.get("shapes") and f["shapes"][0] != f["shapes"][1]), None)
        labels = [f.get("labels") for f in mse]
        if shapes:
            measured["mse_shapes"] = shapes
            expected["mse_shapes"] = "output and target of the same shape"
            fails.append(
                (
                    f"MSE broadcasts an output of shape {tuple(shapes[0])} against a target of shape "
                    f"{tuple(shapes[1])}",
                    "Give the output and the target the same shape: `loss(out.squeeze(-1), y)` or "
                    "`loss(out, y.view_as(out))`.",
                )
            )
        values = sorted({v for ls in labels if ls for v in ls})
        if all(ls is not None for ls in labels) and 2 <= len(values) <= p.max_label_values and values[0] >= 0:
            measured["mse_target_values"] = values[:20]
            warns.append(
                (
                    f"MSE on integral targets with {len(values)} distinct values ({values[:6]}...): class labels?",
                    "For class labels use `nn.CrossEntropyLoss()` with one output per class (or "
                    "`nn.BCEWithLogitsLoss()` for 0/1 labels); MSE on class indices orders the classes. If the "
                    "targets are counts or ratings, MSE is fine and this warning does not apply.",
                )
            )

    measured["zero_grad_batches"] = ev.zero_grad_batches
    expected["zero_grad_batches"] = 0
    measured["nonfinite_grad_batches"] = ev.nonfinite_grad_batches
    if ev.nonfinite_grad_batches:
        expected["nonfinite_grad_batches"] = 0
        warns.append(
            (
                f"the loss's gradient w.r.t. the output is NaN/inf on {ev.nonfinite_grad_batches} of {ev.batches} "
                "batches: a numerics problem (log of 0, division by 0, NaN in the data), not a wrong loss",
                f"Find where the NaN/inf comes from with `nncheck run {ctx.setup.path} --only numerics,data`.",
            )
        )
    if ev.batches and ev.zero_grad_batches == ev.batches - ev.nonfinite_grad_batches and ev.zero_grad_batches:
        why = "is not connected to the output" if ev.no_grad_path else "has a zero gradient w.r.t. the output"
        fails.append(
            (
                f"the loss {why} on all {ev.zero_grad_batches} batches"
                f"{' with a finite gradient' if ev.nonfinite_grad_batches else ''}: training cannot change the model",
                "Compute the loss from the model output with differentiable ops only: no `.detach()`, `.item()`, "
                "`.numpy()`, `.data`, `round()`, `argmax()` or comparisons between the output and the loss.",
            )
        )

    if p.isolation and batches:
        ctx.check_time()
        change = isolation_change(ctx, batches[0], ISOLATION_NOISE)
        measured["isolation_change"] = change
        if change is not None:
            expected["isolation_change_max"] = p.isolation_tol
        if change is not None and change > p.isolation_tol:
            fails.append(
                (
                    f"the loss mixes the samples of a batch: the gradient w.r.t. sample 0's output changed by "
                    f"{change:.3g} (relative) when only the OTHER samples' outputs changed (0 for a per-sample "
                    "loss averaged over the batch)",
                    "Look for a reduction over the batch dim inside the loss: `log_softmax(logits, dim=0)` / "
                    "`softmax(..., dim=0)` instead of `dim=1` (or `dim=-1`), a normalisation by batch statistics "
                    "(`out / out.sum(0)`, `out - out.mean(0)`), a `sum(0)` before the per-sample term. If the loss "
                    "couples samples on purpose (contrastive, in-batch negatives, ranking), set `isolation = false` "
                    "under [tool.nncheck.probes.loss-function] in pyproject.toml.",
                )
            )

    sums = sorted({n for n, fs in ev.calls.items() for f in fs if f.get("reduction") == "sum"})
    if sums:
        measured["reduction_sum"] = sums
        notes.append(
            f"{', '.join(LOSSES[n] for n in sums)} uses reduction='sum': the gradient grows with the batch size, so "
            "the learning rate must shrink when the batch grows (or use reduction='mean')."
        )

    kw: dict[str, Any] = {"measured": measured, "expected": expected, "notes": notes}
    if fails:
        # warnings joined to a fail are marked as such, so "this warning" in their hints reads right
        message = "; ".join(m for m, _ in fails) + "".join(f"; also (warning) {m}" for m, _ in warns)
        hint = " ".join(h for _, h in fails) + "".join(f" Also (warning): {h}" for _, h in warns)
        return failed(message, hint=hint, **kw)
    if warns:
        return warned("; ".join(m for m, _ in warns), hint=" ".join(h for _, h in warns), **kw)
    kinds = ", ".join(LOSSES[n] for n in sorted(ev.calls)) or f"a custom loss ({ctx.loss_name})"
    return passed(f"{kinds} receives outputs of the expected kind and has a gradient w.r.t. them", **kw)
