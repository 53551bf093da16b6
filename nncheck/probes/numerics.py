"""numerics: no NaN / inf in the input batches, the outputs, the loss or the gradients, at init and over the
first training steps at the user's learning rate; the first module, op and line that produced one."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nncheck.context import Context
from nncheck.probes._locate import (
    Located,
    OpSite,
    describe_counts,
    fix_hint,
    locate,
    nonfinite_counts,
    param_path,
    rng_state,
)
from nncheck.registry import param, probe
from nncheck.report import Result, failed, passed
from nncheck.setup import Batch
from nncheck.tensors import iter_tensors

# Feature columns / batches named in a data-error message at most.
MAX_LISTED = 8


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


def _check_data(ctx: Context, batches: list[Batch]) -> Result | None:
    """A data error when a batch holds NaN / inf: name the batch, the part (inputs / targets) and the features."""
    bad_batches: list[int] = []
    first: dict[str, Any] | None = None
    for i, b in enumerate(batches):
        for label, part in _batch_parts(ctx, b):
            for j, t in enumerate(iter_tensors(part)):
                c = nonfinite_counts(t)
                if c is None:
                    continue
                if i not in bad_batches:
                    bad_batches.append(i)
                if first is None:
                    first = {"batch": i, "part": label, "tensor": j, "shape": list(t.shape), **c}
                    first["features"] = _nan_features(t)[:MAX_LISTED] if label != "targets" else []
    if first is None:
        return None
    feats = first["features"]
    where = f" in feature column(s) {feats}" if feats else ""
    tensor = f" (tensor {first['tensor']} of the {first['part']})" if first["tensor"] else ""
    counts = describe_counts(first)
    return failed(
        f"data error: {first['part']} of batch {first['batch']}{tensor} hold non-finite values{where}: {counts}; "
        f"{len(bad_batches)} of the {len(batches)} batches read are affected",
        measured={"first": first, "bad_batches": bad_batches[:MAX_LISTED], "batches_read": len(batches)},
        expected={"nonfinite_values": 0},
        hint=(
            "The data holds NaN/inf before the model sees it (missing values not imputed, a division by a zero std "
            "in normalisation, a failed parse). Impute when building the dataset, e.g. "
            "`x = torch.nan_to_num(x, nan=0.0)` or fill with the column mean: "
            "`x = torch.where(torch.isnan(x), torch.nanmean(x, dim=0), x)`; add `assert torch.isfinite(x).all()`."
        ),
    )


def _first_bad_parameter(model: nn.Module) -> tuple[str, dict[str, int]] | None:
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        c = nonfinite_counts(t)
        if c is not None:
            return name, c
    return None


def _finite(tensors: list[torch.Tensor]) -> bool:
    """All finite, in one reduction: the largest max-abs value is NaN or inf exactly when one element is."""
    if not tensors:
        return True
    norms = torch._foreach_norm([t.detach().float() for t in tensors], ord=math.inf)
    return bool(torch.isfinite(torch.stack(norms).max()))


def _loss_and_output_sum(loss: torch.Tensor, out: Any) -> tuple[float, float]:
    """The loss and the sum of every float output, in one device sync. A NaN / inf anywhere in the outputs makes
    the sum non-finite (a huge finite sum may overflow too: the caller confirms element-wise)."""
    parts = [loss.detach().float().reshape(())]
    parts += [t.detach().float().sum() for t in iter_tensors(out) if t.is_floating_point() and t.numel()]
    values = torch.stack(parts).tolist()
    return values[0], sum(values[1:])


def _update_failure(model: nn.Module, step: int, lr: float | None, losses: list[float]) -> Result | None:
    """A fail when optimizer step ``step`` left a parameter non-finite (its gradients were finite)."""
    bad = None if _finite(list(model.parameters())) else _first_bad_parameter(model)
    if bad is None:
        return None
    name, c = param_path(bad[0], model), bad[1]
    return failed(
        f"parameter `{name}` became non-finite in optimizer step {step} although its gradients were finite: "
        f"{describe_counts(c)}",
        measured={"step": step, "stage": "update", "lr": lr, "losses": losses, "tensor": name, "counts": c},
        expected={"nonfinite_values": 0},
        hint=f"The update overflowed (lr={lr}): lower the learning rate, clip gradients with "
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


def _report(stage: str, step: int, found: Located, lr: float | None, measured: dict[str, Any], lr_cmd: str) -> Result:
    when = _when(step, lr)
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


@dataclass(frozen=True)
class Params:
    """Parameters of numerics (`[tool.nncheck.probes.numerics]`)."""

    steps: int = param(
        10,
        fast=3,
        source=(
            'Training steps watched at the user\'s LR (issue 5: "a few steps"). Measured on checks/: every '
            "non-finite setup there is non-finite at init (step 0) except numerics_diverging_sgd.py, which "
            "overflows at step 2; 10 steps leave room for slower divergence, the fast budget keeps 3."
        ),
    )
    batches: int = param(
        4,
        fast=2,
        source=(
            "Batches scanned for NaN / inf and cycled over by the steps: the same first batches the other probes "
            "read (the context caches them), so the data is not read twice. Missing values in 10% of the rows of "
            "one feature (checks/numerics_nan_feature.py) show up in the first batch of 32 with probability 1 - "
            "0.9^32 = 97%."
        ),
    )


@probe("numerics", title="Finite values (NaN / inf)", order=15, params=Params)
def numerics(ctx: Context, p: Params) -> Result:
    """Checks that inputs, outputs, the loss and the gradients stay finite (no NaN / inf) in the first steps.

    What it does:
        Scans the first `batches` batches for NaN / inf (a data error, reported with the batch and the feature
        columns), checks the parameters at init, then trains a fresh copy for `steps` steps at the user's LR,
        checking the outputs, the loss and every gradient at each step and the parameters after each update.
        At the first non-finite value it replays that step under a torch function mode that checks every op
        (forward pre/post hooks name the module running it; node hooks watch the backward): it reports the first
        op that turned finite inputs into NaN / inf, its module (qualified name), the line of your code and the
        step.

    Why is this bad?
        One NaN poisons every weight it reaches in the next update; afterwards the loss reads `nan` and training
        is lost. The usual causes are unguarded math (log or sqrt of non-positive values, a division by a sum
        that can be zero, exp overflow, the gradient of sqrt / norm at 0), missing values in the data, or an
        update that diverges at too high a learning rate (Humbatova et al. ICSE 2020, "missing epsilon";
        Islam et al. FSE 2019; SageMaker Debugger's `ExplodingTensor` rule).

    Thresholds:
        Any non-finite value fails: there is no acceptable amount. `steps` = 10 (3 with --budget fast):
        every non-finite setup in checks/ shows it at init except a diverging SGD, which overflows at step 2.

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
    steps = max(1, p.steps)
    batches = ctx.batches(min(steps, p.batches))
    data_error = _check_data(ctx, batches)
    if data_error is not None:
        return data_error
    model = ctx.fresh_model(train=True)
    bad_param = _first_bad_parameter(model)
    if bad_param is not None:
        name, c = param_path(bad_param[0], model), bad_param[1]
        return failed(
            f"parameter/buffer `{name}` is non-finite at init: {describe_counts(c)}",
            measured={"tensor": name, "counts": c},
            expected={"nonfinite_values": 0},
            hint=f"Initialise `{name}` explicitly, on the module your `model()` returns (e.g. "
            f"`nn.init.zeros_({name})` / `nn.init.normal_({name}, std=0.02)`): "
            "a tensor made with `torch.empty` holds whatever was in memory.",
        )
    opt = ctx.optimizer(model)
    lr = opt.param_groups[0].get("lr")
    lr = float(lr) if isinstance(lr, (int, float)) else None
    params = [p for p in model.parameters() if p.requires_grad]
    losses: list[float] = []
    for step in range(steps):
        ctx.check_time()
        batch = batches[step % len(batches)]
        opt.zero_grad(set_to_none=True)
        rng = rng_state(ctx.device)
        out, y = ctx.forward(model, batch)
        loss = ctx.loss(out, y)
        loss_value, out_sum = _loss_and_output_sum(loss, out)
        stage = ""
        if not math.isfinite(out_sum) and not all(nonfinite_counts(t) is None for t in iter_tensors(out)):
            stage = "output"
        elif not math.isfinite(loss_value):
            stage = "loss"
        else:
            losses.append(loss_value)
            if loss.requires_grad:
                loss.backward()
            if not _finite([p.grad for p in params if p.grad is not None]):
                stage = "gradient"
        if stage:
            # parameters that went non-finite in the previous update are the cause, not this forward pass
            bad = _update_failure(model, step - 1, lr, losses) if step else None
            return bad or _report(
                stage,
                step,
                locate(ctx, model, batch, rng),
                lr,
                {"step": step, "stage": stage, "lr": lr, "losses": losses},
                f"nncheck run {ctx.setup.path} --only learning-rate",
            )
        opt.step()
    bad = _update_failure(model, steps - 1, lr, losses)
    if bad is not None:
        return bad
    return passed(
        f"inputs, outputs, loss and gradients finite over {len(batches)} batch(es) and {steps} step(s) "
        f"at lr={lr if lr is not None else '?'}",
        measured={"steps": steps, "batches": len(batches), "lr": lr, "losses": losses},
        expected={"nonfinite_values": 0},
        series={
            "loss": {
                "title": "Loss over the watched steps (user's LR)",
                "xlabel": "step",
                "ylabel": "loss",
                "xscale": "linear",
                "yscale": "linear",
                "kind": "line",
                "curves": {"your optimizer": {"x": list(range(len(losses))), "y": losses}},
            }
        },
    )
