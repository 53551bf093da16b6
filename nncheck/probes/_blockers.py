"""Modules that zero their whole output on a batch, so that nothing before them gets a gradient and the model output
does not depend on the input: a ReLU with every unit dead, a dropout with p >= 1 (training mode), an embedding fed
nothing but its padding_idx. Used by ``gradient-flow`` and ``batch-isolation`` to name the real cause of an
all-zero gradient / an output that ignores its input, instead of a generic lead (detach, round, overwritten input).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nncheck.context import Context
from nncheck.modelgraph import code_path, forward_hooks, is_dropout, leaf_modules
from nncheck.setup import Batch
from nncheck.tensors import first_tensor

RELU_TYPES: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6)
EMBEDDING_TYPES: tuple[type[nn.Module], ...] = (nn.Embedding, nn.EmbeddingBag)


@dataclass
class Blocker:
    """A module whose output carries no signal on the batch, with the sentence that says why and the fix."""

    module: str  # qualified name
    path: str  # code_path(module, model): `model[1]`, `model.emb`
    kind: str  # "dead-relu" | "dropout-p1" | "all-padding"
    cause: str
    fix: str
    upstream: frozenset[str] = frozenset()  # leaf modules run before it (and itself): what it can starve

    def explains(self, module: str) -> bool:
        """True when ``module`` (a qualified name) ran before this blocker, or is it, or owns it."""
        return module in self.upstream or self.module.startswith(f"{module}.") or not module


def _dead_relu(name: str, path: str, mod: nn.Module, inp: Any, out: Any, producer: str) -> Blocker | None:
    o = first_tensor(out)
    if o is None or not o.is_floating_point() or o.numel() == 0 or bool((o > 0).any()):
        return None
    feed = f" (its input comes from `{producer}`)" if producer else ""
    fix_src = (
        f"initialise the bias of `{producer}` at zero: `with torch.no_grad(): {producer}.bias.zero_()` on the module "
        f'your `model()` returns, use `nn.init.kaiming_normal_({producer}.weight, nonlinearity="relu")`, '
        "standardise the inputs, or use `nn.LeakyReLU(0.01)`"
        if producer
        else "check the bias / weight init of the layer before it (zero biases, He init), standardise the inputs, "
        "or use `nn.LeakyReLU(0.01)`"
    )
    return Blocker(
        name,
        path,
        "dead-relu",
        f"every unit of the ReLU `{path}` is dead (never positive on the batch){feed}, so it passes no gradient "
        "and its output is all zero",
        fix_src,
    )


def _dropout_p1(name: str, path: str, mod: nn.Module) -> Blocker | None:
    p = getattr(mod, "p", None)
    if not is_dropout(mod) or not mod.training or p is None or p < 1.0:
        return None
    return Blocker(
        name,
        path,
        "dropout-p1",
        f"the dropout `{path}` has p={p:g}: in training mode it zeroes every value (p is the DROP probability, "
        "not keep_prob)",
        f"set the drop probability, not the keep probability: `{path} = nn.Dropout(p=0.1)` (p = 1 - keep_prob) "
        "in the code that builds the model",
    )


def _all_padding(name: str, path: str, mod: nn.Module, inp: Any) -> Blocker | None:
    pad = getattr(mod, "padding_idx", None)
    ids = first_tensor(inp)
    if pad is None or ids is None or ids.is_floating_point() or ids.numel() == 0 or not bool((ids == pad).all()):
        return None
    return Blocker(
        name,
        path,
        "all-padding",
        f"every token id fed to the embedding `{path}` is its padding_idx ({pad}): its output is the (zero, "
        "never trained) padding row for every position",
        f"check the tokenisation / vocabulary lookup that builds the ids (a lookup with the wrong key type "
        f"returning the pad id); `{path}` must receive real token ids, padding_idx={pad} only for padding",
    )


def find_blockers(ctx: Context, model: nn.Module, batch: Batch) -> list[Blocker]:
    """Run ``model`` (as it is: train or eval mode) on ``batch`` without gradient and return, in execution order,
    the leaf modules whose output is blocked: a fully dead ReLU, an active dropout with p >= 1, an embedding whose
    inputs are all its padding_idx."""
    found: dict[str, Blocker] = {}
    ran: list[str] = []
    last: list[str] = [""]  # the last leaf module run (the producer of a ReLU's input, for the fix)

    def hook(mod: nn.Module, inp: Any, out: Any, name: str) -> None:
        path = code_path(name, model)
        b: Blocker | None = None
        if isinstance(mod, RELU_TYPES):
            b = _dead_relu(name, path, mod, inp, out, last[0])
        elif is_dropout(mod):
            b = _dropout_p1(name, path, mod)
        elif isinstance(mod, EMBEDDING_TYPES):
            b = _all_padding(name, path, mod, inp)
        ran.append(name)
        if b is not None and name not in found:
            b.upstream = frozenset(ran)
            found[name] = b
        last[0] = path

    with forward_hooks([(n, m) for n, m in leaf_modules(model) if m is not model], hook), torch.no_grad():
        ctx.forward(model, batch)
    return list(found.values())
