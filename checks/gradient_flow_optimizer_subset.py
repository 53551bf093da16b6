"""Broken: the optimizer is built on a subset of the parameters (as when it is built before a layer is added).

Bug: `Adam(list(params)[:2])` holds only the first layer's weight and bias; the classifier head gets gradients but
is never updated. The same happens when the optimizer is created before `model.head = nn.Linear(...)` is assigned,
or when param groups forget a sub-module.
Symptom in a long run: the loss goes down slowly and plateaus high: the head stays at its random init.
Source: Humbatova et al. (ICSE 2020) taxonomy, "Training / Optimiser: wrong optimiser configuration"; Islam et al.
(FSE 2019); DeepCrime mutation operators (training-process changes).
"""

import torch
from torch import nn

EXPECT = {"gradient-flow": "fail"}

N_FEATURES, N_CLASSES, BATCH = 20, 5, 32


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(N_FEATURES, 64), nn.ReLU(), nn.Linear(64, N_CLASSES))


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, N_CLASSES, generator=g)
    x = torch.randn(8 * BATCH, N_FEATURES, generator=g)
    y = (x @ w).argmax(dim=1)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.Adam(list(params)[:2], lr=1e-3)  # BUG: only `0.weight` and `0.bias`
