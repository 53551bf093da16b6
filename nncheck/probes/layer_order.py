"""layer-order: BatchNorm and dropout placed where they hurt (variance shift, normalised outputs, batch of 1)."""

from __future__ import annotations

import operator
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from nncheck.kit import Context, Findings, ProbeSkip, Result, Status, code_path, param, probe
from nncheck.modelgraph import SHAPE_OPS, forward_hooks, is_batchnorm, is_dropout, leaf_modules
from nncheck.tensors import first_tensor, iter_tensors

# Elementwise ops a dropout mask passes through on its way into a BatchNorm (the variance shift survives them).
ELEMENTWISE_OPS = {
    "add", "iadd", "sub", "isub", "mul", "imul", "truediv", "itruediv", "neg", "relu", "relu_", "gelu", "silu",
    "tanh", "sigmoid", "leaky_relu", "elu", "selu", "celu", "hardtanh", "relu6", "softplus", "mish", "hardswish",
    "hardsigmoid", "clamp", "clip", "abs", "square", "pow",
}  # fmt: skip
ELEMENTWISE_MODULES = (
    nn.ReLU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.ELU, nn.SELU, nn.CELU, nn.Hardtanh,
    nn.ReLU6, nn.Softplus, nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.PReLU, nn.Identity,
)  # fmt: skip
SHAPE_MODULES = (nn.Flatten, nn.Unflatten)
DROPOUT_FUNCTIONS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout}
FUNCTIONAL = DROPOUT_FUNCTIONS | {F.batch_norm}
TORCH_DIR = os.path.dirname(torch.__file__)
NOTHING_TO_CHECK = "the forward pass runs no BatchNorm and no dropout (p > 0)"


@dataclass(frozen=True)
class Params:
    """Parameters of layer-order (`[tool.nncheck.probes.layer-order]`)."""

    dropout_p_warn: float = param(
        0.8,
        source='Srivastava et al. (JMLR 2014, "Dropout: A Simple Way to Prevent Neural Networks from Overfitting") '
        "use p = 0.5 for hidden units and p = 0.2 for inputs; at p = 0.8 four fifths of the signal is dropped and "
        "each kept unit is scaled 5x. The highest rate on a correct setup of checks/ and examples/ is 0.5 "
        "(checks/ob_label_smoothing_ok.py).",
    )
    dropout_p_fail: float = param(
        1.0,
        source="p = 1 zeroes every value in training (PyTorch's p is the DROP probability; a keep_prob = 1.0 "
        "passed as p, checks/lo_dropout_p1_keep_prob.py): nothing before it gets a gradient.",
    )
    min_bn_batch: int = param(
        2,
        source="With one sample the batch statistics are that sample's own (Ioffe & Szegedy 2015; Wu & He 2018, "
        '"Group Normalization", show BatchNorm error growing fast below batch 8); checks/lo_batchnorm_batch_of_one.py.',
    )


@dataclass
class Op:
    """One node of the data-flow graph of a forward pass."""

    name: str  # qualified module name (`features.3`), or `F.dropout in block1` for a functional call
    kind: str  # dropout | bn | affine_bias | elementwise | shape | other
    inputs: list[int] = field(default_factory=list)
    module: nn.Module | None = None
    p: float | None = None  # dropout rate
    where: str = ""  # file:line of a functional call, when known
    shown: str = ""  # the name as the user writes it (`model.features[3]`), set by measure()


# ---------------------------------------------------------------------------------------------- measure: classification
def module_kind(m: nn.Module) -> tuple[str, float | None]:
    if is_dropout(m):
        return ("dropout" if m.p > 0 else "elementwise"), float(m.p)
    if is_batchnorm(m):
        return "bn", None
    if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)):
        return ("affine_bias" if m.bias is not None else "other"), None
    if isinstance(m, ELEMENTWISE_MODULES):
        return "elementwise", None
    if isinstance(m, SHAPE_MODULES):
        return "shape", None
    return "other", None


def _arg(node: fx.Node, index: int, key: str, default: Any) -> Any:
    if key in node.kwargs:
        return node.kwargs[key]
    return node.args[index] if len(node.args) > index else default


def function_kind(node: fx.Node) -> tuple[str, float | None]:
    """Kind of a call_function / call_method node."""
    target = node.target
    if node.op == "call_function" and target in DROPOUT_FUNCTIONS:
        p, training = _arg(node, 1, "p", 0.5), _arg(node, 2, "training", True)
        if isinstance(p, (int, float)) and p > 0 and training is True:
            return "dropout", float(p)
        return "elementwise", None
    if node.op == "call_function" and target is F.batch_norm:
        return ("bn" if _arg(node, 5, "training", False) is True else "other"), None
    name = target if isinstance(target, str) else getattr(target, "__name__", "")
    if target is operator.getitem:
        name = "getitem"
    if name in SHAPE_OPS:
        return "shape", None
    if name in ELEMENTWISE_OPS:
        return "elementwise", None
    return "other", None


def _caller_line() -> str:
    """`file.py:line` of the innermost frame outside torch: the user code that made the call being traced."""
    frame = sys._getframe(1)
    while frame is not None:
        path = frame.f_code.co_filename
        if path != __file__ and not path.startswith("<") and not os.path.abspath(path).startswith(TORCH_DIR):
            return f"{os.path.basename(path)}:{frame.f_lineno}"
        frame = frame.f_back
    return ""


class LineTracer(fx.Tracer):
    """An fx tracer that records the user's `file:line` of every function / method call in ``node.meta``.

    fx's own ``record_stack_traces`` formats a whole traceback per node and, the first time, imports torch.export
    (networkx, aot_autograd, inductor): ~0.3 s, 800 training steps of a small MLP. Walking the frames is enough."""

    def create_node(self, kind: str, target: Any, args: Any, kwargs: Any, *rest: Any, **kw: Any) -> fx.Node:
        node = super().create_node(kind, target, args, kwargs, *rest, **kw)
        if kind in ("call_function", "call_method"):
            node.meta["nncheck_line"] = _caller_line()
        return node


def _user_line(node: fx.Node) -> str:
    """`file.py:line` of the user code that made a functional call (recorded by ``LineTracer``)."""
    return str(node.meta.get("nncheck_line", ""))


def _owner(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack)[-1] if stack else ""


# ---------------------------------------------------------------------------------------------- measure: graphs
def _final_arg(arg: Any) -> Any:
    """The model output's main tensor: the value itself, the first element of a tuple, `logits` of a dict."""
    if isinstance(arg, (tuple, list)) and arg:
        return _final_arg(arg[0])
    if isinstance(arg, dict) and arg:
        return _final_arg(arg.get("logits", next(iter(arg.values()))))
    return arg


def fx_graph(model: nn.Module) -> tuple[list[Op], int | None]:
    """Data-flow graph from torch.fx symbolic tracing (sees functional calls); raises when the model does not trace.
    The file:line of functional calls is shown only when the graph holds a functional dropout or batch_norm."""
    graph = LineTracer().trace(model)
    with_lines = any(n.op == "call_function" and n.target in FUNCTIONAL for n in graph.nodes)
    ops: list[Op] = []
    index: dict[fx.Node, int] = {}
    final: int | None = None
    for node in graph.nodes:
        ids = [index[n] for n in node.all_input_nodes if n in index]
        if node.op == "output":
            last = _final_arg(node.args[0])
            final = index.get(last) if isinstance(last, fx.Node) else None
            continue
        if node.op == "call_module":
            mod = model.get_submodule(str(node.target))
            kind, p = module_kind(mod)
            op = Op(str(node.target), kind, ids, mod, p)
        elif node.op in ("call_function", "call_method"):
            kind, p = function_kind(node)
            fn = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
            owner = _owner(node)
            name = f"F.{fn}" + (f" in {owner}" if owner else " in the top-level forward")
            op = Op(name, kind, ids, None, p, _user_line(node) if with_lines else "")
        else:
            op = Op(node.name, "other", ids)
        index[node] = len(ops)
        ops.append(op)
    return ops, final


@dataclass
class HookRun:
    """What one forward pass with hooks on every leaf module saw."""

    ops: list[Op]
    final: int | None
    bn_batches: dict[str, int]  # BatchNorm name -> smallest batch it saw
    functional: bool = False  # the forward called a functional dropout / batch_norm (F.dropout, F.batch_norm, ...)


class FunctionalCalls(TorchFunctionMode):
    """Records whether a functional dropout or batch_norm runs (torch dispatches them to the active mode)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = False

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func in FUNCTIONAL:
            self.seen = True
        return func(*args, **(kwargs or {}))


def _same_data(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a is b or (a.data_ptr() == b.data_ptr() and a.numel() == b.numel() and a.numel() > 0)


def hook_run(ctx: Context, model: nn.Module, batch: Any) -> HookRun:
    """One forward pass (no grad, the model's current mode): leaf modules in execution order, linked by tensor
    identity (a module's input is the output of the last module that produced that very tensor, or a view of it)."""
    calls: list[tuple[str, nn.Module, list[torch.Tensor], list[torch.Tensor]]] = []

    def hook(mod: nn.Module, args: Any, kwargs: Any, out: Any, name: str) -> None:
        calls.append((name, mod, list(iter_tensors((args, kwargs))), list(iter_tensors(out))))

    calls_mode = FunctionalCalls()
    with forward_hooks(leaf_modules(model), hook, with_kwargs=True), torch.no_grad(), calls_mode:
        out, _ = ctx.forward(model, batch)
    ops: list[Op] = []
    produced: list[tuple[torch.Tensor, int]] = []  # (tensor, op index), latest last; tensors stay alive
    bn_batches: dict[str, int] = {}
    for name, mod, ins, outs in calls:
        ids: list[int] = []
        for t in ins:
            src = next((i for u, i in reversed(produced) if _same_data(t, u)), None)
            if src is not None and src not in ids:
                ids.append(src)
        kind, p = module_kind(mod)
        if kind == "bn" and ins and ins[0].dim() > 0:
            bn_batches[name] = min(bn_batches.get(name, 1 << 30), int(ins[0].shape[0]))
        produced.extend((t, len(ops)) for t in outs)
        ops.append(Op(name, kind, ids, mod, p))
    final = None
    out_t = out if isinstance(out, torch.Tensor) else first_tensor(out)
    if out_t is not None:
        final = next((i for u, i in reversed(produced) if _same_data(out_t, u)), None)
    return HookRun(ops, final, bn_batches, calls_mode.seen)


# ---------------------------------------------------------------------------------------------- measure: placement
def upstream(ops: list[Op], start: int, through: set[str]) -> Iterable[int]:
    """Ops reached walking back from ``start``'s inputs through ops whose kind is in ``through`` (not included)."""
    seen: set[int] = set()
    stack = list(ops[start].inputs)
    while stack:
        i = stack.pop()
        if i in seen:
            continue
        seen.add(i)
        if ops[i].kind in through:
            stack.extend(ops[i].inputs)
        else:
            yield i


def dropout_into_bn(ops: list[Op]) -> list[tuple[Op, Op]]:
    pairs = []
    for i, op in enumerate(ops):
        if op.kind == "bn":
            pairs += [(ops[j], op) for j in upstream(ops, i, {"elementwise", "shape"}) if ops[j].kind == "dropout"]
    return pairs


def bias_into_bn(ops: list[Op]) -> list[tuple[Op, Op]]:
    return [
        (ops[op.inputs[0]], op)
        for op in ops
        if op.kind == "bn" and op.inputs and ops[op.inputs[0]].kind == "affine_bias"
    ]


def final_op(ops: list[Op], final: int | None) -> Op | None:
    """The op that produced the model output, looking through reshapes."""
    if final is None:
        return None
    if ops[final].kind != "shape":
        return ops[final]
    found = list(upstream(ops, final, {"shape"}))
    return ops[found[0]] if len(found) == 1 else None


def display(name: str, model: nn.Module) -> str:
    """An op's name as the user writes it: `model.features[3]` for a module, `F.dropout in model.block` for a
    functional call; graph nodes that are not modules (`add_1`) keep their name."""
    if name.startswith("F.") and " in " in name:
        fn, owner = name.split(" in ", 1)
        return f"{fn} in {display(owner, model)}"
    try:
        model.get_submodule(name)
    except (AttributeError, ValueError):
        return name
    return code_path(name, model)


@dataclass
class Placement:
    """Where BatchNorm and dropout sit in the data flow of one forward pass (train mode)."""

    graph: str  # how the data flow was found: "torch.fx" or "hooks"
    dropouts: list[Op]  # dropout with p > 0
    bns: list[Op]  # BatchNorm in training
    final: Op | None  # the op that produced the model output (through reshapes), when known
    bn_batches: dict[str, int]  # BatchNorm (as shown) -> smallest batch it saw
    dropout_before_bn: list[tuple[Op, Op]]  # (dropout, BatchNorm) linked by elementwise ops / reshapes only
    bias_before_bn: list[Op]  # Linear / Conv with a bias feeding a BatchNorm directly
    loss_kind: str


def measure(ctx: Context) -> Placement:
    """The data-flow graph of one forward pass: from torch.fx when the model traces, else from forward hooks."""
    batch = ctx.batch()
    model = ctx.fresh_model(train=True)
    run = hook_run(ctx, model, batch)
    if not run.functional and not any(op.kind in ("dropout", "bn") for op in run.ops):
        # nothing for fx to add: it sees the same modules, and no functional dropout / batch_norm ran. Skipping the
        # trace saves its first-use cost (torch.overrides' table of tensor methods, ~14 ms: 30+ small steps)
        raise ProbeSkip(NOTHING_TO_CHECK)
    ops, final, graph = run.ops, run.final, "hooks"
    try:
        ops, final = fx_graph(model)
        graph = "torch.fx"
    except Exception:  # data-dependent control flow, untraceable calls: the hook graph is the fallback
        pass
    # fx keeps torch.nn containers (TransformerEncoderLayer, MultiheadAttention) as leaves: add the dropout and
    # BatchNorm modules the hooks saw inside them
    dropouts = list({op.name: op for op in run.ops + ops if op.kind == "dropout"}.values())
    bns = list({op.name: op for op in run.ops + ops if op.kind == "bn"}.values())
    if not dropouts and not bns:
        raise ProbeSkip(NOTHING_TO_CHECK)
    for op in run.ops + ops:
        op.shown = display(op.name, model)
    return Placement(
        graph=graph,
        dropouts=dropouts,
        bns=bns,
        final=final_op(ops, final),
        bn_batches={display(n, model): b for n, b in run.bn_batches.items()},
        dropout_before_bn=dropout_into_bn(ops),
        bias_before_bn=[a for a, _ in bias_into_bn(ops)],
        loss_kind=ctx.loss_kind,
    )


# ---------------------------------------------------------------------------------------------- wording
HINT_FINAL = (
    "Remove {ref} from the end of the model (or move it before the output layer): the last module must be the "
    "output layer, e.g. `nn.Linear(hidden, n_out)`; {why}"
)
WHY_FINAL = {
    "bn": "a BatchNorm on the output forces every output to zero mean / unit variance over the batch.",
    "dropout": "dropout on the output zeroes predictions at random before the loss.",
}
HINT_SMALL_BATCH = (
    "Train with batches of 16+ samples (`DataLoader(..., batch_size=32, drop_last=True)`), or replace {names} by a "
    "batch-independent norm: `nn.GroupNorm(8, channels)` or `nn.LayerNorm(features)`."
)
HINT_DROPOUT_INTO_BN = (
    "Move {dropout} after {bn} (`BatchNorm -> ReLU -> Dropout`), or keep dropout only after the last BatchNorm "
    "(right before the output layer)."
)
HINT_DEAD_DROPOUT = "PyTorch's p is the probability to DROP a unit (p = 1 - keep_prob): set it to 0.1-0.5, e.g. {fix}."
HINT_HIGH_DROPOUT = "Lower the rate of {ref} to 0.1-0.5, e.g. `nn.Dropout(0.3)`."
NOTE_BIAS_BEFORE_BN = (
    "{names} {verb} BatchNorm directly with a bias, which BatchNorm's mean subtraction cancels: build them with "
    "`bias=False` (one wasted parameter vector each, harmless)."
)


def _label(op: Op) -> str:
    """How a message names an op: `model[2]` (Dropout p=0.5), `F.dropout in model.block` (p=0.3, net.py:12)."""
    what = type(op.module).__name__ if op.module is not None else ""
    p = f"p={op.p:g}" if op.p is not None else ""
    extra = ", ".join(s for s in (" ".join(s for s in (what, p) if s), op.where) if s)
    return f"`{op.shown}`" + (f" ({extra})" if extra else "")


def _ref(op: Op) -> str:
    """How a hint names an op: the module, or the functional call and its line."""
    if op.module is not None:
        return f"`{op.shown}`"
    return f"the `{op.shown.split(' in ')[0]}` call" + (f" at {op.where}" if op.where else f" ({op.shown})")


def _dead_dropout_fix(op: Op) -> str:
    if op.module is not None:
        return f"`{op.shown} = nn.Dropout(p=0.1)` in the code that builds the model"
    return f"`F.dropout(x, p=0.1, training=self.training)` at {op.where or op.name}"


# ---------------------------------------------------------------------------------------------- judge
# With a loss nncheck knows, a BatchNorm / dropout on the output is a bug; with a custom loss it is a warning
# (contrastive, SimSiam / BYOL projector heads end in BatchNorm on purpose).
KNOWN_LOSSES = ("ce", "bce", "mse")


def judge(m: Placement, p: Params) -> Findings:
    """The output op, the BatchNorm batch sizes, dropout into BatchNorm, the dropout rates, bias before BatchNorm."""
    f = Findings(
        measured={
            "graph": m.graph,
            "dropout": {op.shown: op.p for op in m.dropouts},
            "batchnorm": [op.shown for op in m.bns],
            "final_op": m.final.shown if m.final else None,
        },
        expected={"dropout_p_max": p.dropout_p_warn, "bn_batch_min": p.min_bn_batch},
    )
    last = m.final
    if last is not None and last.kind in ("bn", "dropout"):
        what = "BatchNorm" if last.kind == "bn" else "dropout"
        f.add(
            Status.FAIL if m.loss_kind in KNOWN_LOSSES else Status.WARN,
            f"{what} {_label(last)} produces the model's final output",
            HINT_FINAL.format(ref=_ref(last), why=WHY_FINAL[last.kind]),
        )
        f.expected["final_op"] = "the output layer (Linear / Conv), not BatchNorm or dropout"

    f.measured["bn_batch"] = min(m.bn_batches.values()) if m.bn_batches else None
    if small := {n: b for n, b in m.bn_batches.items() if b < p.min_bn_batch}:
        names = ", ".join(f"`{n}`" for n in small)
        f.fail(
            f"BatchNorm {names} trains on a batch of {min(small.values())} sample(s)",
            HINT_SMALL_BATCH.format(names=names),
        )

    f.measured["dropout_before_bn"] = [[d.shown, b.shown] for d, b in m.dropout_before_bn]
    if m.dropout_before_bn:
        d, b = m.dropout_before_bn[0]
        more = f" (and {len(m.dropout_before_bn) - 1} more)" if len(m.dropout_before_bn) > 1 else ""
        f.warn(
            f"dropout {_label(d)} feeds BatchNorm {_label(b)}{more}: variance shift (Li et al. 2019)",
            HINT_DROPOUT_INTO_BN.format(dropout=_ref(d), bn=_ref(b)),
        )

    if dead := [op for op in m.dropouts if op.p is not None and op.p >= p.dropout_p_fail]:
        f.fail(
            f"dropout {', '.join(_label(op) for op in dead)} has p >= {p.dropout_p_fail:g}: in training it zeroes "
            "every value, so the layers before it never get a gradient and the output ignores the input",
            HINT_DEAD_DROPOUT.format(fix=_dead_dropout_fix(dead[0])),
        )
        f.expected["dropout_p_fail"] = p.dropout_p_fail
    if high := [op for op in m.dropouts if op.p is not None and p.dropout_p_warn <= op.p < p.dropout_p_fail]:
        f.warn(
            f"dropout {', '.join(_label(op) for op in high)} has p >= {p.dropout_p_warn:g}",
            HINT_HIGH_DROPOUT.format(ref=_ref(high[0])),
        )

    if m.bias_before_bn:
        verb = "feeds" if len(m.bias_before_bn) == 1 else "feed"
        f.note(NOTE_BIAS_BEFORE_BN.format(names=", ".join(f"`{a.shown}`" for a in m.bias_before_bn), verb=verb))
    f.measured["bias_before_bn"] = [a.shown for a in m.bias_before_bn]
    return f


@probe("layer-order", title="BatchNorm / dropout placement", order=80, params=Params)
def layer_order(ctx: Context, p: Params) -> Result:
    """Checks where BatchNorm and dropout sit in the data flow of one forward pass.

    What it does:
        Builds the data-flow graph between the model's modules from one forward pass: with torch.fx symbolic
        tracing when the model traces (this sees functional calls such as `F.dropout` and the true graph), else
        from forward hooks on the leaf modules (execution order, and each module's inputs matched by tensor
        identity to the outputs of earlier modules). Then applies these rules:
        - dropout feeding a BatchNorm, directly or through elementwise ops / reshapes only -> warn;
        - BatchNorm or dropout producing the model's final output -> fail (warn with a custom loss: SimSiam /
          BYOL projector heads end in BatchNorm on purpose);
        - a BatchNorm whose training batch holds fewer than {min_bn_batch} samples -> fail;
        - dropout with p >= {dropout_p_fail} (it zeroes everything in training) -> fail; with p >=
          {dropout_p_warn} -> warn;
        - a Linear / Conv with a bias feeding a BatchNorm directly -> a note in a passing result.
        Dropout and BatchNorm in different branches of a residual block are not linked by the data flow and
        are not flagged.

    Why is this bad?
        Dropout scales the kept activations by 1/(1-p) in training only, so a BatchNorm after it learns running
        statistics with a variance that inference never sees ("variance shift": Li et al., CVPR 2019,
        "Understanding the Disharmony between Dropout and Batch Normalization by Variance Shift"): test accuracy
        drops. A BatchNorm on the output forces every output unit to zero mean and unit variance over the batch:
        logits cannot express priors or confidence, regression outputs cannot reach the targets' scale. Dropout
        on the output corrupts the predictions the loss sees. BatchNorm on one sample normalises it with its
        own statistics. Very high dropout starves training. A bias before BatchNorm is cancelled by the mean
        subtraction (a wasted parameter, harmless).

    Thresholds:
        {dropout_p_warn} (Srivastava et al. 2014 use 0.5 for hidden units, 0.2 for inputs);
        {dropout_p_fail} (every value dropped: keep_prob = 1.0 passed as p);
        {min_bn_batch} (a BatchNorm batch of 1; Wu & He 2018 show BatchNorm degrading below batch 8).

    How to fix:
        Put dropout after the last BatchNorm (`... -> BatchNorm -> ReLU -> Dropout -> Linear`), end the model
        with its output layer (no BatchNorm / dropout after it), train BatchNorm with batches of 16+ samples
        (or use GroupNorm / LayerNorm), keep dropout p in 0.1-0.5, and build a conv / linear layer followed by
        BatchNorm with `bias=False`.

    Example:
        `nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Dropout(0.5), nn.BatchNorm1d(64), nn.Linear(64, 5))`
        warns: `model[2]` (Dropout p=0.5) feeds `model[3]` (BatchNorm1d).
    """
    m = measure(ctx)
    passed = f"{len(m.dropouts)} dropout and {len(m.bns)} BatchNorm call(s) placed safely ({m.graph} graph)"
    return judge(m, p).result(passed)
