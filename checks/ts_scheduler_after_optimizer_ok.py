"""Correct: a train step that keeps an LR warm-up for its optimizer and steps it after optimizer.step().

The twin of ts_scheduler_before_optimizer.py with the order PyTorch asks for: `optimizer.step(); scheduler.step()`.
The warm-up (LinearLR from 10% of the LR over 100 steps) is chainable: it scales the LR a probe sets (the LR range
test) instead of overwriting it.
Source: PyTorch docs, torch.optim "How to adjust learning rate".
"""

import weakref

import torch
from torch import nn

CORRECT = True
EXPECT: dict[str, str] = {}

_warmup: "weakref.WeakKeyDictionary[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]" = (
    weakref.WeakKeyDictionary()
)


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 5))


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(20, 5, generator=g)
    x = torch.randn(256, 20, generator=g)
    y = (x @ w).argmax(dim=1)
    return [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]


def optimizer(params):
    return torch.optim.AdamW(params, lr=1e-3)


def train_step(model, batch, optimizer):
    if optimizer not in _warmup:  # the step keeps one warm-up schedule per optimizer it is given
        _warmup[optimizer] = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=100)
    x, y = batch
    optimizer.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    _warmup[optimizer].step()
    return loss
