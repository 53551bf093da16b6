"""Broken: data() builds one batch and repeats it (`[(x, y)] * 8`).

Bug: the batch list is built from one slice (`[(x[:32], y[:32])] * n_steps`), or the DataLoader is re-created with the
same seed inside the training loop so that every step gets its first batch. The model only ever sees 32 samples.
Symptom in a long run: the training loss falls to ~0 quickly and smoothly while validation accuracy stays near chance
(the model memorises 32 samples); more epochs or a bigger model "help" the training loss only.
Source: Humbatova et al. (ICSE 2020) taxonomy, "Training data quality / Not enough training data"; Islam et al.
(FSE 2019), data bugs; Karpathy's recipe ("become one with the data": look at what the loader actually yields).
"""

import torch
from torch import nn

EXPECT = {"data": "fail"}


def model():
    return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 5))


def data():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(5, 20, generator=g)
    y = torch.randint(0, 5, (256,), generator=g)
    x = mu[y] + torch.randn(256, 20, generator=g)
    return [(x[:32], y[:32])] * 8  # BUG: the same batch every step


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
