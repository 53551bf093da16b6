"""Correct: SGD-momentum with a OneCycleLR schedule sized for the whole run (max_lr 0.1, 5,000 steps).

OneCycleLR starts at max_lr / 25 = 0.004, rises to 0.1 at 30% of the run and anneals to ~0 at its end: the
lr-schedule probe follows it over `total_steps` and passes; learning-rate judges the peak 0.1 (a healthy SGD-momentum
LR, Goyal et al. 2017), not the first step's 0.004. Source: L. Smith & Topin 2017, "Super-Convergence"
(arXiv:1708.07120); PyTorch's OneCycleLR.
"""

import torch
from torch import nn

CORRECT = True
EXPECT: dict[str, str] = {}

nncheck = {"total_steps": 5_000}


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
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=nncheck["total_steps"])
