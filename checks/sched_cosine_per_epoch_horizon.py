"""Broken: a cosine schedule sized in batches (T_max = epochs x batches per epoch) stepped once per epoch.

Bug: the training loop steps the scheduler once per epoch (100 times) while T_max counts batches (100 x 500): the LR
ends 0.001% below its start; the decay the run was tuned with never happens. The setup declares the steps the
scheduler takes in the run (`total_steps` = 100).
Symptom in a long run: the loss stalls at the end where a decayed LR would lower it further.
Source: PyTorch docs, "How to adjust learning rate" (step the scheduler where its horizon is counted).
"""

import torch
from torch import nn

EXPECT = {"lr-schedule": "warn"}

EPOCHS, BATCHES_PER_EPOCH = 100, 500
nncheck = {"total_steps": EPOCHS}  # the scheduler is stepped once per epoch


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
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=EPOCHS * BATCHES_PER_EPOCH)  # BUG: in batches
