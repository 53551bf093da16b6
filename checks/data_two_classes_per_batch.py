"""Broken: class-sorted data in batches that each hold exactly two classes: no batch is single-class, none is mixed.

Bug: the dataset is built class by class (ImageFolder order: class 0's 16 samples, then class 1's, ...) and batched
in order, `DataLoader(dataset, batch_size=32)` without `shuffle=True`. Each class has 16 samples, so every batch of
32 holds exactly two classes: a check for single-class batches sees none.
Symptom in a long run: the training loss oscillates with the class order, the model ends up favouring the last
classes seen; validation accuracy far below what the shuffled loader gives.
Source: Humbatova et al. (ICSE 2020) taxonomy, "Training data quality / Not shuffled data"; DeepCrime operator
"change data order (unshuffle)"; Karpathy's recipe ("become one with the data"); the same bug as
data_sorted_by_class.py with classes smaller than a batch.
"""

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

EXPECT = {"data": "warn"}

N_FEATURES, N_CLASSES, PER_CLASS, BATCH = 16, 10, 16, 32


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(N_FEATURES, 64), nn.ReLU(), nn.Linear(64, N_CLASSES))


def data():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(N_CLASSES, N_FEATURES, generator=g)
    xs = [centers[c] + torch.randn(PER_CLASS, N_FEATURES, generator=g) for c in range(N_CLASSES)]
    ys = [torch.full((PER_CLASS,), c) for c in range(N_CLASSES)]
    x, y = torch.cat(xs), torch.cat(ys)  # class 0 first, then class 1, ...
    return DataLoader(TensorDataset(x, y), batch_size=BATCH)  # BUG: shuffle=False (the default)


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
