"""Broken: plain SGD with learning rate 1e-6 on an MLP classifier (1000x+ below a working LR).

Bug: updates are so small that the loss does not move in hundreds of steps.
Symptom in a long run: a flat loss curve at log(C); it looks like a model that cannot learn, and people start
changing the architecture instead of the LR.
Source: DeepCrime mutation operator "change learning rate" (Humbatova et al., ISSTA 2021); Humbatova et al.
ICSE 2020 taxonomy, "Training > Hyperparameters > Suboptimal learning rate"; cs231n ("loss not going down:
learning rate too low").
"""

import torch
from torch import nn

EXPECT = {"learning-rate": "fail"}


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 5))


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(20, 5, generator=g)
    x = torch.randn(256, 20, generator=g)
    y = (x @ w).argmax(dim=1)
    return [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]


def optimizer(params):
    return torch.optim.SGD(params, lr=1e-6)  # BUG: a working LR is 1e-2..1e-1
