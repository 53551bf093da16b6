"""Broken: 257 samples in batches of 32 without `drop_last`, into a model with BatchNorm: the last batch has 1 sample.

Bug: `DataLoader(dataset, batch_size=32, shuffle=True)` over a dataset whose size is 1 more than a multiple of 32.
In train mode BatchNorm normalises that one sample with its own statistics (BatchNorm1d raises
"Expected more than 1 value per channel when training"; BatchNorm2d silently outputs garbage and updates the
running statistics with it).
Symptom in a long run: a crash at the end of the first epoch (`ValueError: Expected more than 1 value per channel
when training`), or a loss spike once per epoch and running statistics polluted by a degenerate batch.
Source: Humbatova et al. (ICSE 2020) taxonomy, "Training / Training data quality / Wrong batch size"; a recurring
PyTorch forum / GitHub issue (pytorch/pytorch #4534); the PyTorch DataLoader docs for `drop_last`.
"""

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

EXPECT = {"data": "warn"}

N_FEATURES, N_CLASSES, N, BATCH = 16, 4, 257, 32


def model() -> nn.Module:
    return nn.Sequential(
        nn.Linear(N_FEATURES, 64, bias=False),
        nn.BatchNorm1d(64),
        nn.ReLU(),
        nn.Linear(64, N_CLASSES),
    )


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, N_CLASSES, generator=g)
    x = torch.randn(N, N_FEATURES, generator=g)
    y = (x @ w).argmax(dim=1)
    # BUG: 257 = 8 * 32 + 1 and no drop_last=True: the last batch holds one sample
    return DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(1))


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
