"""gradient-flow: every trainable parameter gets a gradient, is in the optimizer and moves; no module or tensor
hides from `model.parameters()`; gradients neither vanish nor explode across depth at init."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nncheck.context import Context
from nncheck.modelgraph import code_path
from nncheck.probes._blockers import Blocker, find_blockers
from nncheck.probes._locate import nonfinite_counts, param_path
from nncheck.registry import param, probe
from nncheck.report import Result, failed, passed, warned
from nncheck.setup import Batch

# Batches the steps cycle over: the first ones, which the earlier probes already read (the context caches them).
BATCHES = 2
# Names listed in a message at most (all of them are in `measured`).
MAX_LISTED = 6

# Attributes every nn.Module has; the rest of a module's __dict__ is the user's.
_MODULE_INTERNALS = frozenset(vars(nn.Module()))
# Containers searched for hidden modules / tensors, and how deep.
_MAX_DEPTH = 3


@dataclass
class Hidden:
    """A module or tensor with trainable values that the model's parameters() does not see."""

    path: str  # e.g. "model.blocks[1]", "model.encoder.scale"
    kind: str  # "module" | "tensor"
    type_name: str
    tensors: list[torch.Tensor]
    container: str = ""  # the attribute that holds it: "model.blocks"

    def got_gradient(self) -> bool:
        return any(t.grad is not None and bool(t.grad.detach().ne(0).any()) for t in self.tensors)

    def fix(self) -> str:
        base = self.container.rsplit(".", 1)[-1]
        attr = self.path[len(self.container) - len(base) :]
        if self.kind == "tensor":
            return f"self.{base} = nn.Parameter(...)"
        if "['" in attr or '["' in attr:
            return f"self.{base} = nn.ModuleDict({{...}})"
        return f"self.{base} = nn.ModuleList([...])"


def _walk(obj: Any, path: str, depth: int) -> list[tuple[str, Any]]:
    """(path, value) for every module / tensor inside nested lists, tuples, dicts and sets."""
    if isinstance(obj, (nn.Module, torch.Tensor)):
        return [(path, obj)]
    if depth >= _MAX_DEPTH:
        return []
    out: list[tuple[str, Any]] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _walk(v, f"{path}[{k!r}]", depth + 1)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for i, v in enumerate(obj):
            out += _walk(v, f"{path}[{i}]", depth + 1)
    return out


def hidden_trainables(model: nn.Module) -> list[Hidden]:
    """Modules kept in plain Python containers and requires_grad tensors that are plain attributes (not
    nn.Parameter), whose trainable values ``model.parameters()`` does not return."""
    param_ids = {id(p) for p in model.parameters()}
    module_ids = {id(m) for m in model.modules()}
    found: list[Hidden] = []
    seen: set[int] = set()
    for mname, m in model.named_modules():
        for attr, value in vars(m).items():
            if attr in _MODULE_INTERNALS:
                continue
            container = f"{code_path(mname, model)}.{attr}"
            for path, obj in _walk(value, container, 0):
                if id(obj) in seen or id(obj) in module_ids or id(obj) in param_ids:
                    continue
                seen.add(id(obj))
                if isinstance(obj, nn.Module):
                    params = [p for p in obj.parameters() if p.requires_grad and id(p) not in param_ids]
                    if params:
                        found.append(Hidden(path, "module", type(obj).__name__, params, container))
                elif obj.requires_grad and obj.is_leaf:
                    found.append(Hidden(path, "tensor", f"Tensor{tuple(obj.shape)}", [obj], container))
    return found


def _by_container(hidden: list[Hidden]) -> dict[str, list[Hidden]]:
    """Hidden entries grouped by the attribute that holds them (``layers[0]``, ``layers[1]`` -> ``layers``)."""
    groups: dict[str, list[Hidden]] = {}
    for h in hidden:
        groups.setdefault(h.container, []).append(h)
    return groups


def _container(h: Hidden) -> str:
    """'dict' or 'list / tuple', from the first subscript of a hidden entry's path."""
    sub = h.path[len(h.container) :]
    return "dict" if sub.startswith(("['", '["')) else "list / tuple"


def _owners(model: nn.Module) -> dict[str, str]:
    """Parameter name -> qualified name of the module that owns it."""
    return {
        (f"{m}." if m else "") + n: m
        for m, mod in model.named_modules()
        for n, _ in mod.named_parameters(recurse=False)
    }


def _zero_init(model: nn.Module) -> set[str]:
    """Modules whose own parameters are all zero at init (zero-init output layers, ReZero gates): their
    ||grad|| / ||weight|| is meaningless (0 or huge) and stays out of the depth comparison."""
    return {
        name
        for name, m in model.named_modules()
        if any(True for _ in m.parameters(recurse=False)) and all(not p.any() for p in m.parameters(recurse=False))
    }


def _module_table(model: nn.Module, order: list[str], zero_init: set[str]) -> list[dict[str, Any]]:
    """Per module (in execution order): ||grad|| and ||param|| over its own parameters, and their ratio.
    Embedding rows that got no gradient (tokens absent from the batch) are left out of ||param||."""
    mods = dict(model.named_modules())
    rows = []
    for name in order:
        m = mods[name]
        g2 = w2 = 0.0
        for p in m.parameters(recurse=False):
            if not p.requires_grad or p.grad is None:
                continue
            g, w = p.grad.detach().float(), p.detach().float()
            if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) and g.dim() == 2:
                used = g.ne(0).any(dim=1)
                g, w = g[used], w[used]
            g2 += float(g.pow(2).sum())
            w2 += float(w.pow(2).sum())
        if w2 == 0.0 and g2 == 0.0:
            continue
        gn, wn = math.sqrt(g2), math.sqrt(w2)
        ratio = gn / wn if wn > 0 and name not in zero_init else None
        rows.append(
            {
                "module": name or "<model>",
                "path": code_path(name, model),
                "type": type(m).__name__,
                "grad_norm": gn,
                "param_norm": wn,
                "ratio": ratio,
            }
        )
    return rows


def _record_order(model: nn.Module) -> tuple[list[str], list[Any]]:
    """Register hooks that append each parameterised module's name the first time it runs."""
    order: list[str] = []
    handles = []
    for name, m in model.named_modules():
        if any(True for _ in m.parameters(recurse=False)):

            def hook(mod: nn.Module, inp: Any, out: Any, name: str = name) -> None:
                if name not in order:
                    order.append(name)

            handles.append(m.register_forward_hook(hook))
    return order, handles


def _why_no_grad(ctx: Context, model: nn.Module, modules: list[str], batch: Batch) -> dict[str, str]:
    """For modules whose parameters got no gradient: was it called, and did its output carry a graph?"""
    mods = dict(model.named_modules())
    seen: dict[str, bool] = {}
    handles = []
    for name in modules:

        def hook(mod: nn.Module, inp: Any, out: Any, name: str = name) -> None:
            outs = [t for _, t in _walk(out, "", 0) if isinstance(t, torch.Tensor)]
            seen[name] = seen.get(name, False) or any(t.requires_grad for t in outs)

        handles.append(mods[name].register_forward_hook(hook))
    try:
        with torch.enable_grad():
            ctx.forward(model, batch)
    finally:
        for h in handles:
            h.remove()
    causes = {}
    for name in modules:
        label = f"`{code_path(name, model)}`" if name else "the model"
        if not name:
            causes[name] = (
                "parameters of the model itself get no gradient: a functional weight is used through `.data` / "
                "`.detach()`, under `torch.no_grad()`, or not at all"
            )
        elif name not in seen:
            causes[name] = f"{label} is never called in forward() (an unused layer)"
        elif not seen[name]:
            causes[name] = (
                f"{label} runs but its output carries no graph: it is called under `torch.no_grad()` "
                "(or its weights are used through `.data` / `.detach()`)"
            )
        else:
            causes[name] = (
                f"the graph is cut after {label}: its output (or a value computed from it) is `.detach()`ed, "
                "taken through `.data` / `.item()` / numpy, or cast to an integer before the loss"
            )
    return causes


def _frozen_output_layer(ctx: Context, model: nn.Module, batch: Batch) -> tuple[str, str] | None:
    """(message, hint) when the output layer is entirely frozen while earlier modules train: an inverted freezing
    condition (meant: freeze the backbone, train the head). A frozen backbone with a trainable head, and a head
    tied to a trainable embedding, pass."""
    found = ctx.output_layer(model, batch)
    if found is None:
        return None
    name, layer = found
    own = list(layer.parameters(recurse=False))
    if not own or any(t.requires_grad for t in own):
        return None
    head_ids = {id(t) for t in own}
    training = [n for n, t in model.named_parameters() if t.requires_grad and id(t) not in head_ids]
    if not training:
        return None
    path = code_path(name, model)
    return (
        f"the output layer `{path}` ({type(layer).__name__}) is frozen (requires_grad=False) while "
        f"{len(training)} earlier parameter(s) train ({_listed([param_path(n, model) for n in training])}): the "
        "freezing is probably inverted (meant: freeze the backbone, train the head)",
        f"train the output layer: `for p in {path}.parameters(): p.requires_grad_(True)` on the module your "
        "`model()` returns, and check the freezing condition (e.g. `if not name.startswith(head_prefix): "
        "p.requires_grad_(False)`); build the optimizer from the parameters that require grad after freezing. "
        "A fixed classifier on purpose (Hoffer et al. 2018): skip this probe for the setup",
    )


def _blocker_for(ctx: Context, owner: str, batch: Batch) -> Blocker | None:
    """The first module of a fresh copy (train mode) that zeroes its whole output on ``batch`` (a dead ReLU, a
    dropout with p >= 1, an embedding fed only padding) and runs after ``owner``: the cause of its zero gradient."""
    blockers = find_blockers(ctx, ctx.fresh_model(train=True), batch)
    return next((b for b in blockers if b.explains(owner)), None)


def _listed(names: list[str]) -> str:
    shown = ", ".join(f"`{n}`" for n in names[:MAX_LISTED])
    return shown + (f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


@dataclass(frozen=True)
class Params:
    """Parameters of gradient-flow (`[tool.nncheck.probes.gradient-flow]`)."""

    steps: int = param(
        3,
        fast=2,
        source=(
            "Training steps at most: a parameter must receive a non-zero gradient within them. One step is enough "
            "unless something is zero-initialised (a zero output layer, ReZero's alpha = 0): then the next step "
            "sees the gradient."
        ),
    )
    vanish_ratio: float = param(
        0.0001,
        source=(
            "Vanishing gradients: the first layer's ||grad|| / ||weight|| (weight and bias of one module "
            "together, DESIGN.md §6) below 1e-4 x the largest module's (issue 5). Measured at init: a 20-layer "
            "sigmoid MLP (checks/ gradient_flow_deep_sigmoid.py) gives 4e-17; the correct setups (examples/ + "
            "checks/*_ok.py, seeds 0-2) stay at or above 1.9e-3 (examples/residual_cnn.py; embedding_bag 2.5e-3, "
            "tiny_lm 8.5e-3, the rest >= 0.05)."
        ),
    )
    explode_ratio: float = param(
        1000.0,
        source=(
            "Exploding gradients: the first layer's ratio above 1e3 x the output layer's (issue 5, symmetric to "
            "vanishing: gradients growing geometrically towards the input), or any non-finite gradient. Correct "
            "setups stay <= 5.7 (examples/regression.py; all others <= 1)."
        ),
    )


@probe("gradient-flow", title="Gradient flow", order=25, params=Params)
def gradient_flow(ctx: Context, p: Params) -> Result:
    """Checks that every trainable parameter receives a gradient, is in the optimizer and is updated.

    What it does:
        Searches the module tree for modules kept in plain Python lists / dicts / tuples and for tensors with
        `requires_grad=True` stored as plain attributes: their values train in forward but `model.parameters()`
        (hence the optimizer, `.to(device)`, `state_dict()`) never sees them. Then trains a fresh copy for up to
        `steps` steps with the user's optimizer (stopping once every parameter had a non-zero gradient) and checks
        that each parameter with `requires_grad` got a gradient that is not None and not all zero, that it is
        in the optimizer's param_groups, and that it changed. The gradient norm relative to the parameter
        norm, per module (weight and bias together), at init gives the vanishing / exploding check.
        Frozen parameters (`requires_grad=False`) are listed.

    Why is this bad?
        A parameter without gradient (a `.detach()`ed branch, `torch.no_grad()` or `.data` in forward, an
        integer cast, an unused layer) or outside the optimizer (built before a layer was added, built on a
        subset, `parameters()` overridden) keeps its random init forever: the model trains, only worse, and
        nothing errors. Gradients that shrink by orders of magnitude towards the input (deep sigmoid / tanh
        stacks) leave the first layers untrained (Hochreiter 1991; Glorot & Bengio 2010; Humbatova et al. ICSE
        2020 "vanishing / exploding gradients"; SageMaker Debugger's VanishingGradient rule).

    Thresholds:
        Any parameter with a None or all-zero gradient over `steps` steps, outside the optimizer, or hidden
        from `parameters()` while it receives a gradient: fail. Vanishing: the first module's ||g||/||w|| below
        vanish_ratio (1e-4) x the largest module's; exploding: above explode_ratio (1e3) x the output layer's, or
        non-finite gradients: warn. Measured first/largest: a 20-layer sigmoid MLP 4e-17, correct setups >= 1.9e-3;
        first/output: correct setups <= 5.7.

    How to fix:
        Remove the `.detach()` / `torch.no_grad()` / `.data` from forward; keep sub-modules in `nn.ModuleList`
        / `nn.ModuleDict` and extra tensors in `nn.Parameter`; build the optimizer last, from
        `model.parameters()`; freeze on purpose with `p.requires_grad_(False)`. For vanishing gradients use ReLU
        / GELU with He init, normalisation layers or residual connections.

    Example:
        `self.hidden = [nn.Linear(64, 64) for _ in range(2)]`: fail, "`hidden[0]`, `hidden[1]` (Linear) are kept
        in a plain Python list / tuple: they get gradients but model.parameters() (and so the optimizer,
        state_dict() and .to(device)) does not see them"; hint "register `hidden`: `self.hidden =
        nn.ModuleList([...])`".
    """
    steps = max(1, p.steps)
    batches = ctx.batches(min(steps, BATCHES))
    model = ctx.fresh_model(train=True)
    named = list(model.named_parameters())
    trainable = [(n, t) for n, t in named if t.requires_grad]
    frozen = [n for n, t in named if not t.requires_grad]
    hidden = hidden_trainables(model)
    if not trainable and not hidden:
        out = ctx.output_layer(model, batches[0])
        head = code_path(out[0], model) if out else "model"
        return failed(
            "the model has no trainable parameter" + (f" ({len(frozen)} frozen)" if frozen else ""),
            measured={"frozen": frozen},
            expected={"trainable_min": 1},
            hint=f"Unfreeze what should train, on the module your `model()` returns: `for p in {head}.parameters(): "
            "p.requires_grad_(True)` (the output layer at least), and build the optimizer from those parameters.",
        )
    opt = ctx.optimizer(model)
    in_opt = {id(t) for g in opt.param_groups for t in g["params"]}
    lr_of = {id(t): g.get("lr") for g in opt.param_groups for t in g["params"]}
    before = {n: t.detach().clone() for n, t in trainable}
    zero_init = _zero_init(model)

    def pp(names: list[str]) -> list[str]:
        return [param_path(n, model) for n in names]

    got_grad: set[str] = set()
    nonzero: set[str] = set()
    nonfinite: set[str] = set()
    order, handles = _record_order(model)
    table: list[dict[str, Any]] = []
    steps_run = 0
    try:
        for step in range(steps):
            ctx.check_time()
            opt.zero_grad(set_to_none=True)
            loss = ctx.batch_loss(model, batches[step % len(batches)])
            if step == 0:
                for h in handles:
                    h.remove()
            if loss.requires_grad:  # else no parameter gets a gradient: reported below
                loss.backward()
            steps_run += 1
            for n, t in trainable:
                if t.grad is not None:
                    got_grad.add(n)
                    if bool(t.grad.detach().ne(0).any()):
                        nonzero.add(n)
                    if nonfinite_counts(t.grad) is not None:
                        nonfinite.add(n)
            rows = _module_table(model, order, zero_init)
            # the table at init, unless a zero-initialised module blocked the gradient at step 0
            if not table or any(r["grad_norm"] == 0 for r in table):
                table = rows
            opt.step()
            if len(nonzero) == len(trainable):
                break
    finally:
        for h in handles:
            h.remove()
    changed = {n for n, t in trainable if not torch.equal(before[n], t.detach())}
    hidden_trained = [h for h in hidden if h.got_gradient()]
    hidden_idle = [h for h in hidden if not h.got_gradient()]
    not_in_opt = [n for n, t in trainable if id(t) not in in_opt]
    no_grad = [n for n, _ in trainable if n not in got_grad]
    zero_grad = [n for n, _ in trainable if n in got_grad and n not in nonzero]
    stuck = [n for n, t in trainable if n in nonzero and id(t) in in_opt and n not in changed]

    measured: dict[str, Any] = {
        "trainable": len(trainable),
        "frozen": frozen,
        "steps": steps_run,
        "hidden": [
            {"attribute": h.path, "kind": h.kind, "type": h.type_name, "gets_gradient": h.got_gradient()}
            for h in hidden
        ],
        "not_in_optimizer": not_in_opt,
        "no_gradient": no_grad,
        "zero_gradient": zero_grad,
        "unchanged_after_step": stuck,
        "nonfinite_gradient": sorted(nonfinite),
        "modules": table,
    }
    expected = {
        "hidden": [],
        "not_in_optimizer": [],
        "no_gradient": [],
        "zero_gradient": [],
        "first_over_max_ratio_min": p.vanish_ratio,
        "first_over_last_ratio_max": p.explode_ratio,
    }
    series = _series(table)
    notes = [f"frozen (requires_grad=False): {_listed(pp(frozen))}"] if frozen else []
    if hidden_idle:
        notes.append(
            "not seen by model.parameters() and received no gradient (fine for a frozen helper such as a teacher "
            f"model; freeze it with requires_grad_(False)): {_listed([h.path for h in hidden_idle])}"
        )
    kw = {"measured": measured, "expected": expected, "series": series, "notes": notes}

    problems: list[str] = []
    hints: list[str] = []
    for path, group in _by_container(hidden_trained).items():
        h = group[0]
        names = _listed([g.path for g in group])
        types = ", ".join(sorted({g.type_name for g in group}))
        if h.kind == "module":
            where = f"{'is' if len(group) == 1 else 'are'} kept in a plain Python {_container(h)}"
        else:
            where = "is a plain tensor attribute with requires_grad=True, not an nn.Parameter"
        problems.append(
            f"{names} ({types}) {where}: {'it gets' if len(group) == 1 else 'they get'} gradients but "
            "model.parameters() (and so the optimizer, state_dict() and .to(device)) does not see "
            f"{'it' if len(group) == 1 else 'them'}"
        )
        hints.append(f"register `{path}`: `{h.fix()}`")
    if not_in_opt:
        problems.append(
            f"{len(not_in_opt)} trainable parameter(s) are not in the optimizer: {_listed(pp(not_in_opt))} "
            "(they get gradients but never move)"
        )
        hints.append(
            "build the optimizer after the model is complete and from all of it: "
            "`optimizer = torch.optim.Adam(model.parameters(), lr=...)` (not a subset such as `list(params)[:2]`, "
            "and do not override `parameters()`); to freeze on purpose, call `p.requires_grad_(False)`"
        )
    if no_grad or zero_grad:
        owners = _owners(model)
        if no_grad:
            mods = list(dict.fromkeys(owners.get(n, "") for n in no_grad))
            causes = _why_no_grad(ctx, model, mods, batches[0])
            problems.append(
                f"{len(no_grad)} parameter(s) get no gradient (grad is None after {steps_run} step(s)): "
                f"{_listed(pp(no_grad))}; {causes[mods[0]]}"
            )
            hints.append(
                f"make `{code_path(mods[0], model)}` part of the graph: remove `.detach()` / `.data` / "
                "`with torch.no_grad():` around it in forward(), keep float tensors (no `.long()` / `.round()` / "
                "`.argmax()` on the way to the loss); if it is unused on purpose, delete it or freeze it"
            )
        if zero_grad:
            owner = owners.get(zero_grad[0], "")
            blocker = _blocker_for(ctx, owner, batches[0])
            head = f"{len(zero_grad)} parameter(s) get an all-zero gradient on {steps_run} batch(es): "
            if blocker is not None:
                problems.append(f"{head}{_listed(pp(zero_grad))}: {blocker.cause}")
                hints.append(f"{blocker.fix}; then `{code_path(owner, model)}` gets gradients again")
            else:
                problems.append(
                    f"{head}{_listed(pp(zero_grad))} (its input is all zero, a piecewise-constant op such as round / "
                    "sign / argmax / a comparison, or a multiplication by zero)"
                )
                hints.append(
                    f"find what zeroes the gradient after `{code_path(owner, model)}`: replace round / sign / "
                    "argmax with a differentiable op (e.g. a straight-through estimator `x + (x.round() - x).detach()`)"
                )
    if problems:
        more = f" (+{len(problems) - 1} more problem(s), see measured)" if len(problems) > 1 else ""
        return failed(problems[0] + more, hint="; ".join(hints), **kw)

    cmd = f"nncheck run {ctx.setup.path} --only numerics"
    warnings, whints = _depth_warnings(
        table, {param_path(n, model) for n in nonfinite}, p.vanish_ratio, p.explode_ratio, cmd
    )
    frozen_head = _frozen_output_layer(ctx, model, batches[0])
    if frozen_head is not None:
        warnings.insert(0, frozen_head[0])
        whints.insert(0, frozen_head[1])
    if stuck:
        lrs = {lr_of.get(id(t)) for n, t in trainable if n in stuck}
        text = (
            f"{len(stuck)} parameter(s) in the optimizer with non-zero gradients did not change after a step: "
            f"{_listed(pp(stuck))} (lr {', '.join(str(lr) for lr in sorted(lrs, key=str))})"
        )
        if 0 in lrs or 0.0 in lrs:
            warnings.append(text)
            whints.append("their param group has lr=0: give it a learning rate, or freeze them on purpose")
        else:
            notes.append(text + ": the update is below float precision (tiny gradients)")
    if warnings:
        return warned(
            warnings[0] + (f" (+{len(warnings) - 1} more)" if len(warnings) > 1 else ""), hint="; ".join(whints), **kw
        )
    first = table[0] if table else None
    summary = f"; first module ||g||/||w|| = {first['ratio']:.3g}" if first and first["ratio"] is not None else ""
    frozen_txt = f", {len(frozen)} frozen" if frozen else ""
    return passed(
        f"all {len(trainable)} trainable parameters get gradients, are in the optimizer and move{frozen_txt}{summary}",
        **kw,
    )


def _depth_warnings(
    table: list[dict[str, Any]], nonfinite: set[str], vanish: float, explode: float, numerics_cmd: str
) -> tuple[list[str], list[str]]:
    """Vanishing / exploding gradients across depth from the per-module table."""
    warnings: list[str] = []
    hints: list[str] = []
    if nonfinite:
        warnings.append(f"non-finite gradients at init in {_listed(sorted(nonfinite))} (exploding)")
        hints.append(f"run `{numerics_cmd}` to find the op that produces them")
    rated = [r for r in table if r["ratio"] is not None]
    if len(rated) < 2:
        return warnings, hints
    first, last = rated[0], rated[-1]
    top = max(rated, key=lambda r: r["ratio"])
    if top["ratio"] > 0 and first["ratio"] < vanish * top["ratio"]:
        warnings.append(
            f"vanishing gradients at init: ||grad||/||weight|| of the first module `{first['path']}` "
            f"({first['type']}) is {first['ratio']:.3g}, {first['ratio'] / top['ratio']:.2g} x the largest "
            f"(`{top['path']}`: {top['ratio']:.3g}); per-module ratios in measured['modules']"
        )
        hints.append(
            "the early layers will barely train: replace sigmoid / tanh hidden activations with ReLU / GELU and He "
            "init (`nn.init.kaiming_normal_(layer.weight, nonlinearity='relu')`), add BatchNorm / LayerNorm, or "
            "residual connections; make the network shallower"
        )
    elif last["ratio"] > 0 and first["ratio"] > explode * last["ratio"]:
        warnings.append(
            f"exploding gradients at init: ||grad||/||weight|| of the first module `{first['path']}` is "
            f"{first['ratio']:.3g}, {first['ratio'] / last['ratio']:.3g} x the output module's "
            f"(`{last['path']}`: {last['ratio']:.3g})"
        )
        hints.append(
            "gradients grow towards the input: lower the init scale (`nn.init.xavier_uniform_` / "
            "`kaiming_normal_`), add normalisation layers, clip with `torch.nn.utils.clip_grad_norm_(params, 1.0)`"
        )
    return warnings, hints


def _series(table: list[dict[str, Any]]) -> dict[str, Any]:
    rated = [r for r in table if r["ratio"] is not None]
    if not rated:
        return {}
    return {
        "grad_ratio": {
            "title": "Gradient norm / parameter norm per module at init",
            "xlabel": "module (execution order)",
            "ylabel": "||grad|| / ||weight||",
            "xscale": "linear",
            "yscale": "log",
            "kind": "bar",
            "curves": {"at init": {"x": [r["module"] for r in rated], "y": [r["ratio"] for r in rated]}},
        }
    }
