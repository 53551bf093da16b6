"""Broken: Adam with learning rate 1.0 on a small CNN (Adam's usual range is 1e-4..3e-3).

Bug: Adam normalises the gradient, so every weight moves by about the LR per step: with lr=1.0 each step
moves weights by more than their own size; the loss jumps up and bounces at a high value (or NaN).
Symptom in a long run: the loss spikes after the first step and never comes back below chance; accuracy at
1/C.
Source: DeepCrime mutation operator "change learning rate" (Humbatova et al., ISSTA 2021); Islam et al. FSE 2019
("hyperparameter" bugs); Karpathy's recipe ("Adam with 3e-4 is safe").
"""

import torch
from torch import nn

EXPECT = {"learning-rate": "fail"}


def model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 1, 8, 8, generator=g) * 0.5
    y = torch.randint(0, 4, (128,), generator=g)
    for i, c in enumerate(y.tolist()):
        r, s = divmod(c, 2)
        x[i, 0, r * 4 : r * 4 + 4, s * 4 : s * 4 + 4] += 1.0
    return [(x[i : i + 32], y[i : i + 32]) for i in range(0, 128, 32)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1.0)  # BUG: ~1000x Adam's usual LR
