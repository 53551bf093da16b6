"""Broken: a custom train step without optimizer.zero_grad(): gradients accumulate across steps.

Bug: PyTorch adds each backward's gradients into `.grad`; without `zero_grad()` every update is the sum of all past
gradients, so the effective step grows with the step count and points where the model was, not where it is.
Symptom in a long run: the loss falls for a few steps, then oscillates and diverges (or NaN), as with an LR that grows
every step.
Source: PyTorch FAQ / tutorials ("Zeroing out gradients in PyTorch"); Islam et al. FSE 2019 (API misuse bugs);
a missing zero_grad is among the mutation operators of DeepCrime (Humbatova et al., ISSTA 2021).
"""

import torch
from torch import nn

EXPECT = {"train-step": "fail"}


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


def train_step(model, batch, optimizer):
    x, y = batch
    loss = nn.functional.cross_entropy(model(x), y)  # BUG: no optimizer.zero_grad() before backward
    loss.backward()
    optimizer.step()
    return loss
