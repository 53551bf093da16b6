"""eval-mode: `model.eval()` switches off randomness and freezes BatchNorm; `model.train()` switches them back on."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nncheck.kit import Context, Findings, ProbeSkip, Result, code_path, forward_hooks, param, probe
from nncheck.modelgraph import is_batchnorm, is_dropout
from nncheck.tensors import iter_tensors, map_tensors

Call = tuple[str, nn.Module, list[torch.Tensor], list[torch.Tensor]]


@dataclass
class Pass:
    """One forward pass: the output tensors and every module call (inputs and outputs, cloned)."""

    outputs: list[torch.Tensor]
    calls: list[Call]


ModelCall = tuple[tuple[Any, ...], dict[str, Any]]


def model_inputs(ctx: Context, model: nn.Module, batch: Any) -> ModelCall:
    """The arguments the setup's forward passes to the model on ``batch`` (its first call), cloned. Randomness in
    the setup's own forward (the noise and timestep of a diffusion training step, data augmentation) is part of the
    training step, not of the model: eval mode is judged on the model called twice with the same arguments."""
    seen: list[ModelCall] = []

    def capture(mod: nn.Module, args: Any, kwargs: Any, name: str) -> None:
        if not seen:
            clone = lambda t: t.detach().clone()  # noqa: E731
            seen.append((map_tensors(tuple(args), clone), map_tensors(dict(kwargs), clone)))

    with forward_hooks([("", model)], pre=capture, with_kwargs=True), torch.no_grad():
        ctx.forward(model, batch)
    if not seen:  # the setup's forward does not call the model object itself
        raise ProbeSkip("the setup's forward(model, batch) never calls the model")
    return seen[0]


def run_pass(ctx: Context, model: nn.Module, inputs: ModelCall, keep_tensors: bool = False) -> Pass:
    """A forward pass of the model on ``inputs`` (``model_inputs``) without gradient in the model's current mode, with
    hooks on every module (root included) recording the calls; with ``keep_tensors`` also clones of every module's
    inputs and outputs (memory: one forward's activations, so only when randomness must be located)."""
    calls: list[Call] = []

    def hook(mod: nn.Module, args: Any, kwargs: Any, out: Any, name: str) -> None:
        if not keep_tensors:
            calls.append((name, mod, [], []))
            return
        ins = [t.detach().clone() for t in iter_tensors((args, kwargs))]
        calls.append((name, mod, ins, [t.detach().clone() for t in iter_tensors(out)]))

    args, kwargs = inputs
    with forward_hooks(model.named_modules(), hook, with_kwargs=True), torch.no_grad():
        out = model(*args, **kwargs)
    return Pass([t.detach().clone() for t in iter_tensors(out)], calls)


def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """Largest absolute difference relative to max(1, |a|); inf when the structures differ."""
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
        return float("inf")
    worst = 0.0
    for x, y in zip(a, b):
        if not x.is_floating_point():
            worst = max(worst, 0.0 if torch.equal(x, y) else float("inf"))
            continue
        if x.numel():
            scale = max(1.0, float(x.abs().max()))
            worst = max(worst, float((x.double() - y.double()).abs().max()) / scale)
    return worst


def random_sources(a: Pass, b: Pass, tol: float) -> list[tuple[str, nn.Module]]:
    """Modules whose inputs are identical in both passes but whose outputs differ: the randomness is inside them.
    Keeps the innermost ones (a parent is listed only when none of its children is)."""
    found: dict[str, nn.Module] = {}
    for (name, mod, ins1, outs1), (name2, _, ins2, outs2) in zip(a.calls, b.calls):
        if name != name2:
            break
        if max_diff(ins1, ins2) <= tol and max_diff(outs1, outs2) > tol:
            found[name] = mod
    inner = [n for n in found if not any(o != n and (n == "" or o.startswith(n + ".")) for o in found)]
    return [(n, found[n]) for n in inner]


def _bn_modules(model: nn.Module) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    return {
        n: m
        for n, m in model.named_modules()
        if is_batchnorm(m) and m.track_running_stats and m.running_mean is not None
    }


def _bn_state(model: nn.Module) -> dict[str, list[torch.Tensor]]:
    """running_mean and running_var only: num_batches_tracked counts forwards in train mode even when the
    statistics cannot move (momentum=0, checks/em_batchnorm_momentum_zero.py, would look like it updates)."""
    return {n: [m.running_mean.clone(), m.running_var.clone()] for n, m in _bn_modules(model).items()}


def _moved(before: dict[str, list[torch.Tensor]], model: nn.Module) -> dict[str, bool]:
    after = _bn_state(model)
    return {n: any(not torch.equal(x, y) for x, y in zip(before[n], after[n])) for n in before}


def _where(name: str, mod: nn.Module, model: nn.Module) -> str:
    return (
        f"`{code_path(name, model)}` ({type(mod).__name__})"
        if name
        else f"the model's own forward ({type(mod).__name__})"
    )


def eval_call_in_override(model: nn.Module, name: str) -> tuple[str, str, str] | None:
    """(class name, its code path, the offending line) of the nearest ancestor of ``name`` whose ``train()``
    override switches ``name`` (or all its children) to eval mode, found in the override's source."""
    parts = name.split(".")
    for k in range(len(parts) - 1, -1, -1):
        parent_name = ".".join(parts[:k])
        parent = model.get_submodule(parent_name) if parent_name else model
        train = getattr(type(parent), "train", None)
        if train is None or train is nn.Module.train:
            continue
        try:
            lines = inspect.getsource(train).splitlines()
        except (OSError, TypeError):
            continue
        child = parts[k]
        calls = [ln.split("#", 1)[0].strip() for ln in lines]
        hit = next((c for c in calls if child in c and (".eval()" in c or ".train(False)" in c)), None)
        hit = hit or next((c for c in calls if ".eval()" in c or ".train(False)" in c), None)
        if hit:
            return type(parent).__name__, code_path(parent_name, model), hit
    return None


def _static_bn_hint(model: nn.Module, name: str, mod: nn.Module) -> str:
    path = code_path(name, model)
    momentum = getattr(mod, "momentum", None)
    if momentum == 0:
        return (
            f"`{path}` has momentum=0: its running statistics never move, so eval mode normalises with mean 0 / "
            "variance 1. PyTorch momentum = 1 - Keras momentum; use 0.1 (default) or 0.01: "
            f"`nn.{type(mod).__name__}({mod.num_features}, momentum=0.1)`."
        )
    found = eval_call_in_override(model, name) if not mod.training else None
    if found:
        cls, _, line = found
        return (
            f"`{path}` never learns its statistics, so eval mode normalises with mean 0 / variance 1: "
            f"`{cls}.train()` forces it into eval mode with `{line}`. Remove that line, or freeze it on purpose "
            "(load pretrained statistics and call `requires_grad_(False)` on its weight and bias)."
        )
    return (
        f"`{path}` never learns its statistics, so eval mode normalises with mean 0 / variance 1: find what keeps it "
        "from updating (a `train()` override or a forward that calls `.eval()` on it, `momentum=0`, "
        "`track_running_stats` toggled), or freeze it on purpose with `requires_grad_(False)` on its weight and bias."
    )


def _active(calls: list[Call]) -> tuple[list[str], list[str]]:
    """Names of the dropout (p > 0) and running-stats BatchNorm modules that ran."""
    drops, bns = [], []
    for name, mod, _, _ in calls:
        if is_dropout(mod) and mod.p > 0 and name not in drops:
            drops.append(name)
        if is_batchnorm(mod) and mod.track_running_stats and name not in bns:
            bns.append(name)
    return drops, bns


def _frozen(model: nn.Module, name: str) -> bool:
    """A BatchNorm with affine parameters, none of them trainable: frozen on purpose."""
    params = list(model.get_submodule(name).parameters(recurse=False))
    return bool(params) and not any(p.requires_grad for p in params)


# ---------------------------------------------------------------------------------------------- measure
@dataclass
class Measurement:
    """Two eval-mode forwards and one train-mode forward of fresh copies of the model on the first batch."""

    eval_model: nn.Module
    train_model: nn.Module
    stuck: list[tuple[str, nn.Module]]  # modules still in train mode after model.eval()
    eval_diff: float  # between the two eval forwards, relative (see max_diff)
    random_in: list[tuple[str, nn.Module]]  # innermost modules whose output differs on equal inputs (eval mode)
    moved_in_eval: list[str]  # BatchNorms whose running statistics moved in eval mode
    dropout: list[str]  # dropout modules (p > 0) that ran in train mode
    batchnorm: list[str]  # running-stats BatchNorms that ran in train mode
    frozen: list[str]  # ... of which deliberately frozen (eval mode, no trainable affine)
    not_moving: list[str]  # ... of which not frozen, yet their statistics did not move in train mode
    train_diff: float  # train-mode output vs the first eval-mode output


def measure(ctx: Context, p: Params) -> Measurement:
    batch = ctx.batch()
    model = ctx.fresh_model(train=False)
    stuck = [(n, m) for n, m in model.named_modules() if m.training]
    before = _bn_state(model)
    inputs = model_inputs(ctx, model, batch)
    first, second = run_pass(ctx, model, inputs), run_pass(ctx, model, inputs)
    eval_diff = max_diff(first.outputs, second.outputs)
    moved_in_eval = [n for n, moved in _moved(before, model).items() if moved]
    random_in: list[tuple[str, nn.Module]] = []
    if eval_diff > p.same_tol:  # locate the randomness (two more passes, keeping every module's tensors)
        random_in = random_sources(run_pass(ctx, model, inputs, True), run_pass(ctx, model, inputs, True), p.same_tol)

    train_model = ctx.fresh_model(train=True)
    before = _bn_state(train_model)
    train = run_pass(ctx, train_model, inputs)
    drops, bns = _active(train.calls)
    moved = _moved(before, train_model)
    frozen = [n for n in bns if n in moved and not moved[n] and _frozen(train_model, n)]
    not_moving = [n for n in bns if n in moved and not moved[n] and n not in frozen]
    return Measurement(
        eval_model=model,
        train_model=train_model,
        stuck=stuck,
        eval_diff=eval_diff,
        random_in=random_in,
        moved_in_eval=moved_in_eval,
        dropout=drops,
        batchnorm=bns,
        frozen=frozen,
        not_moving=not_moving,
        train_diff=max_diff(train.outputs, first.outputs),
    )


# ---------------------------------------------------------------------------------------------- judge
RANDOM_IN_EVAL = "two forwards in eval mode differ by {diff:.3g} (relative): randomness inside {where}{stuck}"
STUCK_FIX = (
    "Fix it: `{cls}.train()` must call `super().train(mode)` and `return self` (it keeps `{path}` in train mode)."
)
FUNCTIONAL_RANDOM_FIX = (
    "Fix it: in `{cls}.forward`, write `F.dropout(x, p, training=self.training)` (F.dropout defaults to "
    "training=True) or use an `nn.Dropout` module; make any other random op conditional on `self.training`."
)
BN_MOVES_IN_EVAL_HINT = (
    "`{path}` must not update in eval mode: if a `train()` override keeps it in train mode, make it call "
    "`super().train(mode)`; never call `.train()` inside forward or pass `training=True` to `F.batch_norm`."
)
MODE_NOT_REACHING_HINT = (
    "Check for a `train()` / `eval()` override that does not call `super().train(mode)`, a forward that calls "
    "`.eval()` on a submodule, or `F.dropout(..., training=False)` hard-coded."
)


def judge(m: Measurement, p: Params) -> Findings:
    tol = p.same_tol
    model, train_model = m.eval_model, m.train_model
    f = Findings(
        measured={
            "eval_vs_eval_diff": m.eval_diff,
            "still_training_after_eval": [n or "<model>" for n, _ in m.stuck],
            "bn_moved_in_eval": m.moved_in_eval,
        },
        expected={"eval_vs_eval_diff_max": tol, "still_training_after_eval": [], "bn_moved_in_eval": []},
    )

    # 1. eval mode: deterministic, BatchNorm frozen
    if m.eval_diff > tol:
        f.measured["random_in"] = [n or "<model>" for n, _ in m.random_in]
        stuck_names = ", ".join(_where(n, mod, model) for n, mod in m.stuck[:5])
        f.fail(
            RANDOM_IN_EVAL.format(
                diff=m.eval_diff,
                where=", ".join(_where(n, mod, model) for n, mod in m.random_in) or "the model's forward",
                stuck=f"; still in train mode after model.eval(): {stuck_names}" if m.stuck else "",
            ),
            STUCK_FIX.format(cls=type(m.stuck[0][1]).__name__, path=code_path(m.stuck[0][0], model))
            if m.stuck
            else FUNCTIONAL_RANDOM_FIX.format(cls=type(m.random_in[0][1]).__name__ if m.random_in else "Model"),
        )
    if m.moved_in_eval:
        name = m.moved_in_eval[0]
        mod = model.get_submodule(name)
        f.fail(
            f"BatchNorm {_where(name, mod, model)} updates its running statistics in eval mode"
            + (" (it is still in train mode after model.eval())" if mod.training else ""),
            BN_MOVES_IN_EVAL_HINT.format(path=code_path(name, model)),
        )

    # 2. train mode: BatchNorm statistics move, and train differs from eval when dropout / BatchNorm run
    f.measured.update({"dropout": m.dropout, "batchnorm": m.batchnorm, "bn_static_in_train": m.not_moving})
    zero_momentum = [n for n in m.not_moving if getattr(train_model.get_submodule(n), "momentum", None) == 0]
    if zero_momentum:
        f.measured["bn_momentum_zero"] = zero_momentum
    f.expected["bn_static_in_train"] = []
    if m.frozen:
        paths = ", ".join(f"`{code_path(n, train_model)}`" for n in m.frozen)
        f.note(f"BatchNorm {paths} is frozen (eval mode, no trainable affine).")
    if m.not_moving:
        name = m.not_moving[0]
        mod = train_model.get_submodule(name)
        f.fail(
            f"BatchNorm {_where(name, mod, train_model)} does not update its running statistics in train mode"
            + (" (it stays in eval mode after model.train())" if not mod.training else "")
            + (" (momentum=0)" if getattr(mod, "momentum", None) == 0 else ""),
            _static_bn_hint(train_model, name, mod),
        )
    f.measured["train_vs_eval_diff"] = m.train_diff
    switching = m.dropout + [n for n in m.batchnorm if n not in m.frozen]  # must behave differently in train mode
    if switching:
        f.expected["train_vs_eval_diff_min"] = tol
        if m.train_diff <= tol and not m.not_moving:
            layers = ", ".join(f"`{code_path(n, train_model)}`" for n in switching[:6])
            f.warn(
                f"train and eval outputs are identical (diff {m.train_diff:.1e}) although {layers} run: the mode "
                "does not reach them",
                MODE_NOT_REACHING_HINT,
            )
    else:
        f.note(
            "no dropout module or (unfrozen) running-stats BatchNorm runs"
            + (
                f"; train and eval outputs still differ by {m.train_diff:.3g} (functional dropout or other "
                "mode-dependent code in forward)."
                if m.train_diff > tol
                else ": train and eval mode compute the same function."
            )
        )
    return f


def _summary(m: Measurement) -> str:
    bns = m.batchnorm
    return f"eval forwards identical; train vs eval differ by {m.train_diff:.3g}" + (
        f"; {len(bns)} BatchNorm layer(s) update their statistics in train mode only" if bns else ""
    )


# ---------------------------------------------------------------------------------------------- probe
@dataclass(frozen=True)
class Params:
    """Parameters of eval-mode (`[tool.nncheck.probes.eval-mode]`)."""

    # Deterministic kernels repeat a forward bit for bit on CPU; the margin leaves room for GPU reductions.
    # Measured (seeds 0-2, fast budget): the correct setups with dropout or BatchNorm (examples/functional.py,
    # examples/cnn_bn.py, checks/ob_label_smoothing_ok.py, checks/lo_residual_dropout_bn_ok.py) repeat their eval
    # forward exactly (0.0) and differ between train and eval mode by 0.26-0.76.
    same_tol: float = param(
        1e-06,
        source=(
            "Float32 rounding margin: CPU forwards repeat bit for bit (0.0 on every correct setup measured); "
            "dropout left on in eval mode makes two eval forwards differ by 0.69-0.97 (relative) in "
            "checks/em_functional_dropout_in_eval.py and checks/em_train_override_never_evals.py, seeds 0-2."
        ),
    )


@probe("eval-mode", title="Train / eval mode switching", order=100, params=Params)
def eval_mode(ctx: Context, p: Params) -> Result:
    """Checks that `model.eval()` makes the forward deterministic and freezes BatchNorm, and `model.train()` undoes it.

    What it does:
        On fresh copies of the model and the first batch (no gradient), the model called directly on the arguments
        the setup's forward passes it (captured once: randomness of the setup's own training step, such as a
        diffusion model's noise and timestep, is not the model's):
        1. eval mode, two forwards: the outputs must be identical, else fail, naming the innermost module whose
           inputs were identical but whose outputs differed (where the randomness lives) and any module still in
           train mode after `model.eval()`;
        2. BatchNorm running statistics (running_mean / running_var; num_batches_tracked counts up even when they
           cannot move) must stay fixed in eval mode and move in train mode, else fail naming the module, and
           `momentum=0` or the `.eval()` call of a `train()` override when that is the cause (BatchNorm layers
           whose affine parameters are frozen are accepted as deliberately frozen);
        3. a model that runs dropout or BatchNorm must give different outputs in train and eval mode, else warn
           (the mode does not reach those layers). A model without either passes with a note, after check 1.

    Why is this bad?
        Randomness left on in eval mode makes validation metrics noisy and predictions non-reproducible: typical
        causes are `F.dropout(x, p)` without `training=self.training` (it defaults to training=True) and a
        submodule whose `train()` override does not pass the mode on. A BatchNorm that stays in train mode keeps
        updating its running statistics on evaluation data and normalises each eval batch by its own statistics;
        one stuck in eval mode (or with momentum=0: PyTorch momentum = 1 - Keras momentum) never learns its
        statistics. (Humbatova et al., ICSE 2020: "missing / wrong
        train-eval mode switch"; PyTorch docs of `F.dropout` and `Module.train`.)

    Thresholds:
        {same_tol}: outputs are identical when max |a - b| <= same_tol x max(1, max |a|).

    How to fix:
        Use `nn.Dropout` modules, or write `F.dropout(x, p, training=self.training)`; a `train(self, mode=True)`
        override must call `super().train(mode)` and `return self`; never call `.train()` / `.eval()` inside
        forward.

    Example:
        `h = F.dropout(h, 0.5)` in `Block.forward`: fail, two eval forwards differ by 0.84, the randomness is
        inside `model.blocks[0]` (Block); hint: `F.dropout(h, 0.5, training=self.training)`.
    """
    m = measure(ctx, p)
    return judge(m, p).result(_summary(m))
