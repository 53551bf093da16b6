"""Broken: a cosine schedule sized in epochs (T_max = 90) stepped once per batch (500 batches per epoch).

Bug: `CosineAnnealingLR(opt, T_max=EPOCHS)` is meant to be stepped once per epoch; stepped per batch (as in this
setup's loop and nncheck's contract) it completes a half period every 90 batches and, past T_max, climbs back up:
the LR oscillates between 0.1 and 0 ~250 times over the 45,000 steps of the run.
Symptom in a long run: a saw-tooth loss that never settles.
Source: PyTorch docs (CosineAnnealingLR: "T_max: maximum number of iterations"); SGDR (Loshchilov & Hutter 2017).
"""

import torch
from torch import nn

EXPECT = {"lr-schedule": "warn"}

EPOCHS, BATCHES_PER_EPOCH = 90, 500
nncheck = {"total_steps": EPOCHS * BATCHES_PER_EPOCH}


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


def scheduler(opt):
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=EPOCHS)  # BUG: epochs, stepped per batch
