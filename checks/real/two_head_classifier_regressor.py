"""Correct: a multi-task MLP with a shared trunk and two heads, a 4-class classifier and a scalar regressor,
returning the tuple `(logits, value)`, trained on `cross_entropy + mse` with standardised regression targets.

What it is: batches `(x, (labels, values))`; the loss `F.cross_entropy(out[0], y[0]) + F.mse_loss(out[1].squeeze(-1),
y[1])`. nncheck recognises both terms as heads (`output[0]`: cross-entropy, `output[1]`: MSE) and judges each one
(initial loss, output bias), checks that every output tensor depends on its own sample only, and compares the two
terms at init.
Why it is right: both heads start near their uninformed loss (log 4 and ~1 for standardised targets), the terms are
of the same order at init, the trunk normalises with LayerNorm (no batch statistics), Adam.
Source: Caruana 1997 ("Multitask Learning"); Kendall, Gal & Cipolla 2018 (weighting multi-task losses).
"""

import torch
import torch.nn.functional as F
from torch import nn

CORRECT = True

FEATURES, CLASSES, BATCH = 16, 4, 32


class TwoHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(FEATURES, 64), nn.LayerNorm(64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())
        self.cls, self.reg = nn.Linear(64, CLASSES), nn.Linear(64, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(x)
        return self.cls(h), self.reg(h)


def model():
    return TwoHead()


def make_batches(seed: int, scale: float = 1.0) -> list:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(FEATURES, CLASSES, generator=g)
    v = torch.randn(FEATURES, generator=g) / FEATURES**0.5
    batches = []
    for _ in range(8):
        x = torch.randn(BATCH, FEATURES, generator=g)
        batches.append((x, ((x @ w).argmax(1), scale * (x @ v + 0.1 * torch.randn(BATCH, generator=g)))))
    return batches


def data():
    return make_batches(15)


def loss(output, target):
    logits, value = output
    labels, values = target
    return F.cross_entropy(logits, labels) + F.mse_loss(value.squeeze(-1), values)


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
