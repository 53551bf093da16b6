"""Correct: count regression with PoissonNLLLoss(log_input=True); head bias initialised at log(mean count)
as a careful engineer does (Karpathy: init well)."""

import math

import torch
from torch import nn


def data():
    g = torch.Generator().manual_seed(0)
    n = 256
    x = torch.randn(n, 8, generator=g)
    rate = torch.exp(1.5 + 0.4 * x[:, 0] - 0.3 * x[:, 1])
    y = torch.poisson(rate, generator=g)[:, None]
    return [(x[i : i + 32], y[i : i + 32]) for i in range(0, n, 32)]


def model():
    m = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
    with torch.no_grad():
        m[2].bias.fill_(math.log(5.0))
    return m


loss = nn.PoissonNLLLoss(log_input=True)


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
