"""Correct: count regression with `nn.PoissonNLLLoss(log_input=True)`; a NEGATIVE loss (about -2.3 at init).

The head bias starts at log(mean count), as a careful engineer does (Karpathy's recipe: "init well"). The loss is
negative and its batches differ a lot (-2.35 vs -0.85): ratio rules ("the loss exceeds 4x its minimum", "4x the
first loss") misread it; nncheck's learning-rate probe once called Adam 1e-3 "too high, lower it to 1e-8" here.
Regression setup for shift-invariant loss rules (from the held-out evaluation, .notes/heldout/a_poisson_counts.py).
"""

import math

import torch
from torch import nn

CORRECT = True
EXPECT: dict[str, str] = {}


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    rate = torch.exp(1.5 + 0.4 * x[:, 0] - 0.3 * x[:, 1])
    y = torch.poisson(rate, generator=g)[:, None]
    return [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]


def model() -> nn.Module:
    m = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
    with torch.no_grad():
        m[2].bias.fill_(math.log(5.0))  # log of the mean count
    return m


loss = nn.PoissonNLLLoss(log_input=True)


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
