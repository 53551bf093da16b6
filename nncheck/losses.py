"""Losses: nncheck's adapters around a user's loss, the default loss inferred from the first batch, and facts
about a loss that several probes need (its kind, its class dimension, its ignore_index, label rules)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from nncheck.setup import SetupError
from nncheck.tensors import SHAPE_OPS, Path, first_tensor, get_path, map_tensors, named_tensors, path_name

# CrossEntropyLoss's default ignore_index (torch.nn.CrossEntropyLoss docs).
IGNORE_INDEX = -100
# Outputs that are log-probabilities (LogSoftmax before NLLLoss): every row's logsumexp is 0 to float precision.
LOG_PROB_TOL = 1e-3


# A model's own loss (``output.loss``) and a standard loss recomputed from its logits agree to float rounding; a
# different loss (another shift, no ignore_index, label smoothing) differs by far more.
OWN_LOSS_RTOL = 1e-4


class SequenceCrossEntropy(nn.Module):
    """Cross-entropy for ``(B, ..., C)`` outputs (classes last) with ``(B, ...)`` integer targets."""

    classes_last = True

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1).long())


class ShiftedSequenceCrossEntropy(nn.Module):
    """Next-token cross-entropy: ``(B, T, V)`` logits at positions 0..T-2 against ``(B, T)`` targets at 1..T-1, padding
    (-100) ignored. A Hugging Face causal LM takes its inputs as labels and shifts them itself."""

    classes_last = True
    shift = 1  # output position t predicts target position t + 1

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = output[:, :-1].reshape(-1, output.shape[-1])
        return F.cross_entropy(logits.float(), target[:, 1:].reshape(-1).long(), ignore_index=IGNORE_INDEX)


class HeadLoss(nn.Module):
    """``inner`` applied to one tensor of a model's output tree (``path``, e.g. ``("logits",)`` of a Hugging Face
    ``ModelOutput``); applied to the tensor itself when it is given one."""

    def __init__(self, inner: Any, path: Path) -> None:
        super().__init__()
        self.inner = inner
        self.path = path

    def forward(self, output: Any, target: Any) -> torch.Tensor:
        t = output if isinstance(output, torch.Tensor) else get_path(output, self.path)
        return self.inner(t, target)


class ModelOwnLoss(nn.Module):
    """The loss a model computes itself and returns as ``output.loss`` (a Hugging Face model given ``labels``)."""

    def forward(self, output: Any, target: Any) -> torch.Tensor:
        loss = own_loss(output)
        if loss is None:
            raise ValueError("the model output has no `loss`: the model computes its loss only when given the labels")
        return loss


class SqueezedLoss(nn.Module):
    """Apply ``inner`` after reshaping a ``(B, 1)`` output to a ``(B,)`` target (or the reverse)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.inner(output.reshape(target.shape), target.to(output.dtype))


class FloatTargetLoss(nn.Module):
    """Apply ``inner`` with the target cast to the output's dtype (bool / int 0-1 targets for BCE)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.inner(output, target.to(output.dtype))


def unwrap_loss(loss: Any) -> Any:
    """The user's (or torch's) loss inside nncheck's target adapters."""
    while isinstance(loss, (SqueezedLoss, FloatTargetLoss, HeadLoss)):
        loss = loss.inner
    return loss


def loss_kind_of(loss: Any) -> str:
    """Classify a loss: 'ce' (cross-entropy), 'bce' (BCE with logits), 'mse', or 'custom'."""
    inner = unwrap_loss(loss)
    if isinstance(inner, (nn.CrossEntropyLoss, SequenceCrossEntropy, ShiftedSequenceCrossEntropy)):
        return "ce"
    if inner is F.cross_entropy or getattr(inner, "kind", None) == "ce":
        return "ce"
    if isinstance(inner, nn.BCEWithLogitsLoss) or inner is F.binary_cross_entropy_with_logits:
        return "bce"
    if isinstance(inner, nn.MSELoss) or inner is F.mse_loss:
        return "mse"
    return str(getattr(inner, "kind", "custom"))


def classes_last(loss: Any) -> bool:
    """The loss reads the class scores on the last dimension of ``(B, T, C)`` outputs (not on dim 1)."""
    return bool(getattr(unwrap_loss(loss), "classes_last", False))


def target_shift(loss: Any) -> int:
    """How far ahead of its output position a target sits (1 for a next-token loss that shifts the labels itself)."""
    return int(getattr(unwrap_loss(loss), "shift", 0))


def is_nll(loss: Any) -> bool:
    """``nn.NLLLoss`` / ``F.nll_loss`` (possibly inside nncheck's adapters)."""
    inner = unwrap_loss(loss)
    return isinstance(inner, nn.NLLLoss) or inner is F.nll_loss


def ignore_index(loss: Any) -> int:
    """The loss's ``ignore_index`` (CrossEntropyLoss / NLLLoss), else torch's default -100."""
    return int(getattr(unwrap_loss(loss), "ignore_index", IGNORE_INDEX))


def log_prob_dim(out: torch.Tensor) -> int | None:
    """The class dimension of an output of log-probabilities (every logsumexp over it is 0), else None."""
    if out.is_floating_point() and out.dim() >= 2 and bool((out <= 0).all()):
        for dim in sorted({1, out.dim() - 1}):
            if bool((out.logsumexp(dim).abs() < LOG_PROB_TOL).all()):
                return dim
    return None


def uninformed_output(out: torch.Tensor) -> torch.Tensor:
    """The output of a model that knows nothing: all zeros (logits, regression), or uniform log-probabilities."""
    dim = log_prob_dim(out)
    if dim is not None:
        return torch.full_like(out, -math.log(out.shape[dim]))
    return torch.zeros_like(out)


def num_classes(loss_fn: Any, kind: str, output: Any) -> int | None:
    """Number of classes of a cross-entropy setup (the output's class dimension), else None."""
    if kind != "ce" or not isinstance(output, torch.Tensor) or output.dim() < 2:
        return None
    if classes_last(loss_fn) or output.dim() == 2:
        return int(output.shape[-1])
    return int(output.shape[1])


def class_logits(loss_fn: Any, output: torch.Tensor) -> torch.Tensor:
    """Cross-entropy outputs as ``(N, C)`` rows, whatever the layout (``(B,C)``, ``(B,T,C)``, ``(B,C,H,W)``)."""
    if output.dim() == 2 or classes_last(loss_fn):
        return output.reshape(-1, output.shape[-1])
    return output.movedim(1, -1).reshape(-1, output.shape[1])


def is_class_target(t: Any) -> bool:
    """An integer (not bool) tensor: class indices."""
    return isinstance(t, torch.Tensor) and not t.is_floating_point() and t.dtype != torch.bool


def label_problem(labels: torch.Tensor, classes: int, ignore: int = IGNORE_INDEX) -> str | None:
    """A sentence describing why integer class ``labels`` do not fit an output of ``classes`` classes
    (labels must be in ``[0, classes)``), or None when they fit. Usable before any loss is computed (torch's own
    error is an IndexError on CPU and a device-side assert on CUDA)."""
    y = labels.reshape(-1)
    y = y[y != ignore]
    if y.numel() == 0:
        return None
    lo, hi = int(y.min()), int(y.max())
    if lo >= 0 and hi < classes:
        return None
    msg = f"class labels span {lo}..{hi} but the output has {classes} classes: labels must be in [0, {classes})"
    if lo >= 1 and hi == classes:
        msg += "; the labels look 1-based (off by one): subtract 1 (`y = y - 1`)"
    elif lo >= 0 and hi >= classes:
        msg += f"; the output layer is too narrow for {hi + 1} classes, or the labels are not class indices"
    elif lo < 0:
        msg += f"; negative labels other than ignore_index={ignore}"
    return msg


def infer_loss(output: torch.Tensor, target: torch.Tensor, where: str) -> tuple[nn.Module, str]:
    """The default loss from the first batch's output and target: cross-entropy for integer class targets,
    BCE-with-logits for 0/1 targets, MSE for other float targets shaped like the output (README, setup file)."""
    o, t = tuple(output.shape), tuple(target.shape)
    shapes = f"output shape {o} ({output.dtype}), target shape {t} ({target.dtype})"
    if not target.is_floating_point() and target.dtype != torch.bool:
        # integer class targets -> cross-entropy
        if output.dim() == 2 and target.dim() == 1 and o[0] == t[0]:
            return nn.CrossEntropyLoss(), "cross_entropy"
        if output.dim() >= 2 and o[:-1] == t:
            if output.dim() == 2:
                return nn.CrossEntropyLoss(), "cross_entropy"
            return SequenceCrossEntropy(), "cross_entropy"
        if output.dim() >= 3 and o[0] == t[0] and o[2:] == t[1:]:
            return nn.CrossEntropyLoss(), "cross_entropy"
        if o == t:
            # integer targets with the output's shape: 0/1 multi-label targets
            if target.numel() and bool(((target == 0) | (target == 1)).all()):
                return FloatTargetLoss(nn.BCEWithLogitsLoss()), "bce_with_logits"
        raise SetupError(
            f"{where}: cannot infer a loss for integer class targets: {shapes}. Cross-entropy needs an output "
            "(B, C) for targets (B,), or (B, T, C) for targets (B, T). Fix the output layer's width or define "
            "`loss = ...` in the setup file."
        )
    binary = target.numel() > 0 and bool(((target == 0) | (target == 1)).all())
    if o == t:
        if binary:
            return FloatTargetLoss(nn.BCEWithLogitsLoss()), "bce_with_logits"
        return nn.MSELoss(), "mse"
    if output.numel() == target.numel() and output.dim() == target.dim() + 1 and o[-1] == 1:
        if binary:
            return SqueezedLoss(nn.BCEWithLogitsLoss()), "bce_with_logits"
        return SqueezedLoss(nn.MSELoss()), "mse"
    raise SetupError(
        f"{where}: output and target shapes do not fit any default loss: {shapes}. For regression the output "
        "must have the target's shape; for classification use integer targets. Fix the model's output layer "
        "or define `loss = ...` in the setup file."
    )


# ---------------------------------------------------------------------------------------------- models with own losses
def own_loss(output: Any) -> torch.Tensor | None:
    """The scalar loss a model returns with its output (``output.loss`` / ``output["loss"]``), else None."""
    loss = output.get("loss") if isinstance(output, Mapping) else getattr(output, "loss", None)
    if isinstance(loss, torch.Tensor) and loss.numel() == 1 and loss.is_floating_point():
        return loss
    return None


def logits_path(output: Any) -> Path | None:
    """Where the scores of a model output that is not a tensor sit: its ``logits`` entry (Hugging Face), else None."""
    for path, t in named_tensors(output):
        if path == ("logits",) and t.is_floating_point() and t.dim() >= 1:
            return path
    return None


def _own_loss_candidates(logits: torch.Tensor, target: torch.Tensor) -> list[tuple[nn.Module, str]]:
    """Standard losses that fit ``(logits, target)``, most usual first."""
    o, t = tuple(logits.shape), tuple(target.shape)
    out: list[tuple[nn.Module, str]] = []
    if is_class_target(target):
        if logits.dim() == 2 and target.dim() == 1 and o[0] == t[0]:
            out.append((nn.CrossEntropyLoss(), "cross_entropy"))
        if logits.dim() >= 3 and o[:-1] == t:
            out.append((ShiftedSequenceCrossEntropy(), "next-token cross_entropy"))
            out.append((SequenceCrossEntropy(), "cross_entropy"))
        if logits.dim() >= 3 and o[0] == t[0] and o[2:] == t[1:]:
            out.append((nn.CrossEntropyLoss(), "cross_entropy"))
    elif isinstance(target, torch.Tensor) and target.is_floating_point():
        if o == t:
            out += [(nn.BCEWithLogitsLoss(), "bce_with_logits"), (nn.MSELoss(), "mse")]
        elif logits.numel() == target.numel() and o[-1:] == (1,):
            out += [(SqueezedLoss(nn.MSELoss()), "mse"), (SqueezedLoss(nn.BCEWithLogitsLoss()), "bce_with_logits")]
    return out


def match_own_loss(output: Any, target: Any) -> tuple[nn.Module, str] | None:
    """For a model that returns its own loss and logits: the standard loss on ``output.logits`` that reproduces
    ``output.loss`` (to ``OWN_LOSS_RTOL``), wrapped to read the logits, with its name; None when none does."""
    own, path = own_loss(output), logits_path(output)
    if own is None or path is None or not isinstance(target, torch.Tensor):
        return None
    logits = get_path(output, path)
    ref = float(own.detach())
    for loss, name in _own_loss_candidates(logits, target):
        try:
            with torch.no_grad():
                value = float(loss(logits.detach(), target))
        except Exception:
            continue
        if math.isfinite(value) and abs(value - ref) <= OWN_LOSS_RTOL * max(1.0, abs(ref)):
            return HeadLoss(loss, path), name
    return None


# ---------------------------------------------------------------------------------------------- torch call recorder
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

    def chain_to(self, t: torch.Tensor, sources: Mapping[int, Path]) -> tuple[Path, list[Call]] | None:
        """The source ``t`` was made from (its path in ``sources``, keyed by tensor id) through shape ops / casts
        only, and those ops, first to last; None when ``t`` comes from anything else."""
        chain: list[Call] = []
        for _ in range(50):
            if id(t) in sources:
                return sources[id(t)], chain[::-1]
            i = self.producer.get(id(t))
            if i is None:
                return None
            call = self.calls[i]
            src = first_tensor(call.args)
            if call.name not in SHAPE_OPS or src is None:
                return None
            chain.append(call)
            t = src
        return None


def bound(call: Call) -> dict[str, Any]:
    """The call's arguments by parameter name (`input`, `target`, `reduction`...)."""
    try:
        return dict(inspect.signature(call.func).bind(*call.args, **call.kwargs).arguments)
    except (TypeError, ValueError):
        return {"input": call.args[0] if call.args else None, "target": call.args[1] if len(call.args) > 1 else None}


def replay(chain: list[Call], t: Any) -> Any:
    """Apply the recorded shape ops of ``chain`` to ``t`` in place of the tensor they first received."""
    for call in chain:
        args = list(call.args)
        k = next(i for i, a in enumerate(args) if isinstance(a, torch.Tensor))
        args[k] = t
        t = call.func(*args, **call.kwargs)
    return t


# ---------------------------------------------------------------------------------------------- heads
# torch loss functions a term of a user's loss is recognised by, and the kind each one is.
TERM_LOSSES = {
    "cross_entropy": "ce",
    "binary_cross_entropy_with_logits": "bce",
    "mse_loss": "mse",
    "nll_loss": "nll",
    "binary_cross_entropy": "bce_probs",
    "l1_loss": "l1",
    "smooth_l1_loss": "l1",
    "huber_loss": "l1",
    "kl_div": "kl",
}


class TermLoss(nn.Module):
    """One term of a user's loss, as a loss of its own on (one output tensor, one target tensor): the recorded torch
    loss call, with the reshapes that led from the output and the target to its arguments replayed."""

    def __init__(self, call: Call, in_chain: list[Call], target_chain: list[Call] | None, kind: str) -> None:
        super().__init__()
        self.call, self.in_chain, self.target_chain, self.kind = call, in_chain, target_chain, kind
        args = bound(call)
        rows = args.get("input")
        self.classes_last = (
            kind == "ce" and isinstance(rows, torch.Tensor) and rows.dim() == 2 and len(in_chain) > 0
        )  # (B, T, C) logits reshaped to (B*T, C) rows

    def forward(self, output: torch.Tensor, target: Any) -> torch.Tensor:
        args = bound(self.call)
        args["input"] = replay(self.in_chain, output)
        if self.target_chain is not None:
            args["target"] = replay(self.target_chain, target)
        return self.call.func(**args)


@dataclass
class Head:
    """One output tensor and the loss term that judges it: the whole output with the setup's loss, the logits of a
    Hugging Face output, or one recognised term of a multi-task loss."""

    name: str  # as code reads it: output, output.logits, output[0]
    path: Path  # where the tensor sits in the output tree (() for a tensor output)
    target_path: Path | None  # where its target sits in the target tree (None: the target is not one tensor of it)
    loss: Callable[[Any, Any], torch.Tensor]  # (head tensor, head target) -> scalar
    kind: str  # "ce" | "bce" | "mse" | "custom" | another TERM_LOSSES kind
    weight: float = 1.0  # d total loss / d term at init (1 for the whole loss)
    value: float | None = None  # the term on the first batch

    def tensor(self, output: Any) -> torch.Tensor:
        return output if not self.path and isinstance(output, torch.Tensor) else get_path(output, self.path)

    def target(self, target: Any) -> Any:
        return target if self.target_path is None else get_path(target, self.target_path)

    def num_classes(self, output: torch.Tensor) -> int | None:
        return num_classes(self.loss, self.kind, output)


def identify_terms(loss_fn: Callable[[Any, Any], Any], output: Any, target: Any) -> list[Head]:
    """The terms of ``loss_fn(output, target)`` that are torch loss functions (``TERM_LOSSES``) of one output tensor
    (reached through reshapes / casts only) and one target tensor, with their value and weight in the total (the
    gradient of the total with respect to the term: 0.5 for ``ce + 0.5 * mse``). Other terms (a KL written out by
    hand, a penalty on the weights) are not heads. Runs the loss once under a ``Recorder``."""
    leaves: dict[int, Path] = {}
    named = dict(named_tensors(output))

    def leaf(t: torch.Tensor) -> torch.Tensor:
        return t.detach().clone().requires_grad_(True) if t.is_floating_point() else t

    out_leaf = map_tensors(output, leaf)
    for path, t in named_tensors(out_leaf):
        if path in named:
            leaves[id(t)] = path
    targets = {id(t): path for path, t in named_tensors(target)}
    rec = Recorder()
    with torch.enable_grad(), rec:
        total = loss_fn(out_leaf, target)
    if not isinstance(total, torch.Tensor) or total.numel() != 1 or not total.requires_grad:
        return []
    found: list[tuple[Head, torch.Tensor]] = []
    for call in rec.calls:
        kind = TERM_LOSSES.get(call.name)
        if kind is None or not isinstance(call.out, torch.Tensor) or call.out.numel() != 1:
            continue
        args = bound(call)
        x, y = args.get("input"), args.get("target")
        if not isinstance(x, torch.Tensor):
            continue
        src = rec.chain_to(x, leaves)
        if src is None:
            continue
        path, in_chain = src
        tgt = rec.chain_to(y, targets) if isinstance(y, torch.Tensor) else None
        if tgt is None:
            continue  # the target is not a tensor of the batch's targets: the term cannot be recomputed apart
        loss = TermLoss(call, in_chain, tgt[1], kind)
        head = Head(path_name(output, path), path, tgt[0], loss, kind, value=float(call.out.detach()))
        found.append((head, call.out))
    if not found:
        return []
    grads = torch.autograd.grad(total, [o for _, o in found], allow_unused=True, retain_graph=True)
    heads = []
    for (head, _), g in zip(found, grads):
        if g is not None:
            head.weight = float(g)
            heads.append(head)
    return heads
