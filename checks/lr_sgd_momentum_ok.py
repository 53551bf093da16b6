"""Correct: SGD with momentum 0.9 and lr 0.1 on an MLP classifier (a standard, healthy recipe).

The learning-rate probe must not flag it (a warning here would be a false alarm): SGD-momentum 0.1 is the
classic ImageNet/CIFAR starting LR (Goyal et al. 2017, "Accurate, Large Minibatch SGD"; He et al. 2016).
"""

import torch
from torch import nn

CORRECT = True
EXPECT: dict[str, str] = {}


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 5))


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(20, 5, generator=g)
    x = torch.randn(256, 20, generator=g)
    y = (x @ w).argmax(dim=1)
    return [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]


def optimizer(params):
    return torch.optim.SGD(params, lr=0.1, momentum=0.9)
