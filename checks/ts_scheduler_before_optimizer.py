"""Broken: the train step steps its LR warm-up before the optimizer: every update takes the next step's LR.

Bug: `scheduler.step()` comes before `optimizer.step()` (the order of PyTorch < 1.1). The warm-up schedule the step
keeps for its optimizer (LinearLR from 10% of the LR over 100 steps) then runs one step ahead: its first value is
never used (the first update runs at 1.09e-4 instead of 1e-4) and the whole schedule is shifted by one step. PyTorch
itself only warns once, at the first call, in a log nobody reads.
Symptom in a long run: hardly any with a long warm-up; with a short schedule (a warm-up of a few steps, a step
decay at a milestone) the decay comes one step early, and with several schedulers chained the shifts add up.
Source: PyTorch docs, torch.optim "How to adjust learning rate": "call `optimizer.step()` before
`lr_scheduler.step()`. ... Failure to do this will result in PyTorch skipping the first value of the learning rate
schedule".
"""

import weakref

import torch
from torch import nn

EXPECT = {"train-step": "warn"}

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
    _warmup[optimizer].step()  # BUG: before optimizer.step()
    optimizer.step()
    return loss
