"""Correct: a GroupNorm CNN (batch-size independent normalisation) trained with SGD, momentum 0.9, Nesterov,
weight decay 5e-4, lr 0.05: the classic ResNet recipe's optimizer. From the held-out evaluation of nncheck.
"""

import torch
from torch import nn

CORRECT = True
EXPECT: dict[str, str] = {}


def gn(i, o):
    return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.GroupNorm(4, o), nn.ReLU())


def model():
    return nn.Sequential(
        gn(3, 16), nn.MaxPool2d(2), gn(16, 32), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 5)
    )


def data():
    g = torch.Generator().manual_seed(0)
    n = 256
    y = torch.randint(0, 5, (n,), generator=g)
    col = torch.randn(5, 3, generator=g)
    x = torch.randn(n, 3, 12, 12, generator=g) * 0.8 + col[y][:, :, None, None] * 0.7
    return [(x[i : i + 16], y[i : i + 16]) for i in range(0, n, 16)]


def optimizer(params):
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
