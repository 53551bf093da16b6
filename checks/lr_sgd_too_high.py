"""Broken: plain SGD with learning rate 10 on an MLP classifier (far above the stable range).

Bug: the step size is so large that every update overshoots; the logits explode and the loss becomes NaN/inf
within a few steps.
Symptom in a long run: `loss: nan` after the first iterations, or a loss stuck at a high value with huge logits.
Source: DeepCrime mutation operator "change learning rate" (Humbatova et al., ISSTA 2021); Humbatova et al.
ICSE 2020 taxonomy, "Training > Hyperparameters > Suboptimal learning rate"; Karpathy's recipe ("the LR is the
most important hyperparameter").
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
    return torch.optim.SGD(params, lr=10.0)  # BUG: ~100x too high for this model
