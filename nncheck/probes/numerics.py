"""numerics: no NaN / inf in the input batches, the outputs, the loss or the gradients, at init and over the
first training steps at the user's learning rate; the first module, op and line that produced one."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nncheck.kit import Context, Result, line_plot, param, probe
from nncheck.probes._locate import (
    Located,
    OpSite,
    describe_counts,
    fix_hint,
    locate,
    nonfinite_counts,
    param_path,
    set_rng_state,
)
from nncheck.report import failed, passed
from nncheck.setup import Batch
from nncheck.tensors import iter_tensors
from nncheck.trace import TRACE_BATCHES, Event, Trace

# Feature columns / batches named in a data-error message at most.
MAX_LISTED = 8


@dataclass(frozen=True)
class Params:
    """Parameters of numerics (`[tool.nncheck.probes.numerics]`)."""

    steps: int = param(
        10,
        fast=3,
        source="Measured on checks/ (seeds 0-2): every setup with a non-finite value shows it at init (step 0) "
        "except numerics_diverging_sgd.py, which overflows at step 2; the default leaves room for slower divergence, "
        "the fast value still reaches step 2.",
    )


# ---------------------------------------------------------------------------------------------- measurement
@dataclass
class DataScan:
    """Where the batches hold NaN / inf: the first tensor found (batch, part, counts, feature columns)."""

    batches_read: int
    bad_batches: list[int] = field(default_factory=list)
    first: dict[str, Any] | None = None


def _batch_parts(ctx: Context, batch: Batch) -> list[tuple[str, Any]]:
    """(label, part) of a batch: inputs and targets with the default forward, the whole batch otherwise."""
    if not ctx.setup.custom_forward and isinstance(batch, (tuple, list)) and len(batch) == 2:
        return [("inputs", batch[0]), ("targets", batch[1])]
    return [("batch", batch)]


def _nan_features(t: torch.Tensor) -> list[int]:
    """Feature columns (dim 1) holding a non-finite value, for (B, F, ...) tensors."""
    if t.dim() < 2:
        return []
    bad = ~torch.isfinite(t.detach())
    return torch.nonzero(bad.movedim(1, 0).reshape(t.shape[1], -1).any(dim=1)).flatten().tolist()


def scan_data(ctx: Context, batches: list[Batch]) -> DataScan:
    scan = DataScan(len(batches))
    for i, b in enumerate(batches):
        for label, part in _batch_parts(ctx, b):
            for j, t in enumerate(iter_tensors(part)):
                c = nonfinite_counts(t)
                if c is None:
                    continue
                if i not in scan.bad_batches:
                    scan.bad_batches.append(i)
                if scan.first is None:
                    scan.first = {"batch": i, "part": label, "tensor": j, "shape": list(t.shape), **c}
                    scan.first["features"] = _nan_features(t)[:MAX_LISTED] if label != "targets" else []
    return scan


def first_nonfinite(model: nn.Module) -> tuple[str, dict[str, int]] | None:
    """(qualified name, counts) of the first parameter holding NaN / inf, or buffer holding NaN. A buffer may hold
    inf on purpose: an additive attention mask of 0 / -inf registered with `register_buffer` (PyTorch's own
    `nn.Transformer.generate_square_subsequent_mask`); what it does to the outputs, the loss and the gradients is
    what the training steps check."""
    for name, t in model.named_parameters():
        c = nonfinite_counts(t)
        if c is not None:
            return name, c
    for name, t in model.named_buffers():
        c = nonfinite_counts(t)
        if c is not None and c.get("nan"):
            return name, c
    return None


@dataclass
class Watched:
    """The watched training steps, read from the shared trace: the first ``steps`` steps at the user's LR on
    ``batches`` batches, their losses, and the first non-finite value among them."""

    steps: int
    batches: int
    lr: float | None
    losses: list[float]
    event: Event | None
    tensor: str = ""  # the parameter an "update" event left non-finite (its code path)
    counts: dict[str, int] = field(default_factory=dict)


def watch(ctx: Context, steps: int) -> tuple[Watched, Trace]:
    trace = ctx.trace(steps)
    lr = trace.group_lrs[0] if trace.group_lrs else None
    w = Watched(min(steps, trace.steps), len(trace.batches), lr, trace.losses[:steps], trace.event_within(steps))
    if w.event is not None and w.event.stage == "update":
        assert trace.model is not None
        w.tensor = param_path(w.event.tensor, trace.model)
        w.counts = nonfinite_counts(trace.model.get_parameter(w.event.tensor)) or {}
    return w, trace


# ---------------------------------------------------------------------------------------------- wording
FIX_DATA = (
    "The data holds NaN/inf before the model sees it (missing values not imputed, a division by a zero std in "
    "normalisation, a failed parse). Impute when building the dataset, e.g. `x = torch.nan_to_num(x, nan=0.0)` or "
    "fill with the column mean: `x = torch.where(torch.isnan(x), torch.nanmean(x, dim=0), x)`; add "
    "`assert torch.isfinite(x).all()`."
)


def data_error(scan: DataScan) -> Result:
    first = scan.first
    assert first is not None
    feats = first["features"]
    where = f" in feature column(s) {feats}" if feats else ""
    tensor = f" (tensor {first['tensor']} of the {first['part']})" if first["tensor"] else ""
    return failed(
        f"data error: {first['part']} of batch {first['batch']}{tensor} hold non-finite values{where}: "
        f"{describe_counts(first)}; {len(scan.bad_batches)} of the {scan.batches_read} batches read are affected",
        measured={"first": first, "bad_batches": scan.bad_batches[:MAX_LISTED], "batches_read": scan.batches_read},
        expected={"nonfinite_values": 0},
        hint=FIX_DATA,
    )


def nonfinite_at_init(name: str, counts: dict[str, int]) -> Result:
    return failed(
        f"parameter/buffer `{name}` is non-finite at init: {describe_counts(counts)}",
        measured={"tensor": name, "counts": counts},
        expected={"nonfinite_values": 0},
        hint=f"Initialise `{name}` explicitly, on the module your `model()` returns (e.g. "
        f"`nn.init.zeros_({name})` / `nn.init.normal_({name}, std=0.02)`): "
        "a tensor made with `torch.empty` holds whatever was in memory.",
    )


def update_failure(t: Watched) -> Result:
    assert t.event is not None
    return failed(
        f"parameter `{t.tensor}` became non-finite in optimizer step {t.event.step} although its gradients were "
        f"finite: {describe_counts(t.counts)}",
        measured={
            "step": t.event.step,
            "stage": "update",
            "lr": t.lr,
            "losses": t.losses,
            "tensor": t.tensor,
            "counts": t.counts,
        },
        expected={"nonfinite_values": 0},
        hint=f"The update overflowed (lr={t.lr}): lower the learning rate, clip gradients with "
        "`torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)`, or raise the optimizer's eps.",
    )


def _when(step: int, lr: float | None) -> str:
    if step == 0:
        return "at init (step 0)"
    return f"at step {step} (after {step} optimizer step(s) at lr={lr:g})" if lr else f"at step {step}"


def _site_text(site: OpSite) -> str:
    return f"`{site.op}` in {site.module_label()}"


def _at_line(site: OpSite) -> str:
    return f"; at {site.line}" if site.line else ""


def located_failure(t: Watched, found: Located, lr_cmd: str) -> Result:
    """The first non-finite output / loss / gradient of the watched steps, with the op that produced it."""
    assert t.event is not None
    step, stage = t.event.step, t.event.stage
    when = _when(step, t.lr)
    measured: dict[str, Any] = {"step": step, "stage": stage, "lr": t.lr, "losses": t.losses}
    diverged = (
        " The model was finite at init and blew up during training: lower the learning rate (run "
        f"`{lr_cmd}`) or clip gradients (`torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)`). "
        if step > 0
        else " "
    )
    if found.forward is not None:
        s = found.forward
        lo = "" if s.input_min is None else f" (its inputs were finite, range [{s.input_min:.3g}, {s.input_max:.3g}])"
        measured.update(op=s.op, module=s.path or s.module, line=s.line, counts=s.counts)
        what = f"non-finite {stage} {when}"
        if stage == "gradient":
            what = f"non-finite gradient {when} with a finite loss; an intermediate forward value was not finite"
        return failed(
            f"{what}: {_site_text(s)} produced {describe_counts(s.counts)}{lo}{_at_line(s)}",
            measured=measured,
            expected={"nonfinite_values": 0},
            hint=(diverged + fix_hint(s)).strip(),
        )
    if stage == "gradient" and found.backward is not None:
        s = found.backward
        measured.update(op=s.op, backward_node=s.backward_node, module=s.path or s.module, line=s.line, counts=s.counts)
        params = ", ".join(found.grads_bad[:MAX_LISTED])
        return failed(
            f"non-finite gradient {when} with a finite loss: the backward of {_site_text(s)} ({s.backward_node}) "
            f"turned finite gradients into {describe_counts(s.counts)}; parameters hit: {params or 'none'}"
            + _at_line(s),
            measured=measured,
            expected={"nonfinite_values": 0},
            hint=(diverged + fix_hint(s, backward=True)).strip(),
        )
    bad = ", ".join(found.grads_bad[:MAX_LISTED])
    return failed(
        f"non-finite {stage} {when}; the op that produced it could not be isolated"
        + (f" (parameters with non-finite gradients: {bad})" if bad else ""),
        measured=measured,
        expected={"nonfinite_values": 0},
        hint=(diverged + fix_hint(None)).strip(),
    )


def all_finite_result(t: Watched) -> Result:
    return passed(
        f"inputs, outputs, loss and gradients finite over {t.batches} batch(es) and {t.steps} step(s) "
        f"at lr={t.lr if t.lr is not None else '?'}",
        measured={"steps": t.steps, "batches": t.batches, "lr": t.lr, "losses": t.losses},
        expected={"nonfinite_values": 0},
        series={"loss": line_plot("Loss over the watched steps (user's LR)", {"your optimizer": t.losses})},
    )


# ---------------------------------------------------------------------------------------------- probe
@probe("numerics", title="Finite values (NaN / inf)", order=15, params=Params)
def numerics(ctx: Context, p: Params) -> Result:
    """Checks that inputs, outputs, the loss and the gradients stay finite (no NaN / inf) in the first steps.

    What it does:
        Scans the batches of the shared training trace for NaN / inf (a data error, reported with the batch and
        the feature columns), checks the parameters at init (and buffers for NaN: an additive attention mask of
        0 / -inf is a legitimate buffer), then reads the first {steps} steps of the shared training trace (your
        optimizer at your LR), which checks the outputs, the loss and every gradient at each step and the
        parameters after each update.
        At the first non-finite value it replays that step under a torch function mode that checks every op
        (forward pre/post hooks name the module running it; node hooks watch the backward): it reports the first
        op that turned finite inputs into NaN / inf, its module (qualified name), the line of your code and the
        step. With a `train_step` in the setup, a value that the float32 replay does not reproduce is replayed
        under the autocast dtype your step runs the model in (seen by one call of the step on a copy): the op
        that overflows only in float16 is named; otherwise the step itself (a loss scale, clipping) is, with
        the train-step probe to run.

    Why is this bad?
        One NaN poisons every weight it reaches in the next update; afterwards the loss reads `nan` and training
        is lost. The usual causes are unguarded math (log or sqrt of non-positive values, a division by a sum
        that can be zero, exp overflow, the gradient of sqrt / norm at 0), missing values in the data, or an
        update that diverges at too high a learning rate (Humbatova et al. ICSE 2020, "missing epsilon";
        Islam et al. FSE 2019; SageMaker Debugger's `ExplodingTensor` rule).

    Thresholds:
        Any non-finite value fails: there is no acceptable amount. {steps}: every non-finite setup in checks/
        shows it at init except a diverging SGD, which overflows at step 2.

    How to fix:
        Guard the op the message names: `torch.log(x.clamp_min(1e-8))` or `torch.log1p(x)`,
        `x / (x.sum(1, keepdim=True) + 1e-8)`, `torch.logsumexp` / `torch.softmax` instead of a hand-written
        exp-normalise, `torch.sqrt(d2 + 1e-12)` for distances; impute missing values in the data
        (`torch.nan_to_num`); lower the learning rate or clip gradients when it blows up after a few steps.

    Example:
        A model that computes `torch.log(x)` of count features with zeros: fail, "non-finite output at init
        (step 0): `torch.log` in the model itself (`model`, LogCounts) produced 222 -inf of 640 values (its inputs were
        finite, range [0, 10]); at checks/numerics_log_of_zero.py:24: return self.net(torch.log(x))".
    """
    model = ctx.pristine_model()
    scan = scan_data(ctx, ctx.batches(TRACE_BATCHES + 1))  # the trace's batches and its held-out batch
    if scan.first is not None:
        return data_error(scan)
    bad = first_nonfinite(model)
    if bad is not None:
        return nonfinite_at_init(param_path(bad[0], model), bad[1])
    watched, trace = watch(ctx, max(1, p.steps))
    e = watched.event
    if e is None:
        return all_finite_result(watched)
    if e.stage == "update":
        return update_failure(watched)
    assert trace.model is not None
    replay = copy.deepcopy(trace.model)  # the model as the failing step found it (the trace stopped there)
    replay.zero_grad(set_to_none=True)
    found = locate(ctx, replay, trace.batches[e.batch], e.rng)
    if ctx.setup.train_step is not None and not _isolated(found, e.stage):
        return in_train_step(ctx, trace, watched, found)
    return located_failure(watched, found, ctx.rerun("learning-rate"))


def _isolated(found: Located, stage: str) -> bool:
    return found.forward is not None or (stage == "gradient" and found.backward is not None)


def step_autocast(ctx: Context, model: nn.Module, batch: Batch, rng: Any) -> torch.dtype | None:
    """The autocast dtype the setup's train_step runs the model's forward under (one call on a copy), or None."""
    seen: list[torch.dtype] = []
    kind = ctx.device.type

    def pre(mod: nn.Module, args: Any) -> None:
        if not seen and torch.is_autocast_enabled(kind):
            seen.append(torch.get_autocast_dtype(kind))

    copy_ = copy.deepcopy(model)
    opt = torch.optim.SGD([p for p in copy_.parameters() if p.requires_grad] or [nn.Parameter(torch.zeros(1))], lr=0.0)
    handle = copy_.register_forward_pre_hook(pre)
    scalers = ctx.scaler_states()
    try:
        if rng is not None:
            set_rng_state(rng, ctx.device)
        ctx.user_train_step(copy_, opt, batch)
    except Exception:  # the step may raise on non-finite values itself: what it ran under is recorded already
        pass
    finally:
        handle.remove()
        ctx.load_scaler_states(scalers)
    return seen[0] if seen else None


def in_train_step(ctx: Context, trace: Trace, t: Watched, plain: Located) -> Result:
    """A non-finite value in the setup's train_step that nncheck's own float32 forward / backward of the same batch
    and weights does not reproduce: replayed under the step's autocast dtype when it has one (the op that overflows
    in low precision); else the step itself (a loss scale, clipping) is named, and the train-step probe."""
    assert t.event is not None and trace.model is not None
    e = t.event
    batch = trace.batches[e.batch]
    dtype = step_autocast(ctx, trace.model, batch, e.rng)
    where = f"`{ctx.rerun('train-step')}`"
    if dtype is not None:
        replay = copy.deepcopy(trace.model)
        replay.zero_grad(set_to_none=True)
        with torch.autocast(ctx.device.type, dtype=dtype):
            found = locate(ctx, replay, batch, e.rng)
        name = str(dtype).replace("torch.", "")
        if _isolated(found, e.stage):
            r = located_failure(t, found, ctx.rerun("learning-rate"))
            r.message = f"{r.message} (under your train_step's autocast({name}); finite in float32)"
            r.measured["autocast"] = name
            r.hint = (
                f"{r.hint} It overflows only in {name}: compute that op in float32 (`with torch.autocast(device, "
                f"enabled=False):`), scale it down, or autocast to bfloat16; {where} checks the rest of the step."
            )
            return r
    amp = f" under autocast({str(dtype).replace('torch.', '')})" if dtype is not None else ""
    return failed(
        f"non-finite {e.stage} {_when(e.step, t.lr)} in your train_step{amp}; nncheck's float32 forward and backward "
        "of the same batch and weights stay finite: the step itself makes it (its autocast dtype, a loss scale, "
        "clipping or its own loss)",
        measured={
            "step": e.step,
            "stage": e.stage,
            "lr": t.lr,
            "losses": t.losses,
            "float32_finite": not (plain.output_bad or plain.loss_bad or plain.grads_bad),
        },
        expected={"nonfinite_values": 0},
        hint=f"Run {where}: it watches each call of your step (autocast dtype, GradScaler skips, clipping, gradients "
        "at optimizer.step()). Under float16, compute the overflowing op in float32 or autocast to bfloat16.",
    )
