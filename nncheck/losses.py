"""Losses: nncheck's adapters around a user's loss, the default loss inferred from the first batch, and facts
about a loss that several probes need (its kind, its class dimension, its ignore_index, label rules)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nncheck.setup import SetupError

# CrossEntropyLoss's default ignore_index (torch.nn.CrossEntropyLoss docs).
IGNORE_INDEX = -100
# Outputs that are log-probabilities (LogSoftmax before NLLLoss): every row's logsumexp is 0 to float precision.
LOG_PROB_TOL = 1e-3


class SequenceCrossEntropy(nn.Module):
    """Cross-entropy for ``(B, ..., C)`` outputs (classes last) with ``(B, ...)`` integer targets."""

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1).long())


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
    while isinstance(loss, (SqueezedLoss, FloatTargetLoss)):
        loss = loss.inner
    return loss


def loss_kind_of(loss: Any) -> str:
    """Classify a loss: 'ce' (cross-entropy), 'bce' (BCE with logits), 'mse', or 'custom'."""
    inner = unwrap_loss(loss)
    if isinstance(inner, (nn.CrossEntropyLoss, SequenceCrossEntropy)) or inner is F.cross_entropy:
        return "ce"
    if isinstance(inner, nn.BCEWithLogitsLoss) or inner is F.binary_cross_entropy_with_logits:
        return "bce"
    if isinstance(inner, nn.MSELoss) or inner is F.mse_loss:
        return "mse"
    return "custom"


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
    if isinstance(loss_fn, SequenceCrossEntropy) or output.dim() == 2:
        return int(output.shape[-1])
    return int(output.shape[1])


def class_logits(loss_fn: Any, output: torch.Tensor) -> torch.Tensor:
    """Cross-entropy outputs as ``(N, C)`` rows, whatever the layout (``(B,C)``, ``(B,T,C)``, ``(B,C,H,W)``)."""
    if output.dim() == 2 or isinstance(loss_fn, SequenceCrossEntropy):
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
