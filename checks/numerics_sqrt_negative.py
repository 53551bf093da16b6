"""Broken: `torch.sqrt` of a Linear layer's output, which is negative for about half the units (NaN).

Bug: a "magnitude" feature is computed as `torch.sqrt(self.energy(x))` where `energy` is a plain Linear layer that
can be negative; sqrt of a negative number is NaN.
Symptom in a long run: the loss is `nan` from the first step.
Source: Humbatova et al. (ICSE 2020) taxonomy, "Wrong / missing activation" (a softplus or square was meant to keep
the value positive) and numerical errors; Islam et al. (FSE 2019).
"""

import torch
from torch import nn

EXPECT = {"numerics": "fail"}

N_FEATURES, N_CLASSES, BATCH = 20, 5, 32


class Magnitude(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.energy = nn.Linear(N_FEATURES, 32)
        self.head = nn.Linear(32, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.sqrt(self.energy(x)))  # BUG: negative energies; use F.softplus(...) first


def model() -> nn.Module:
    return Magnitude()


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, N_CLASSES, generator=g)
    x = torch.randn(8 * BATCH, N_FEATURES, generator=g)
    y = (x @ w).argmax(dim=1)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
