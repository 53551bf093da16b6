"""Broken: one feature column of the dataset holds NaN for missing measurements (not imputed).

Bug: a tabular dataset where feature 7 is missing for about 10% of the rows, stored as NaN and fed to the model as
is. Every batch with a missing value produces NaN outputs and a NaN loss; one optimizer step spreads NaN into the
weights.
Symptom in a long run: the loss is `nan` after the first step; with NaN-skipping training loops, training silently
ignores most batches.
Source: Humbatova et al. (ICSE 2020) taxonomy, "Training data quality / Missing data preprocessing"; Karpathy,
"A Recipe for Training Neural Networks" ("become one with the data").
"""

import torch
from torch import nn

EXPECT = {"numerics": "fail"}

N_FEATURES, N_CLASSES, BATCH = 20, 5, 32


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(N_FEATURES, 64), nn.ReLU(), nn.Linear(64, N_CLASSES))


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, N_CLASSES, generator=g)
    x = torch.randn(8 * BATCH, N_FEATURES, generator=g)
    y = (x @ w).argmax(dim=1)
    missing = torch.rand(len(x), generator=g) < 0.1
    x[missing, 7] = float("nan")  # BUG: missing values left as NaN
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
