"""Broken: the training data is sorted by class and never shuffled, so every batch holds a single class.

Bug: the dataset is built class by class (one folder per class, `torch.cat([x_class0, x_class1, ...])`) and
batched in order: `DataLoader(dataset, batch_size=32)` without `shuffle=True`.
Symptom in a long run: the training loss oscillates with the epoch's class order (each step pulls the model to
predict the current class), the model ends up predicting the last class seen, validation accuracy near chance
while the per-batch training loss can look low.
Source: Humbatova et al. (ICSE 2020) taxonomy, "Training / Training data quality / Not shuffled data"; Islam et al.
(FSE 2019), data bugs; DeepCrime operator "change data order (unshuffle)"; Karpathy's recipe ("become one with the
data").
"""

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

EXPECT = {"data": "fail"}

N_FEATURES, N_CLASSES, PER_CLASS, BATCH = 16, 4, 96, 32


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
