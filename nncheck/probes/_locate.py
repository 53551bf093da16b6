"""Find where a non-finite value (NaN / inf) is first produced: the module, the torch op and the user's line.

Used by the ``numerics`` and ``gradient-flow`` probes. One pass of forward + loss + backward runs under a
``TorchFunctionMode`` that checks every torch op: the first op whose inputs are all finite but whose output is
not is the culprit of the forward pass. Every op output that carries a ``grad_fn`` gets a node hook; in the
backward pass the first node that receives finite gradients but produces a non-finite one is the culprit of
the backward pass. Forward pre-/post-hooks on every module keep a stack of the modules running, so each op is
attributed to the innermost module (by qualified name) that was executing when it ran.
This is a debugging pass: it costs a few times one training step and runs only when a problem was seen.
"""

from __future__ import annotations

import linecache
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from nncheck.context import Context
from nncheck.modelgraph import code_path, forward_hooks
from nncheck.setup import Batch
from nncheck.tensors import iter_tensors

_THIS_FILE = os.path.abspath(__file__)
_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__))
_NNCHECK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def nonfinite_counts(t: torch.Tensor) -> dict[str, int] | None:
    """``{"nan": n, "+inf": n, "-inf": n, "numel": n}`` for a float tensor holding a non-finite value, else None."""
    if not (t.is_floating_point() or t.is_complex()) or t.numel() == 0:
        return None
    t = t.detach()
    if bool(torch.isfinite(t).all()):
        return None
    if t.is_complex():
        t = torch.view_as_real(t)
    return {
        "nan": int(torch.isnan(t).sum()),
        "+inf": int((t == float("inf")).sum()),
        "-inf": int((t == float("-inf")).sum()),
        "numel": int(t.numel()),
    }


def all_finite(obj: Any) -> bool:
    """True when every float tensor inside ``obj`` (nested tuples / lists / dicts) is finite."""
    return all(nonfinite_counts(t) is None for t in iter_tensors(obj))


def describe_counts(c: dict[str, int]) -> str:
    parts = [f"{c[k]} {k.lstrip('+') if k == '+inf' else k}" for k in ("nan", "+inf", "-inf") if c.get(k)]
    return f"{', '.join(parts)} of {c['numel']} values"


def user_frame() -> tuple[str, int] | None:
    """(file, line) of the innermost frame of the user's code: the first frame, walking outwards from here,
    outside torch and the standard library; None when an nncheck frame comes first (the op ran in nncheck)."""
    skip = (_TORCH_DIR, os.path.dirname(os.__file__))
    frame = sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename) == _THIS_FILE:
        frame = frame.f_back
    while frame is not None:
        path = os.path.abspath(frame.f_code.co_filename)
        if path.startswith(_NNCHECK_DIR):
            return None
        if not path.startswith(skip) and not path.startswith("<"):
            return path, frame.f_lineno
        frame = frame.f_back
    return None


def format_frame(where: tuple[str, int] | None) -> str | None:
    """``file:line: code`` (the path relative to the working directory when it is below it)."""
    if where is None:
        return None
    path, lineno = where
    rel = os.path.relpath(path)
    code = linecache.getline(path, lineno).strip()
    return f"{path if rel.startswith('..') else rel}:{lineno}: {code}"


def op_name(func: Any) -> str:
    """A readable name for a torch callable: ``torch.log``, ``Tensor.__truediv__``, ``F.linear``."""
    name = getattr(func, "__name__", None) or repr(func)
    mod = getattr(func, "__module__", "") or ""
    qual = getattr(func, "__qualname__", name)
    if "Tensor" in qual or "TensorBase" in qual:
        return f"Tensor.{name}"
    if mod.startswith(("torch.nn.functional", "torch._C._nn")):
        return f"F.{name}"
    return f"torch.{name}"


@dataclass
class OpSite:
    """Where one op ran: its name, the innermost module running it, the user's source line."""

    op: str
    module: str  # qualified name ("" is the model itself; "<forward>" outside the model, "<loss>" in the loss)
    module_type: str
    frame: tuple[str, int] | None
    counts: dict[str, int] = field(default_factory=dict)
    input_min: float | None = None
    input_max: float | None = None
    input_has_zero: bool = False
    backward_node: str | None = None
    path: str = ""  # the module as a Python expression (`model[0]`, `model.enc`), set by locate()

    @property
    def line(self) -> str | None:
        return format_frame(self.frame)

    def module_label(self) -> str:
        if self.module in ("<forward>", "<loss>"):
            return "the setup's forward()" if self.module == "<forward>" else "the loss function"
        if not self.module:
            return f"the model itself (`{self.path or 'model'}`, {self.module_type})"
        return f"module `{self.path or code_path(self.module)}` ({self.module_type})"


def _input_stats(args: Any) -> tuple[float | None, float | None, bool]:
    lo = hi = None
    zero = False
    for t in iter_tensors(args):
        if not t.is_floating_point() or t.numel() == 0:
            continue
        t = t.detach()
        lo = float(t.min()) if lo is None else min(lo, float(t.min()))
        hi = float(t.max()) if hi is None else max(hi, float(t.max()))
        zero = zero or bool((t == 0).any())
    return lo, hi, zero


class _Watch(TorchFunctionMode):
    """Records the first op that turns finite inputs into a non-finite output, and tags grad nodes with sites."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, str]] = []
        self.phase = "<forward>"
        self.first: OpSite | None = None
        self.backward_first: OpSite | None = None
        self._hooked: set[int] = set()
        self._keep: list[Any] = []

    def where(self) -> tuple[str, str]:
        return self.stack[-1] if self.stack else (self.phase, "")

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        inputs_ok = self.first is not None or all_finite((args, kwargs))
        lo_hi = _input_stats((args, kwargs)) if self.first is None and inputs_ok else None
        out = func(*args, **kwargs)
        if getattr(func, "__name__", "") in ("__get__", "__set__"):
            return out
        module, mtype = self.where()
        if self.first is None and inputs_ok:
            for t in iter_tensors(out):
                c = nonfinite_counts(t)
                if c is not None:
                    lo, hi, zero = lo_hi or (None, None, False)
                    self.first = OpSite(op_name(func), module, mtype, user_frame(), c, lo, hi, zero)
                    break
        self._hook_nodes(out, func, module, mtype)
        return out

    def _hook_nodes(self, out: Any, func: Any, module: str, mtype: str) -> None:
        for t in iter_tensors(out):
            node = t.grad_fn
            if node is None or id(node) in self._hooked:
                continue
            self._hooked.add(id(node))
            self._keep.append(node)
            site = OpSite(op_name(func), module, mtype, user_frame(), backward_node=type(node).__name__)
            node.register_hook(lambda gi, go, site=site: self._on_backward(gi, go, site))

    def _on_backward(self, grad_inputs: Any, grad_outputs: Any, site: OpSite) -> None:
        if self.backward_first is not None or not all_finite(grad_outputs):
            return
        for g in iter_tensors(grad_inputs):
            c = nonfinite_counts(g)
            if c is not None:
                site.counts = c
                self.backward_first = site
                return


@dataclass
class Located:
    """What the debugging pass found (each part None when that stage stayed finite)."""

    forward: OpSite | None
    backward: OpSite | None
    output_bad: bool
    loss_bad: bool
    grads_bad: list[str]


# The CPU RNG state and, on a CUDA device, that device's.
RngState = tuple[torch.Tensor, torch.Tensor | None]


def rng_state(device: torch.device) -> RngState:
    """The RNG state(s) a forward pass on ``device`` draws from (cheaper than re-seeding)."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def set_rng_state(state: RngState, device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def locate(
    ctx: Context,
    model: nn.Module,
    batch: Batch,
    rng: RngState | None = None,
    backward: bool = True,
) -> Located:
    """Re-run forward, loss and backward on ``batch`` watching every op; ``rng`` (from ``rng_state``) replays
    the random draws (dropout masks) of the pass that showed the problem."""
    watch = _Watch()

    def push(mod: nn.Module, inp: Any, name: str) -> None:  # returns None: the input is kept
        watch.stack.append((name, type(mod).__name__))

    def pop(mod: nn.Module, inp: Any, out: Any, name: str) -> None:
        if watch.stack:
            watch.stack.pop()

    for p in model.parameters():
        p.grad = None
    if rng is not None:
        set_rng_state(rng, ctx.device)
    loss = out = None
    with forward_hooks(model.named_modules(), pop, pre=push), watch:
        out, y = ctx.forward(model, batch)
        watch.stack.clear()
        watch.phase = "<loss>"
        loss = ctx.loss(out, y)
    output_bad = not all_finite(out)
    loss_bad = not all_finite(loss)
    grads_bad: list[str] = []
    if backward and isinstance(loss, torch.Tensor) and loss.requires_grad:
        loss.backward()
        grads_bad = [n for n, p in model.named_parameters() if p.grad is not None and nonfinite_counts(p.grad)]
    for site in (watch.first, watch.backward_first):
        if site is not None and site.module not in ("<forward>", "<loss>"):
            site.path = code_path(site.module, model)
    return Located(watch.first, watch.backward_first, output_bad, loss_bad, [param_path(n, model) for n in grads_bad])


def param_path(name: str, model: nn.Module) -> str:
    """``0.weight`` -> ``model[0].weight``: a parameter's (or buffer's) qualified name as a Python expression."""
    owner, _, leaf = name.rpartition(".")
    return f"{code_path(owner, model)}.{leaf}"


def fix_hint(site: OpSite | None, backward: bool = False) -> str:
    """The concrete fix for the op that produced the non-finite value."""
    op = (site.op if site else "").lower()
    base = op.split(".")[-1].strip("_")
    if base.startswith("r") and base[1:] in ("truediv", "div"):
        base = base[1:]
    if backward:
        if base in ("sqrt", "norm", "pow", "cdist", "vector_norm", "linalg_vector_norm"):
            return (
                "The derivative of sqrt (and of a norm) is infinite at 0: a distance or norm of a zero vector gives "
                "NaN gradients. Add an epsilon inside: `torch.sqrt(d2 + 1e-12)` / `(a - b).pow(2).sum(-1).add(1e-12)"
                ".sqrt()`, or mask the diagonal of pairwise distances."
            )
        return (
            f"The backward of `{site.op if site else 'an op'}` produces a non-finite gradient from finite ones: the op "
            "is evaluated where its derivative is infinite (sqrt/log/pow near 0, acos/asin at +-1). Keep its input "
            "away from that point with an epsilon or a clamp."
        )
    if base in ("log", "log2", "log10", "log_", "xlogy"):
        return (
            "`torch.log` of zero or negative values gives -inf / NaN. Use `torch.log(x.clamp_min(1e-8))`, "
            "`torch.log1p(x)` for counts, or `F.log_softmax` / `torch.logsumexp` instead of log(softmax(...))."
        )
    if base in ("truediv", "div", "div_", "truediv_", "reciprocal"):
        return (
            "A division by zero (e.g. `x / x.sum(dim, keepdim=True)` on an all-zero row gives 0/0 = NaN). Add an "
            "epsilon to the denominator: `x / (x.sum(dim=1, keepdim=True) + 1e-8)`, or use "
            "`F.normalize(x, p=1, dim=1)`."
        )
    if base in ("exp", "exp_", "pow", "expm1", "exp2", "cosh", "sinh"):
        return (
            "`torch.exp` overflows float32 above ~88 (inf, and inf/inf = NaN). Subtract the max before exponentiating "
            "(use `torch.softmax` / `torch.logsumexp`, which do), or clamp: `torch.exp(x.clamp(max=50))`; "
            "normalise the inputs."
        )
    if base in ("sqrt", "rsqrt", "sqrt_"):
        return (
            "`torch.sqrt` of negative values gives NaN. Clamp its input: `torch.sqrt(x.clamp_min(0) + 1e-12)` "
            "(or square / softplus it first if it must be positive)."
        )
    if base in ("acos", "asin", "atanh", "arccos", "arcsin"):
        return "An inverse trig function outside its domain: clamp to (-1 + 1e-6, 1 - 1e-6) first."
    return (
        "Print the tensors around that line; typical causes: log/sqrt of non-positive values, division by zero, "
        "exp overflow, float16 overflow (> 65504), an uninitialised tensor (`torch.empty`)."
    )
