"""batch-isolation: the output of sample i may depend on the input of sample i only (and, for causal sequence
models, output position t only on input positions <= t)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nncheck.kit import Context, Findings, ProbeSkip, Result, code_path, forward_hooks, param, probe
from nncheck.modelgraph import BATCHNORM_TYPES, without_dropout
from nncheck.probes._blockers import Blocker, find_blockers
from nncheck.setup import Batch
from nncheck.tensors import is_float, iter_tensors, named_tensors, path_name

# Perturbation fallback (no gradient reaches the input): relative change of output i when only the other samples'
# inputs change. Rows of a batched computation do not depend on other rows' values, so isolated models give 0
# exactly; 1e-5 leaves room for float32 rounding.
PERTURB_TOL = 1e-5
# Seed of the fixed random projection vector r: the probed scalar is (output[i] * r).sum(), never output[i].sum(),
# which is constant (zero gradient) when the outputs are probabilities that sum to 1.
PROJECTION_SEED = 1234

EMBEDDING_TYPES: tuple[type[nn.Module], ...] = (nn.Embedding, nn.EmbeddingBag)
# The key of a padding mask among a batch's inputs (Hugging Face's convention: 1 = a token, 0 = padding;
# https://huggingface.co/docs/transformers/glossary#attention-mask).
PADDING_MASK_KEY = "attention_mask"


# ---------------------------------------------------------------------------------------------- the graph
class NoGradient(Exception):
    """The output cannot be differentiated with respect to the inputs: fall back to perturbation."""


@dataclass
class Traced:
    """One forward pass with differentiable inputs: the leaves (inputs or embedding outputs), the model output (every
    batch-shaped tensor of a tuple / dict / ``ModelOutput``, flattened per sample and concatenated; the tensor itself
    for a tensor output), the output tensors one by one, and every module's batch-shaped output in the order the
    modules finish (to locate where samples mix)."""

    leaves: list[tuple[str, torch.Tensor]]
    output: torch.Tensor
    inner: list[tuple[str, torch.Tensor]] = field(default_factory=list)
    outputs: list[tuple[str, torch.Tensor]] = field(default_factory=list)  # (name as code reads it, tensor)
    main: torch.Tensor | None = None  # the output tensor the causal check reads (the logits)


def output_tensors(ctx: Context, out: Any, bs: int) -> list[tuple[str, torch.Tensor]]:
    """Every float tensor of the output whose first dimension is the batch (a scalar loss in a ``ModelOutput`` is
    left out), with its name: ``output``, ``output[1]``, ``output.logits``."""
    if isinstance(out, torch.Tensor):
        return [("output", out)] if out.dim() >= 1 and out.shape[0] == bs else []
    return [
        (path_name(out, path), t) for path, t in named_tensors(out) if is_float(t) and t.dim() >= 1 and t.shape[0] == bs
    ]


def combined(tensors: list[tuple[str, torch.Tensor]], bs: int) -> torch.Tensor:
    """One ``(bs, ...)`` tensor holding every output tensor: the tensor itself when there is one, else each one
    flattened per sample and concatenated."""
    if len(tensors) == 1:
        return tensors[0][1]
    return torch.cat([t.reshape(bs, -1) for _, t in tensors], dim=1)


def main_tensor(ctx: Context, out: Any, tensors: list[tuple[str, torch.Tensor]]) -> torch.Tensor:
    try:
        return ctx.output_tensor(out)
    except ProbeSkip:
        return tensors[0][1]


def _shares_storage(a: torch.Tensor, tensors: list[torch.Tensor]) -> bool:
    p = a.untyped_storage().data_ptr()
    return any(t.untyped_storage().data_ptr() == p for t in tensors)


def trace(ctx: Context, model: nn.Module, batch: Batch, bs: int) -> Traced:
    """Run the user's forward with float inputs (batch dim first) made leaves that require grad, and the output of
    the first embedding layer (the one fed from the batch's integer tensors) replaced by such a leaf."""
    leaves: list[tuple[str, torch.Tensor]] = []
    inner: list[tuple[str, torch.Tensor]] = []

    def as_leaf(t: torch.Tensor) -> torch.Tensor:
        if is_float(t) and t.dim() >= 1 and t.shape[0] == bs:
            leaf = t.detach().clone().requires_grad_(True)
            leaves.append((f"input {len(leaves)} {tuple(t.shape)}", leaf))
            return leaf.clone()  # a non-leaf copy: forward() may modify its input in place
        return t

    inputs = ctx.inputs_of(batch)
    int_inputs = [t for t in iter_tensors(inputs) if not is_float(t) and t.dtype != torch.bool and t.dim() >= 1]
    leafy = ctx.map_inputs(batch, as_leaf)
    emb_state: dict[str, Any] = {"done": False, "fallback": None}

    def emb_hook(mod: nn.Module, inp: tuple[Any, ...], out: Any, name: str) -> Any:
        if emb_state["done"] or not isinstance(out, torch.Tensor) or out.dim() < 1 or out.shape[0] != bs:
            return None
        tok = inp[0] if inp and isinstance(inp[0], torch.Tensor) else None
        fed_from_batch = tok is not None and _shares_storage(tok, int_inputs)
        if not fed_from_batch and emb_state["fallback"] is not None:
            return None
        leaf = out.detach().requires_grad_(True)
        if fed_from_batch:
            emb_state["done"] = True
            # a fallback leaf taken earlier came from an embedding not fed by the batch: drop it
            if emb_state["fallback"] is not None:
                leaves.remove(emb_state["fallback"])
        entry = (f"output of embedding {name} {tuple(out.shape)}", leaf)
        leaves.append(entry)
        if not fed_from_batch:
            emb_state["fallback"] = entry
        return leaf.clone()  # `h = emb(x); h += pos` must still work

    def inner_hook(mod: nn.Module, inp: tuple[Any, ...], out: Any, name: str) -> None:
        for t in iter_tensors(out):
            if t.requires_grad and t.dim() >= 1 and t.shape[0] == bs:
                inner.append((name, t))
                break

    embeddings = [(n, m) for n, m in model.named_modules() if isinstance(m, EMBEDDING_TYPES)] if int_inputs else []
    # containers too: nn.MultiheadAttention's work happens in its own forward, not in a child
    modules = [(n, m) for n, m in model.named_modules() if n]
    # the embedding hooks first: the inner hooks of an embedding then record the leaf that replaced its output
    with forward_hooks(embeddings, emb_hook), forward_hooks(modules, inner_hook), torch.enable_grad():
        out, _ = ctx.forward(model, leafy)
    tensors = output_tensors(ctx, out, bs)
    if not tensors:
        shapes = [tuple(t.shape) for t in iter_tensors(out)]
        raise ProbeSkip(f"no output tensor has the batch size {bs} as its first dimension (output shapes {shapes})")
    out_t = combined(tensors, bs)
    if not leaves:
        if int_inputs:
            raise NoGradient("the inputs are integer tensors and no nn.Embedding / nn.EmbeddingBag reads them")
        raise NoGradient("no float input tensor with the batch dimension first")
    if not out_t.requires_grad:
        raise NoGradient("no gradient path from the output to the input (torch.no_grad / detach in forward?)")
    return Traced(leaves, out_t, inner, tensors, main_tensor(ctx, out, tensors))


def graph_signature(t: torch.Tensor) -> list[str]:
    """The autograd graph behind ``t``: its nodes' types in depth-first order. Two forwards that ran the same ops in
    the same order give the same list."""
    out: list[str] = []
    seen: set[int] = set()
    stack = [t.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        out.append(type(fn).__name__)
        stack.extend(f for f, _ in reversed(fn.next_functions))
    return out


def projection(shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    """A fixed random vector for one sample's output (never output[i].sum(): constant for probabilities)."""
    g = torch.Generator().manual_seed(PROJECTION_SEED)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(device=like.device, dtype=like.dtype)


def row_max(g: torch.Tensor | None, n: int) -> torch.Tensor:
    """Largest |gradient| per row of the first dimension (zeros for an unused tensor)."""
    if g is None or g.numel() == 0:
        return torch.zeros(n, dtype=torch.float64)
    return g.detach().abs().reshape(n, -1).amax(dim=1).double().cpu()


def probe_samples(tr: Traced, bs: int, idx: list[int], tol: float) -> dict[str, Any]:
    """For each sample i: gradient of (output[i] * r).sum() on every leaf. Finds leaks (rows j != i) and samples
    whose output does not depend on their own input. Locates the first module whose output already mixes."""
    r = projection(tr.output.shape[1:], tr.output)
    tensors = [t for _, t in tr.leaves] + [t for _, t in tr.inner]
    worst: dict[str, Any] = {"ratio": 0.0}
    dead: list[int] = []
    mixed_inner: set[int] = set()
    nonfinite = False
    for i in idx:
        s = (tr.output[i] * r).sum()
        grads = torch.autograd.grad(s, tensors, retain_graph=True, allow_unused=True)
        nonfinite = nonfinite or any(
            g is not None and not bool(torch.isfinite(g).all()) for g in grads[: len(tr.leaves)]
        )
        own = 0.0
        per_leaf = []
        for (name, _), g in zip(tr.leaves, grads[: len(tr.leaves)]):
            m = row_max(g, bs)
            own = max(own, float(m[i]))
            others = m.clone()
            others[i] = 0
            j = int(others.argmax())
            per_leaf.append((name, j, float(others[j])))
        if own == 0.0:
            dead.append(i)
        for name, j, val in per_leaf:
            ratio = val / own if own > 0 else (float("inf") if val > 0 else 0.0)
            if ratio > tol and ratio > worst["ratio"]:
                worst = {"ratio": ratio, "sample": i, "leaks_from": j, "leaf": name, "grad": val, "own_grad": own}
        for n_inner, g in enumerate(grads[len(tr.leaves) :]):
            m = row_max(g, bs)
            own_i = float(m[i])
            m[i] = 0
            if float(m.max()) > tol * max(own_i, 1e-30):
                mixed_inner.add(n_inner)
    out: dict[str, Any] = {"samples": idx, "dead_samples": dead, "leak": worst["ratio"] > tol}
    out["nonfinite_grad"] = nonfinite
    if out["leak"]:
        out.update({k: v for k, v in worst.items()})
        out["where"] = locate(tr, mixed_inner)
    return out


def locate(tr: Traced, mixed_inner: set[int]) -> dict[str, str | None]:
    """Between which modules samples start to mix: after the last module (in execution order) whose output
    gradient already leaks, every later module output is isolated; the mixing happens in the next module or in
    the code that runs between them."""
    last_mixed = max(mixed_inner) if mixed_inner else -1
    before = tr.inner[last_mixed][0] if last_mixed >= 0 else None
    after = tr.inner[last_mixed + 1][0] if last_mixed + 1 < len(tr.inner) else None
    return {"after": before, "at_or_before": after}


# ---------------------------------------------------------------------------------------------- perturbation
def _output(ctx: Context, model: nn.Module, batch: Batch) -> torch.Tensor:
    ctx.seed_all()  # any randomness inside forward repeats exactly
    with torch.no_grad():
        out, _ = ctx.forward(model, batch)
    tensors = output_tensors(ctx, out, ctx.batch_size(batch))
    if not tensors:
        raise ProbeSkip(f"no output tensor has the batch size {ctx.batch_size(batch)} as its first dimension")
    return combined(tensors, ctx.batch_size(batch)).detach()


def _per_sample(ctx: Context, batch: Batch, bs: int, fn: Any) -> Batch:
    """Apply ``fn`` to every input tensor whose first dimension is the batch."""
    return ctx.map_inputs(batch, lambda t: fn(t) if t.dim() >= 1 and t.shape[0] == bs else t)


def perturb_samples(ctx: Context, model: nn.Module, batch: Batch, bs: int, idx: list[int]) -> dict[str, Any]:
    """The same test without gradients (forward passes only, dropout off): change every other sample's input
    (rolled by one along the batch) and see whether output i moves; give sample i another sample's input and see
    that it does. Used when no gradient reaches the inputs (a frozen backbone under torch.no_grad, integer
    inputs without an embedding layer)."""
    base = _output(ctx, model, batch)
    worst: dict[str, Any] = {"ratio": 0.0}
    dead: list[int] = []
    for i in idx:

        def others(t: torch.Tensor, i: int = i) -> torch.Tensor:
            t2 = t.roll(1, 0).clone()
            t2[i] = t[i]
            return t2

        def own(t: torch.Tensor, i: int = i) -> torch.Tensor:
            t2 = t.clone()
            t2[i] = t[(i + 1) % bs]
            return t2

        size = max(float(base[i].abs().max()), 1e-12)
        moved = float((_output(ctx, model, _per_sample(ctx, batch, bs, others))[i] - base[i]).abs().max())
        changed = float((_output(ctx, model, _per_sample(ctx, batch, bs, own))[i] - base[i]).abs().max())
        if changed / size <= PERTURB_TOL:
            dead.append(i)
        ratio = moved / size
        if ratio > PERTURB_TOL and ratio > worst["ratio"]:
            worst = {"ratio": ratio, "sample": i, "change": moved, "output_size": size}
    out: dict[str, Any] = {"samples": idx, "dead_samples": dead, "leak": worst["ratio"] > PERTURB_TOL}
    if out["leak"]:
        out.update(worst)
    return out


# ---------------------------------------------------------------------------------------------- causal
def first_sample_trace(ctx: Context, model: nn.Module, batch: Batch) -> Traced | None:
    """The forward of the batch's first sample alone, for the causal check (it reads sample 0's output and input
    only, and a leak across samples is the batch check's): each of its backward passes then costs one sample's, not
    the whole batch's. None when the batch cannot be cut or the forward does not take one sample (the batch's own
    trace is used then)."""
    try:
        return trace(ctx, model, ctx.slice_batch(batch, 1), 1)
    except Exception:
        return None


def probe_causal(ctx: Context, tr: Traced, tol: float, n_pos: int) -> dict[str, Any]:
    """Output position t of sample 0 must have zero gradient on input positions > t (time = dim 1)."""
    out = tr.main if tr.main is not None else tr.output
    leaves = [(n, t) for n, t in tr.leaves if t.dim() >= 2 and out.dim() >= 2 and t.shape[1] == out.shape[1]]
    if out.dim() < 3 or not leaves:
        return {"checked": False, "why": f"no input with the output's time axis (output {tuple(out.shape)})"}
    steps = int(out.shape[1])
    if steps < 2:
        return {"checked": False, "why": "sequence of length 1"}
    cand = list(range(steps - 1))
    if len(cand) > n_pos:
        cand = sorted({round(k * (steps - 2) / (n_pos - 1)) for k in range(n_pos)})
    r = projection(out.shape[2:], out)
    for t in cand:
        s = (out[0, t] * r).sum()
        grads = torch.autograd.grad(s, [x for _, x in leaves], retain_graph=True, allow_unused=True)
        past = future = 0.0
        src = -1
        for g in grads:
            if g is None:
                continue
            m = g[0].detach().abs().reshape(steps, -1).amax(dim=1).double().cpu()
            past = max(past, float(m[: t + 1].max()))
            fut = m[t + 1 :]
            if fut.numel() and float(fut.max()) > future:
                future, src = float(fut.max()), t + 1 + int(fut.argmax())
        ratio = future / past if past > 0 else (float("inf") if future > 0 else 0.0)
        if ratio > tol:
            return {
                "checked": True,
                "leak": True,
                "first_leaking_position": t,
                "leaks_from_position": src,
                "ratio": ratio,
                "positions_checked": len(cand),
                "seq_len": steps,
            }
    return {"checked": True, "leak": False, "positions_checked": len(cand), "seq_len": steps}


# ---------------------------------------------------------------------------------------------- padding
def padding_mask(ctx: Context, batch: Batch, bs: int) -> torch.Tensor | None:
    """The batch's attention mask (Hugging Face convention: 1 = a token, 0 = padding; found under the key
    ``attention_mask`` of the batch's inputs), when it is ``(bs, T)``, holds only 0 / 1 and marks some padding."""
    for path, t in named_tensors(ctx.inputs_of(batch)):
        if not path or path[-1] != PADDING_MASK_KEY or t.dim() != 2 or t.shape[0] != bs:
            continue
        m = t.detach()
        if bool(((m == 0) | (m == 1)).all()) and bool((m == 0).any()):
            return m.bool()
    return None


def probe_padding(tr: Traced, mask: torch.Tensor, idx: list[int], tol: float) -> dict[str, Any]:
    """For samples with padding: the outputs at their real positions (the whole output when it has no time axis of
    the mask's length) must have zero gradient on the leaves at their padded positions (mask 0)."""
    steps = int(mask.shape[1])
    leaves = [(n, t) for n, t in tr.leaves if t.dim() >= 2 and t.shape[1] == steps]
    padded = [i for i in range(mask.shape[0]) if not bool(mask[i].all())]
    if not leaves or not padded:
        return {"checked": False, "why": "no input leaf with the mask's time axis" if not leaves else "no padding"}
    chosen = sorted({*(i for i in idx if i in padded), padded[0], padded[-1]})
    worst: dict[str, Any] = {"ratio": 0.0}
    for i in chosen:
        real = mask[i]
        s = torch.zeros((), dtype=tr.output.dtype, device=tr.output.device)
        for _, t in tr.outputs:
            rows = t[i][real] if t.dim() >= 2 and t.shape[1] == steps else t[i]
            if rows.numel():
                s = s + (rows * projection(rows.shape, rows)).sum()
        if not s.requires_grad:
            continue
        grads = torch.autograd.grad(s, [x for _, x in leaves], retain_graph=True, allow_unused=True)
        own = pad = 0.0
        for g in grads:
            if g is None:
                continue
            m = g[i].detach().abs().reshape(steps, -1).amax(dim=1).double().cpu()
            own = max(own, float(m[real.cpu()].max()) if bool(real.any()) else 0.0)
            pad = max(pad, float(m[~real.cpu()].max()))
        ratio = pad / own if own > 0 else (float("inf") if pad > 0 else 0.0)
        if ratio > worst["ratio"]:
            worst = {"ratio": ratio, "sample": i, "padded_positions": int((~real).sum()), "seq_len": steps}
    return {"checked": True, "leak": worst["ratio"] > tol, "samples": chosen, **worst}


# ---------------------------------------------------------------------------------------------- measure
def measure_mode(
    ctx: Context, model: nn.Module, batch: Batch, bs: int, idx: list[int], tol: float
) -> tuple[dict[str, Any], Traced | None]:
    """Gradient test on ``model`` (in its current mode); perturbation test when no gradient reaches the inputs."""
    try:
        tr = trace(ctx, model, batch, bs)
    except NoGradient as e:
        res = perturb_samples(ctx, without_dropout(model), batch, bs, idx)
        return {**res, "method": "perturbation", "why": str(e)}, None
    res = probe_samples(tr, bs, idx, tol)
    if _all_dead(res) and not res["leak"]:
        # no gradient on any own input: either the input is ignored, or the path is cut (torch.no_grad around a
        # frozen backbone); forward passes tell which
        pert = perturb_samples(ctx, without_dropout(model), batch, bs, idx)
        if len(pert["dead_samples"]) < len(idx):
            why = (
                "the input gradients are not finite (NaN / inf)"
                if res["nonfinite_grad"]
                else "no gradient reaches the inputs, yet the output changes with them (torch.no_grad / detach)"
            )
            return {**pert, "method": "perturbation", "why": why}, None
    return {**res, "method": "gradient"}, tr


def _all_dead(res: dict[str, Any]) -> bool:
    """No probed sample's output depends on its own input."""
    return bool(res["dead_samples"]) and len(res["dead_samples"]) == len(res["samples"])


@dataclass
class Measurement:
    """Sample isolation in eval mode, then (when eval mode is isolated) in train mode, and causality along time."""

    batch_size: int
    samples: list[int]
    eval_model: nn.Module
    eval: dict[str, Any]  # measure_mode's answer in eval mode
    leaves: list[str]  # what the gradients were taken on (inputs, embedding outputs)
    causal_declared: bool
    causal: dict[str, Any]  # probe_causal's answer, or why it was not checked
    stuck: list[str]  # BatchNorms still in training mode after model.eval()
    padding: dict[str, Any] = field(default_factory=dict)  # probe_padding's answer, or why it was not checked
    outputs: list[str] = field(default_factory=list)  # the output tensors checked (several for a multi-output model)
    batch_stats: list[str] = field(default_factory=list)  # BatchNorms without running statistics (eval uses the batch)
    blocker: Blocker | None = None  # what cuts every probed sample's output from its input (eval mode)
    train_model: nn.Module | None = None
    train: dict[str, Any] | None = None  # measure_mode's answer in train mode: None when eval mode fails
    batchnorms: list[str] = field(default_factory=list)  # of the train-mode model: they mix samples by design


def measure(ctx: Context, p: Params) -> Measurement:
    """``tol`` is the measurement's resolution: a larger gradient ratio is a leak. Eval mode first; train mode is
    measured only when eval mode neither leaks nor ignores the input."""
    batch = ctx.batch()
    bs = ctx.batch_size(batch)
    if bs < 2:
        raise ProbeSkip("the first batch holds one sample: nothing to isolate")
    n = max(1, min(p.samples, bs))
    idx = sorted({round(k * (bs - 1) / max(n - 1, 1)) for k in range(n)})

    model = ctx.fresh_model(train=False)
    stuck = [name for name, mod in model.named_modules() if isinstance(mod, BATCHNORM_TYPES) and mod.training]
    ev, tr = measure_mode(ctx, model, batch, bs, idx, p.tol)
    if not ctx.setup.causal:
        causal = {"checked": False, "why": "the setup does not declare causal = True"}
    elif tr is None:
        causal = {"checked": False, "why": "no gradient reaches the inputs"}
    else:
        causal = probe_causal(ctx, first_sample_trace(ctx, model, batch) or tr, p.tol, p.positions)
    mask = padding_mask(ctx, batch, bs)
    if mask is None:
        padding = {"checked": False, "why": f"no `{PADDING_MASK_KEY}` with padding among the inputs"}
    elif tr is None:
        padding = {"checked": False, "why": "no gradient reaches the inputs"}
    else:
        padding = probe_padding(tr, mask, idx, p.tol)
    leaves = [name for name, _ in tr.leaves] if tr else []
    outputs = [name for name, _ in tr.outputs] if tr else []
    eval_out = tr.output.detach() if tr is not None else None
    eval_graph = graph_signature(tr.output) if tr is not None else None
    del tr
    m = Measurement(bs, idx, model, ev, leaves, ctx.setup.causal, causal, stuck, padding, outputs)
    m.batch_stats = [
        name for name, mod in model.named_modules() if isinstance(mod, BATCHNORM_TYPES) and mod.running_mean is None
    ]
    if ev["leak"]:
        return m
    if _all_dead(ev):
        # a module that zeroes its whole output (every ReLU unit dead, an embedding fed only padding) explains it
        m.blocker = next(iter(find_blockers(ctx, ctx.fresh_model(train=False), batch)), None)
        return m
    if eval_out is not None and not stuck and not any(isinstance(mod, BATCHNORM_TYPES) for mod in model.modules()):
        # (BatchNorm normalises with batch statistics in train mode: measured below) a train-mode forward (dropout
        # modules off) that gives the eval-mode outputs bit for bit through the same autograd graph (the same ops in
        # the same order: a straight-through `h + (m - m.detach())` under `if self.training:` adds nodes) computes
        # the same function of the batch here (no batch statistics, no `if self.training:` branch that changes it):
        # its dependencies are the ones just measured, so no second set of backward passes
        twin = without_dropout(ctx.fresh_model(train=True))
        try:
            tw: Traced | None = trace(ctx, twin, batch, bs)
        except (NoGradient, ProbeSkip):
            tw = None
        if tw is not None and torch.equal(tw.output.detach(), eval_out) and graph_signature(tw.output) == eval_graph:
            m.train_model, m.train = twin, {**ev, "same_outputs_as_eval": True}
            return m
    m.train_model = ctx.fresh_model(train=True)
    if ev["method"] == "perturbation":
        without_dropout(m.train_model)
    m.train, _ = measure_mode(ctx, m.train_model, batch, bs, idx, p.tol)
    m.batchnorms = [name for name, mod in m.train_model.named_modules() if isinstance(mod, BATCHNORM_TYPES)]
    return m


# ---------------------------------------------------------------------------------------------- judge
BATCH_HINT = (
    "Something in forward() mixes the batch dimension{where}. Look for: a reshape/view that moves the batch dim "
    "(`x.view(-1, batch)`, `x.transpose(0, 1).reshape(B, -1)`: keep `x.reshape(x.shape[0], -1)`); a reduction over "
    "dim 0 (`x - x.mean(0)`, `softmax(dim=0)`, `x / x.sum(0)`: reduce over the feature dims, e.g. `x.mean(-1, "
    "keepdim=True)`, or use nn.LayerNorm); an nn.LSTM / nn.GRU / nn.MultiheadAttention / nn.Transformer built "
    "without `batch_first=True` but fed (B, T, C) tensors: pass `batch_first=True` (or permute to (T, B, C))."
)
DEAD_HINT = (
    "Output i does not depend on input i at all: the input is overwritten or detached in forward() "
    "(`x = x * 0`, `torch.zeros_like(x)`, `x.detach()` before the first layer, a constant buffer fed instead of x)."
)
STUCK_HINT = (
    "model.eval() did not put every BatchNorm in eval mode: do not override `train()` / `eval()` without "
    "calling `super().train(mode)`. "
)
CAUSAL_HINT = (
    "The model is declared causal (`causal = True`) but output position {t} depends on input position {src}: "
    "the attention mask is missing or wrong. Pass a causal mask to every attention layer, e.g. "
    "`mask = nn.Transformer.generate_square_subsequent_mask(T)` and `self.blocks(h, mask=mask, is_causal=True)` "
    "(or `F.scaled_dot_product_attention(q, k, v, is_causal=True)`); the mask must be -inf ABOVE the diagonal "
    "(`torch.triu(..., diagonal=1)`), not below it. Also check padding / convolutions for look-ahead."
)


BATCH_STATS_HINT = (
    "BatchNorm {paths} keeps no running statistics (`track_running_stats=False`), so model.eval() still normalises "
    "each batch with its own mean and variance and a prediction depends on the rest of the batch: build it with the "
    "default `track_running_stats=True` (or use nn.GroupNorm / nn.LayerNorm, which never look at other samples). "
)
PADDING_HINT = (
    "A padded position (attention_mask == 0) reaches the output of a real token: the mask is not passed to the model "
    "(`model(input_ids=..., attention_mask=batch['attention_mask'])` in your forward) or it is inverted (Hugging Face "
    "models take 1 for a token and 0 for padding; PyTorch's `key_padding_mask` is the opposite: True = padding). "
    "Also check a pooling over the sequence: average only the real tokens (`(h * mask[..., None]).sum(1) / "
    "mask.sum(1, keepdim=True)`)."
)
TRAIN_ONLY_HINT = (
    "A module mixes samples only in training mode (a batch statistic computed under `if self.training:`, a custom "
    "normalisation over dim 0; if it is a hand-written BatchNorm, skip this probe for the setup). "
)


def _where(res: dict[str, Any], model: nn.Module) -> str:
    w = res.get("where") or {}
    a, b = w.get("after"), w.get("at_or_before")
    a = code_path(a, model) if a else a
    b = code_path(b, model) if b else b
    if a and b:
        return f" between module `{a}` and module `{b}` (in `{b}` or in the code that runs before it)"
    if b:
        return f" before module `{b}` (between the input and `{b}`, or in `{b}` itself)"
    if a:
        return f" after module `{a}` (in the code between `{a}` and the output)"
    return ""


def _leak_msg(mode: str, res: dict[str, Any]) -> str:
    if res.get("method") == "perturbation":
        return (
            f"{mode} mode: output of sample {res['sample']} changes by {res['change']:.3g} ({res['ratio']:.3g} x its "
            "size) when only the other samples' inputs change"
        )
    size = (
        f"{res['ratio']:.3g} x the largest on its own input" if res["own_grad"] > 0 else "while its own input gets none"
    )
    return (
        f"{mode} mode: output of sample {res['sample']} has gradient on the input of sample {res['leaks_from']} "
        f"({res['grad']:.3g}, {size}; on the {res['leaf']})"
    )


def judge(m: Measurement, p: Params) -> Findings:
    ev, model = m.eval, m.eval_model
    f = Findings(
        measured={"batch_size": m.batch_size, "eval": ev, "leaves": m.leaves, "causal": m.causal},
        expected={"tol": p.tol, "leak": False},
    )
    if ev["method"] == "perturbation":
        f.note(f"checked by perturbing inputs (forward passes only): {ev['why']}")

    if ev["leak"]:
        stuck_txt = ""
        if m.stuck:
            paths = ", ".join(code_path(n, model) for n in m.stuck[:3])
            stuck_txt = f"; BatchNorm {paths} stays in training mode after model.eval() (an overridden train()/eval()?)"
        hint = STUCK_HINT if m.stuck else ""
        if m.batch_stats:
            paths = ", ".join(f"`{code_path(n, model)}`" for n in m.batch_stats[:3])
            more = "..." if len(m.batch_stats) > 3 else ""
            stuck_txt += (
                f"; BatchNorm {paths}{more} has track_running_stats=False: it normalises with the statistics of the "
                "batch in eval mode too"
            )
            hint = BATCH_STATS_HINT.format(paths=paths) + hint
        where = _where(ev, model)
        f.fail(_leak_msg("eval", ev) + where + stuck_txt, hint + BATCH_HINT.format(where=where))
        return f
    if _all_dead(ev):
        b = m.blocker
        f.fail(
            f"eval mode: the output of sample(s) {ev['dead_samples']} does not change with its own input "
            f"({ev['method']}): {b.cause if b else 'the output does not depend on the input'}",
            f"The input reaches the model but `{b.path}` blocks it: {b.fix}." if b else DEAD_HINT,
        )
        return f
    if ev["dead_samples"]:
        f.note(
            f"sample(s) {ev['dead_samples']} get no gradient on their own input in eval mode (e.g. every ReLU on "
            "their path is inactive); the others do"
        )

    trn, train_model = m.train, m.train_model
    assert trn is not None and train_model is not None
    f.measured["train"] = trn
    if trn["leak"] and m.batchnorms:
        trn["expected_from_batchnorm"] = m.batchnorms
        bn_paths = ", ".join(code_path(n, train_model) for n in m.batchnorms[:3])
        f.note(
            f"train mode mixes samples ({trn['ratio']:.3g} x) through BatchNorm batch statistics "
            f"({bn_paths}{'...' if len(m.batchnorms) > 3 else ''}): expected; eval mode is isolated"
        )
    elif trn["leak"]:
        where = _where(trn, train_model)
        f.fail(
            _leak_msg("train", trn) + where + "; eval mode is isolated and the model has no BatchNorm",
            TRAIN_ONLY_HINT + BATCH_HINT.format(where=where),
        )
        return f

    pad = m.padding
    f.measured["padding"] = pad
    if pad.get("leak"):
        f.expected["padding_leak"] = False
        f.fail(
            f"padding leak: the output of sample {pad['sample']} depends on its {pad['padded_positions']} padded "
            f"position(s) (`{PADDING_MASK_KEY}` == 0; ratio {pad['ratio']:.3g} x its largest gradient on its real "
            "tokens)",
            PADDING_HINT,
        )
    causal = m.causal
    if causal.get("leak"):
        f.expected["causal_leak"] = False
        f.fail(
            f"causal leak: output position {causal['first_leaking_position']} depends on input position "
            f"{causal['leaks_from_position']} (ratio {causal['ratio']:.3g}; sequence length {causal['seq_len']})",
            CAUSAL_HINT.format(t=causal["first_leaking_position"], src=causal["leaks_from_position"]),
        )
    elif m.causal_declared and not causal.get("checked"):
        f.note(f"causal check skipped: {causal.get('why')}")
    return f


def _summary(m: Measurement) -> str:
    mode = "eval mode (train mode mixes through BatchNorm)" if m.train and m.train["leak"] else "eval and train mode"
    msg = f"samples {m.samples} depend only on their own input in {mode}"
    if len(m.outputs) > 1:
        shown = ", ".join(m.outputs[:4]) + (", ..." if len(m.outputs) > 4 else "")
        msg += f" (every output tensor: {shown})"
    if m.padding.get("checked"):
        msg += f"; padded positions reach no real token's output ({len(m.padding['samples'])} samples checked)"
    if m.causal.get("checked"):
        msg += f"; causal: no position sees the future ({m.causal['positions_checked']} positions checked)"
    return msg


# ---------------------------------------------------------------------------------------------- probe
@dataclass(frozen=True)
class Params:
    """Parameters of batch-isolation (`[tool.nncheck.probes.batch-isolation]`)."""

    samples: int = param(
        3,
        source=(
            "Sample indices probed (the first, middle and last of the batch), one backward pass each through a "
            "graph built once: a design choice."
        ),
    )
    tol: float = param(
        1e-06,
        source=(
            'Karpathy, "A Recipe for Training Neural Networks" (2019): "use backprop to chart dependencies ... '
            'ensure that you get a non-zero gradient only on the i-th input." Isolated models give exactly 0 (no '
            "path in the graph; masked attention gives exp(-inf) = 0); every leak of checks/bi_*.py is >= 0.024 "
            "x the sample's own gradient (seeds 0-2; lowest: checks/bi_causal_lm_no_mask.py, seed 0)."
        ),
    )
    positions: int = param(
        32,
        fast=8,
        source=(
            "Time positions probed for causal leaks (evenly spaced; all of them for shorter sequences), one "
            "backward pass each: a design choice. The causal bugs of checks/ (bi_causal_*.py, sequence length 16) "
            "leak from position 0 (seeds 0-2)."
        ),
    )


@probe("batch-isolation", title="Per-sample gradient isolation", order=50, params=Params)
def batch_isolation(ctx: Context, p: Params) -> Result:
    """Checks that each sample's output depends on its own input only (and on the past only, for causal models).

    What it does:
        Karpathy's "use backprop to chart dependencies". Every output tensor whose first dimension is the batch
        is checked (each head of a tuple / dict / dataclass / Hugging Face `ModelOutput`; a scalar `.loss` is left
        out). On the first batch, float inputs with the batch
        dimension first (every one of a tuple / dict) are made leaves that require grad; for integer (token)
        inputs, the output of the first nn.Embedding / nn.EmbeddingBag is (a forward hook). For a few samples i
        ({samples}: first, middle, last) it takes the gradient of (output[i] * r).sum() (r a fixed random
        vector: a plain sum has no gradient through softmax outputs) on every leaf. First in eval mode (no
        BatchNorm batch statistics, no dropout), then in train mode, unless a train-mode forward with dropout
        modules off gives the eval-mode outputs bit for bit through the same autograd graph (the same function
        of the batch: no batch statistics, no branch on `self.training` that changes anything; measured["train"]
        then says `same_outputs_as_eval`). When the setup declares `causal = True`,
        it also checks in eval mode that output position t of the first sample has zero gradient on its input
        positions > t ({positions}, evenly spaced; reported in measured["causal"]), on a forward of that sample
        alone (one sample's backward per position) when the batch can be cut. When the batch's inputs
        hold an `attention_mask` with padding (Hugging Face convention: 1 = token, 0 = padding), the outputs of a
        padded sample's real tokens (its whole output when it has no time axis) must have zero gradient on its
        padded positions (a mask not passed to the model, or inverted, fails). On a leak, gradients on
        each module's output locate the first module past which the samples stay mixed. Where no gradient
        reaches the inputs (a frozen backbone under torch.no_grad, NaN gradients, integer inputs without an
        embedding layer) the same questions are answered by forward passes: change the other samples' inputs
        (output i must not move) and sample i's own input (output i must move).

    Why is this bad?
        A model whose prediction for one sample depends on the other samples of the batch trains on a moving
        target and behaves differently at inference (batch size 1, another batch order): a view / transpose
        that moves the batch dimension, a mean over dim 0, or an RNN / attention layer reading (B, T, C) as
        (T, B, C) silently mix samples and still "learn". A causal language model that sees future tokens
        reaches a suspiciously low training loss and generates garbage.

    Thresholds:
        fail when any gradient on another sample's input exceeds {tol} x the largest gradient on the
        sample's own input (isolated models give exactly 0; every leak in checks/ is above 0.02 on 3 seeds),
        or when no probed sample's own input gets any gradient (the output ignores the input; one sample
        without gradient, e.g. behind inactive ReLUs, is only a note). A leak only in train mode is expected
        with BatchNorm (pass, with a note) and a fail without it; a leak in eval mode names the BatchNorm layers
        built with `track_running_stats=False` (they normalise with batch statistics in eval mode too). Padding:
        fail when a padded position's gradient exceeds {tol} x the largest on the real tokens. Causal: fail at the
        first position t with gradient on an input position > t above tol x its largest gradient on positions
        <= t.

    How to fix:
        Keep the batch dimension first and untouched: `x.reshape(x.shape[0], -1)` instead of `x.view(-1, B)`,
        reduce over feature dimensions, never dim 0 (use nn.LayerNorm instead of `x - x.mean(0)`), build RNN /
        attention layers with `batch_first=True`, and give a causal model a causal attention mask.

    Example:
        `def forward(self, x): x = x - x.mean(0); return self.net(x)`: fail, "eval mode: output of sample 0 has
        gradient on the input of sample 1 (0.0123, 0.0312 x its own ...) before module `model.net[0]`".
    """
    m = measure(ctx, p)
    return judge(m, p).result(_summary(m))
