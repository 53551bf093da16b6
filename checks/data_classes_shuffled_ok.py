"""Correct: the class-sorted data of data_two_classes_per_batch.py through a shuffled DataLoader.

`DataLoader(dataset, batch_size=32, shuffle=True)`: each batch of 32 mixes ~9.7 of the 10 classes (shuffled under
the run's seed), as the data probe's classes-per-batch check expects.
Source: PyTorch DataLoader docs (`shuffle=True`: "have the data reshuffled at every epoch").
"""

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

CORRECT = True
EXPECT: dict[str, str] = {}

N_FEATURES, N_CLASSES, PER_CLASS, BATCH = 16, 10, 16, 32


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(N_FEATURES, 64), nn.ReLU(), nn.Linear(64, N_CLASSES))


def data():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(N_CLASSES, N_FEATURES, generator=g)
    xs = [centers[c] + torch.randn(PER_CLASS, N_FEATURES, generator=g) for c in range(N_CLASSES)]
    ys = [torch.full((PER_CLASS,), c) for c in range(N_CLASSES)]
    x, y = torch.cat(xs), torch.cat(ys)  # class 0 first, then class 1, ...
    return DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True)


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
