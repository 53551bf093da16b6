"""gradient-flow: every trainable parameter gets a gradient, is in the optimizer and moves; no module or tensor
hides from `model.parameters()`; gradients neither vanish nor explode across depth at init."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nncheck.kit import Context, Findings, Result, bar_plot, code_path, forward_hooks, param, probe
from nncheck.probes._blockers import Blocker, find_blockers
from nncheck.probes._locate import param_path
from nncheck.setup import Batch
from nncheck.trace import Trace

# Names listed in a message at most (all of them are in `measured`).
MAX_LISTED = 6

# Attributes every nn.Module has; the rest of a module's __dict__ is the user's.
_MODULE_INTERNALS = frozenset(vars(nn.Module()))
# Containers searched for hidden modules / tensors, and how deep.
_MAX_DEPTH = 3


@dataclass(frozen=True)
class Params:
    """Parameters of gradient-flow (`[tool.nncheck.probes.gradient-flow]`)."""

    steps: int = param(
        3,
        fast=2,
        source=(
            "Training steps at most. One step shows every gradient unless a layer is zero-initialised (a zero output "
            "layer; ReZero's alpha = 0, Bachlechner et al. 2020): what lies before it gets a gradient only after "
            "the first update."
        ),
    )
    # ||grad|| / ||weight|| per module (weight and bias together), at init, first module over the largest.
    vanish_ratio: float = param(
        1e-4,
        source=(
            "Vanishing gradients (Hochreiter 1991; Glorot & Bengio 2010). Measured first / largest ratio at init "
            "(seeds 0-2): checks/gradient_flow_deep_sigmoid.py (a 20-layer sigmoid MLP) 3e-17 to 4e-17, "
            "checks/act_vanishing_tiny_init.py 3e-19 to 4e-19; the correct setups of checks/ and examples/ >= 1.9e-3 "
            "(checks/llb_seq2seq_special_tokens_ok.py; checks/ok_seq2seq_gru_teacher_forcing.py and "
            "checks/data_autoencoder_target_is_input_ok.py 2.1e-3, examples/embedding_bag.py 2.5e-3, "
            "examples/tiny_lm.py 8.5e-3, the others >= 0.013)."
        ),
    )
    # first module over the output module: gradients growing geometrically towards the input.
    explode_ratio: float = param(
        1e3,
        source=(
            "Exploding gradients, symmetric to vanish_ratio (Pascanu et al. 2013, 'On the difficulty of training "
            "recurrent neural networks'). Measured first / output ratio at init on the correct setups of checks/ "
            "and examples/ (seeds 0-2): <= 5.8 (examples/regression.py; all others <= 0.6)."
        ),
    )


# ------------------------------------------------------------------------------------------------ the model's parts
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


def _has_own_params(m: nn.Module) -> bool:
    return any(True for _ in m.parameters(recurse=False))


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
        if _has_own_params(m) and all(not p.any() for p in m.parameters(recurse=False))
    }


def _module_table(model: nn.Module, trace: Trace, zero_init: set[str]) -> list[dict[str, Any]]:
    """Per module with parameters, in the order the first forward ran them: ||grad|| and ||param|| at init (the
    trace's step 0, or step 1 when a zero-initialised module blocked some gradient at step 0) and their ratio."""
    tables = trace.module_grads
    if not tables:
        return []
    table = tables[0]
    if len(tables) > 1 and any(table.get(n) is not None and table[n].grad_norm == 0 for n in trace.module_order):
        table = tables[1]
    mods = dict(model.named_modules())
    rows = []
    for name in trace.module_order:
        g = table.get(name)
        if g is None:
            continue
        ratio = g.grad_norm / g.weight_norm if g.weight_norm > 0 and name not in zero_init else None
        rows.append(
            {
                "module": name or "<model>",
                "path": code_path(name, model),
                "type": type(mods[name]).__name__,
                "grad_norm": g.grad_norm,
                "param_norm": g.weight_norm,
                "ratio": ratio,
            }
        )
    return rows


# ------------------------------------------------------------------------------------------------ diagnoses
def _why_no_grad(ctx: Context, model: nn.Module, module: str, batch: Batch) -> str:
    """Why ``module``'s parameters got no gradient (a key of NO_GRAD_CAUSES): the model's own parameters, a module
    never called, a module whose output carries no graph, or a graph cut after it."""
    graph: list[bool] = []  # per call of the module: does its output carry a graph?

    def hook(mod: nn.Module, inp: Any, out: Any, name: str) -> None:
        graph.append(any(t.requires_grad for _, t in _walk(out, "", 0) if isinstance(t, torch.Tensor)))

    with forward_hooks([(module, dict(model.named_modules())[module])], hook), torch.enable_grad():
        ctx.forward(model, batch)
    if not module:
        return "own"
    return "unused" if not graph else "no-graph" if not any(graph) else "cut"


def _blocker_for(ctx: Context, owner: str, batch: Batch) -> Blocker | None:
    """The first module of a fresh copy (train mode) that zeroes its whole output on ``batch`` (a dead ReLU, a
    dropout with p >= 1, an embedding fed only padding) and runs after ``owner``: the cause of its zero gradient."""
    blockers = find_blockers(ctx, ctx.fresh_model(train=True), batch)
    return next((b for b in blockers if b.explains(owner)), None)


@dataclass
class FrozenHead:
    """The output layer, entirely frozen while earlier parameters train."""

    path: str
    type_name: str
    training: list[str]  # the parameters that train, as Python paths


def _frozen_head(ctx: Context, model: nn.Module, batch: Batch) -> FrozenHead | None:
    """The output layer when all its own parameters are frozen while others train (a head tied to a trainable
    embedding trains, so it is not frozen)."""
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
    return FrozenHead(code_path(name, model), type(layer).__name__, [param_path(n, model) for n in training])


# ------------------------------------------------------------------------------------------------ measure
@dataclass
class Measurement:
    """What a few training steps of a fresh copy showed. Parameters are named by qualified name (``0.weight``);
    ``paths`` turns a name into a Python path (``model[0].weight``) for messages."""

    trainable: list[str]
    frozen: list[str]
    hidden: list[Hidden]
    paths: dict[str, str]
    head: str = "model"  # the output layer's path (the fix when nothing trains)
    steps: int = 0
    not_in_optimizer: list[str] = field(default_factory=list)
    no_gradient: list[str] = field(default_factory=list)  # grad is None after every step
    zero_gradient: list[str] = field(default_factory=list)  # a gradient, all zero on every step
    unchanged: list[str] = field(default_factory=list)  # in the optimizer, a non-zero gradient, did not move
    unchanged_lrs: list[Any] = field(default_factory=list)  # the lr of their param groups
    nonfinite: list[str] = field(default_factory=list)
    modules: list[dict[str, Any]] = field(default_factory=list)  # _module_table at init
    no_grad_module: str = ""  # path of the module owning the first gradient-less parameter
    no_grad_reason: str = ""  # key of NO_GRAD_CAUSES
    zero_grad_module: str = ""  # path of the module owning the first zero-gradient parameter
    blocker: Blocker | None = None  # what zeroes that gradient, when a module blocks it
    frozen_head: FrozenHead | None = None
    numerics_rerun: str = ""  # the command that runs the numerics probe on this setup

    def pp(self, names: list[str]) -> list[str]:
        return [self.paths.get(n, n) for n in names]

    @property
    def hidden_trained(self) -> list[Hidden]:
        return [h for h in self.hidden if h.got_gradient()]

    @property
    def hidden_idle(self) -> list[Hidden]:
        return [h for h in self.hidden if not h.got_gradient()]

    @property
    def all_train(self) -> bool:
        """Every trainable value is seen by parameters(), is in the optimizer and gets a non-zero gradient."""
        return not (self.hidden_trained or self.not_in_optimizer or self.no_gradient or self.zero_gradient)

    @property
    def rated(self) -> list[dict[str, Any]]:
        """The modules with a ||grad|| / ||weight|| ratio (zero-initialised ones have none), in execution order."""
        return [r for r in self.modules if r["ratio"] is not None]


def measure(ctx: Context, p: Params) -> Measurement:
    """Read the first ``p.steps`` steps of the shared training trace: which parameters got a gradient (non-zero,
    finite), are in the optimizer and moved, and the gradient / weight norms per module at init; diagnose the first
    parameter that did not train."""
    steps = max(1, p.steps)
    model = ctx.pristine_model()  # names and structure only
    batch = ctx.batch()
    named = list(model.named_parameters())
    trainable = [n for n, t in named if t.requires_grad]
    m = Measurement(
        trainable=trainable,
        frozen=[n for n, t in named if not t.requires_grad],
        hidden=[],
        paths={n: param_path(n, model) for n, _ in named},
        numerics_rerun=ctx.rerun("numerics"),
    )
    trace = ctx.trace(steps)
    trained, opt = trace.model, trace.optimizer_state
    assert trained is not None and opt is not None
    m.hidden = hidden_trainables(trained)  # their .grad shows whether the trace's backward reached them
    if not trainable and not m.hidden:
        out = ctx.output_layer(model, batch)
        m.head = code_path(out[0], model) if out else "model"
        return m

    m.steps = min(steps, trace.steps)
    applied = min(steps, trace.updates)  # optimizer steps applied within the horizon (none after a NaN gradient)
    by_id = {id(t): n for n, t in trained.named_parameters()}
    in_opt = {by_id[id(t)] for g in opt.param_groups for t in g["params"] if id(t) in by_id}
    lr_of = {by_id[id(t)]: g.get("lr") for g in opt.param_groups for t in g["params"] if id(t) in by_id}

    def within(first: dict[str, int], horizon: int) -> set[str]:
        return {n for n, k in first.items() if k < horizon}

    got_grad, nonzero = within(trace.first_grad, m.steps), within(trace.first_nonzero, m.steps)
    moved_before = within(trace.first_nonzero, applied)  # a non-zero gradient whose update was applied
    changed = within(trace.first_changed, applied)
    m.not_in_optimizer = [n for n in trainable if n not in in_opt]
    m.no_gradient = [n for n in trainable if n not in got_grad]
    m.zero_gradient = [n for n in trainable if n in got_grad and n not in nonzero]
    stuck = [n for n in trainable if n in moved_before and n in in_opt and n not in changed]
    m.unchanged = stuck
    m.unchanged_lrs = sorted({lr_of.get(n) for n in stuck}, key=str)
    m.nonfinite = sorted(within(trace.first_nonfinite, m.steps))
    m.modules = _module_table(model, trace, _zero_init(model))

    owners = _owners(model)
    if m.no_gradient:
        owner = owners.get(m.no_gradient[0], "")
        m.no_grad_module = code_path(owner, model)
        m.no_grad_reason = _why_no_grad(ctx, ctx.fresh_model(train=True), owner, batch)
    if m.zero_gradient:
        owner = owners.get(m.zero_gradient[0], "")
        m.zero_grad_module = code_path(owner, model)
        m.blocker = _blocker_for(ctx, owner, batch)
    if m.all_train:  # else the parameters that do not train are the finding
        m.frozen_head = _frozen_head(ctx, model, batch)
    return m


# ------------------------------------------------------------------------------------------------ wording
NO_GRAD_CAUSES = {
    "own": (
        "parameters of the model itself get no gradient: a functional weight is used through `.data` / `.detach()`, "
        "under `torch.no_grad()`, or not at all"
    ),
    "unused": "`{module}` is never called in forward() (an unused layer)",
    "no-graph": (
        "`{module}` runs but its output carries no graph: it is called under `torch.no_grad()` (or its weights are "
        "used through `.data` / `.detach()`)"
    ),
    "cut": (
        "the graph is cut after `{module}`: its output (or a value computed from it) is `.detach()`ed, taken through "
        "`.data` / `.item()` / numpy, or cast to an integer before the loss"
    ),
}
NO_TRAINABLE_HINT = (
    "Unfreeze what should train, on the module your `model()` returns: `for p in {head}.parameters(): "
    "p.requires_grad_(True)` (the output layer at least), and build the optimizer from those parameters."
)
REGISTER_HINT = "Register `{container}`: `{fix}`."
OPTIMIZER_HINT = (
    "Build the optimizer after the model is complete and from all of it: `optimizer = "
    "torch.optim.Adam(model.parameters(), lr=...)` (not a subset such as `list(params)[:2]`, and do not override "
    "`parameters()`); to freeze on purpose, call `p.requires_grad_(False)`."
)
NO_GRAD_HINT = (
    "Make `{module}` part of the graph: remove `.detach()` / `.data` / `with torch.no_grad():` around it in "
    "forward(), keep float tensors (no `.long()` / `.round()` / `.argmax()` on the way to the loss); if it is unused "
    "on purpose, delete it or freeze it."
)
BLOCKED_HINT = "{fix}; then `{module}` gets gradients again."
ZERO_GRAD_HINT = (
    "Find what zeroes the gradient after `{module}`: replace round / sign / argmax with a differentiable op (e.g. a "
    "straight-through estimator `x + (x.round() - x).detach()`)."
)
FROZEN_HEAD_HINT = (
    "Train the output layer: `for p in {head}.parameters(): p.requires_grad_(True)` on the module your `model()` "
    "returns, and check the freezing condition (e.g. `if not name.startswith(head_prefix): p.requires_grad_(False)`); "
    "build the optimizer from the parameters that require grad after freezing. A fixed classifier on purpose (Hoffer "
    "et al. 2018): skip this probe for the setup."
)
LR_ZERO_HINT = "Their param group has lr=0: give it a learning rate, or freeze them on purpose."
NONFINITE_HINT = "Run `{rerun}` to find the op that produces them."
VANISHING_HINT = (
    "The early layers will barely train: replace sigmoid / tanh hidden activations with ReLU / GELU and He init "
    "(`nn.init.kaiming_normal_(layer.weight, nonlinearity='relu')`), add BatchNorm / LayerNorm, or residual "
    "connections; make the network shallower."
)
EXPLODING_HINT = (
    "Gradients grow towards the input: lower the init scale (`nn.init.xavier_uniform_` / `kaiming_normal_`), add "
    "normalisation layers, clip with `torch.nn.utils.clip_grad_norm_(params, 1.0)`."
)


def _listed(names: list[str]) -> str:
    shown = ", ".join(f"`{n}`" for n in names[:MAX_LISTED])
    return shown + (f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


def _by_container(hidden: list[Hidden]) -> dict[str, list[Hidden]]:
    """Hidden entries grouped by the attribute that holds them (``layers[0]``, ``layers[1]`` -> ``layers``)."""
    groups: dict[str, list[Hidden]] = {}
    for h in hidden:
        groups.setdefault(h.container, []).append(h)
    return groups


def _hidden_message(group: list[Hidden]) -> str:
    h, one = group[0], len(group) == 1
    it = "it" if one else "them"
    types = ", ".join(sorted({g.type_name for g in group}))
    if h.kind == "module":
        container = "dict" if h.path[len(h.container) :].startswith(("['", '["')) else "list / tuple"
        where = f"{'is' if one else 'are'} kept in a plain Python {container}"
    else:
        where = "is a plain tensor attribute with requires_grad=True, not an nn.Parameter"
    return (
        f"{_listed([g.path for g in group])} ({types}) {where}: {'it gets' if one else 'they get'} gradients but "
        f"model.parameters() (and so the optimizer, state_dict() and .to(device)) does not see {it}"
    )


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _series(m: Measurement) -> dict[str, Any]:
    rated = m.rated
    if not rated:
        return {}
    return {
        "grad_ratio": bar_plot(
            "Gradient norm / parameter norm per module at init",
            [r["module"] for r in rated],
            {"at init": [r["ratio"] for r in rated]},
            xlabel="module (execution order)",
            ylabel="||grad|| / ||weight||",
            yscale="log",
        )
    }


# ------------------------------------------------------------------------------------------------ judge
def judge(m: Measurement, p: Params) -> Findings:
    """Fail on any parameter that does not train (hidden, outside the optimizer, no or zero gradient); only when
    every parameter trains, warn on a frozen output layer, non-finite / vanishing / exploding gradients and
    parameters whose param group has lr=0."""
    if not m.trainable and not m.hidden:
        f = Findings(measured={"frozen": m.frozen}, expected={"trainable_min": 1})
        frozen = f" ({len(m.frozen)} frozen)" if m.frozen else ""
        f.fail(f"the model has no trainable parameter{frozen}", NO_TRAINABLE_HINT.format(head=m.head))
        return f
    f = Findings(
        measured={
            "trainable": len(m.trainable),
            "frozen": m.frozen,
            "steps": m.steps,
            "hidden": [
                {"attribute": h.path, "kind": h.kind, "type": h.type_name, "gets_gradient": h.got_gradient()}
                for h in m.hidden
            ],
            "not_in_optimizer": m.not_in_optimizer,
            "no_gradient": m.no_gradient,
            "zero_gradient": m.zero_gradient,
            "unchanged_after_step": m.unchanged,
            "nonfinite_gradient": m.nonfinite,
            "modules": m.modules,
        },
        expected={
            "hidden": [],
            "not_in_optimizer": [],
            "no_gradient": [],
            "zero_gradient": [],
            "first_over_max_ratio_min": p.vanish_ratio,
            "first_over_last_ratio_max": p.explode_ratio,
        },
        series=_series(m),
    )
    if m.frozen:
        f.note(f"frozen (requires_grad=False): {_listed(m.pp(m.frozen))}")
    if m.hidden_idle:
        f.note(
            "not seen by model.parameters() and received no gradient (fine for a frozen helper such as a teacher "
            f"model; freeze it with requires_grad_(False)): {_listed([h.path for h in m.hidden_idle])}"
        )

    for container, group in _by_container(m.hidden_trained).items():
        f.fail(_hidden_message(group), REGISTER_HINT.format(container=container, fix=group[0].fix()))
    if m.not_in_optimizer:
        f.fail(
            f"{len(m.not_in_optimizer)} trainable parameter(s) are not in the optimizer: "
            f"{_listed(m.pp(m.not_in_optimizer))} (they get gradients but never move)",
            OPTIMIZER_HINT,
        )
    if m.no_gradient:
        f.fail(
            f"{len(m.no_gradient)} parameter(s) get no gradient (grad is None after {m.steps} step(s)): "
            f"{_listed(m.pp(m.no_gradient))}; {NO_GRAD_CAUSES[m.no_grad_reason].format(module=m.no_grad_module)}",
            NO_GRAD_HINT.format(module=m.no_grad_module),
        )
    if m.zero_gradient:
        head = f"{len(m.zero_gradient)} parameter(s) get an all-zero gradient on {m.steps} batch(es): "
        if m.blocker is not None:
            f.fail(
                f"{head}{_listed(m.pp(m.zero_gradient))}: {m.blocker.cause}",
                BLOCKED_HINT.format(fix=_sentence(m.blocker.fix), module=m.zero_grad_module),
            )
        else:
            f.fail(
                f"{head}{_listed(m.pp(m.zero_gradient))} (its input is all zero, a piecewise-constant op such as "
                "round / sign / argmax / a comparison, or a multiplication by zero)",
                ZERO_GRAD_HINT.format(module=m.zero_grad_module),
            )
    if not m.all_train:  # a parameter that does not train: the depth ratios and the head are moot
        return f

    if m.frozen_head is not None:
        fh = m.frozen_head
        f.warn(
            f"the output layer `{fh.path}` ({fh.type_name}) is frozen (requires_grad=False) while {len(fh.training)} "
            f"earlier parameter(s) train ({_listed(fh.training)}): the freezing is probably inverted (meant: freeze "
            "the backbone, train the head)",
            FROZEN_HEAD_HINT.format(head=fh.path),
        )
    if m.nonfinite:
        f.warn(
            f"non-finite gradients at init in {_listed(sorted(set(m.pp(m.nonfinite))))} (exploding)",
            NONFINITE_HINT.format(rerun=m.numerics_rerun),
        )
    rated = m.rated
    if len(rated) >= 2:
        first, last = rated[0], rated[-1]
        top = max(rated, key=lambda r: r["ratio"])
        if top["ratio"] > 0 and first["ratio"] < p.vanish_ratio * top["ratio"]:
            f.warn(
                f"vanishing gradients at init: ||grad||/||weight|| of the first module `{first['path']}` "
                f"({first['type']}) is {first['ratio']:.3g}, {first['ratio'] / top['ratio']:.2g} x the largest "
                f"(`{top['path']}`: {top['ratio']:.3g}); per-module ratios in measured['modules']",
                VANISHING_HINT,
            )
        elif last["ratio"] > 0 and first["ratio"] > p.explode_ratio * last["ratio"]:
            f.warn(
                f"exploding gradients at init: ||grad||/||weight|| of the first module `{first['path']}` is "
                f"{first['ratio']:.3g}, {first['ratio'] / last['ratio']:.3g} x the output module's "
                f"(`{last['path']}`: {last['ratio']:.3g})",
                EXPLODING_HINT,
            )
    if m.unchanged:
        text = (
            f"{len(m.unchanged)} parameter(s) in the optimizer with non-zero gradients did not change after a step: "
            f"{_listed(m.pp(m.unchanged))} (lr {', '.join(str(lr) for lr in m.unchanged_lrs)})"
        )
        if 0 in m.unchanged_lrs:
            f.warn(text, LR_ZERO_HINT)
        else:
            f.note(text + ": the update is below float precision (tiny gradients)")
    return f


def _passed(m: Measurement) -> str:
    first = m.modules[0] if m.modules else None
    summary = f"; first module ||g||/||w|| = {first['ratio']:.3g}" if first and first["ratio"] is not None else ""
    frozen = f", {len(m.frozen)} frozen" if m.frozen else ""
    return f"all {len(m.trainable)} trainable parameters get gradients, are in the optimizer and move{frozen}{summary}"


@probe("gradient-flow", title="Gradient flow", order=25, params=Params)
def gradient_flow(ctx: Context, p: Params) -> Result:
    """Checks that every trainable parameter receives a gradient, is in the optimizer and is updated.

    What it does:
        Searches the module tree for modules kept in plain Python lists / dicts / tuples and for tensors with
        `requires_grad=True` stored as plain attributes: their values train in forward but `model.parameters()`
        (hence the optimizer, `.to(device)`, `state_dict()`) never sees them. Then reads the first {steps} steps of
        the shared training trace (your optimizer at your LR, from a fresh copy) and checks that each parameter with
        `requires_grad` got a gradient that is not None and not all zero, that it is in the optimizer's
        param_groups, and that an applied update changed it. The gradient norm relative to the parameter norm, per
        module (weight and bias together), at init gives the vanishing / exploding check. Frozen parameters
        (`requires_grad=False`) are listed.

    Why is this bad?
        A parameter without gradient (a `.detach()`ed branch, `torch.no_grad()` or `.data` in forward, an
        integer cast, an unused layer) or outside the optimizer (built before a layer was added, built on a
        subset, `parameters()` overridden) keeps its random init forever: the model trains, only worse, and
        nothing errors. Gradients that shrink by orders of magnitude towards the input (deep sigmoid / tanh
        stacks) leave the first layers untrained (Hochreiter 1991; Glorot & Bengio 2010; Humbatova et al. ICSE
        2020 "vanishing / exploding gradients"; SageMaker Debugger's VanishingGradient rule).

    Thresholds:
        Any parameter with a None or all-zero gradient over the steps, outside the optimizer, or hidden from
        `parameters()` while it receives a gradient: fail. When every parameter trains: vanishing, the first
        module's ||g||/||w|| below {vanish_ratio} x the largest module's; exploding, above {explode_ratio} x the
        output layer's, or non-finite gradients; an output layer frozen while earlier layers train; a param
        group with lr=0: warn. Measured first/largest: a 20-layer sigmoid MLP 4e-17, correct setups >= 1.9e-3;
        first/output: correct setups <= 5.8.

    How to fix:
        Remove the `.detach()` / `torch.no_grad()` / `.data` from forward; keep sub-modules in `nn.ModuleList`
        / `nn.ModuleDict` and extra tensors in `nn.Parameter`; build the optimizer last, from
        `model.parameters()`; freeze on purpose with `p.requires_grad_(False)`. For vanishing gradients use ReLU
        / GELU with He init, normalisation layers or residual connections.

    Example:
        `self.hidden = [nn.Linear(64, 64) for _ in range(2)]`: fail, "`model.hidden[0]`, `model.hidden[1]` (Linear) are
        kept in a plain Python list / tuple: they get gradients but model.parameters() (and so the optimizer,
        state_dict() and .to(device)) does not see them"; hint "Register `model.hidden`: `self.hidden =
        nn.ModuleList([...])`".
    """
    m = measure(ctx, p)
    return judge(m, p).result(_passed(m))
