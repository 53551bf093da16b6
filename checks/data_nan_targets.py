"""Broken: a regression dataset with missing target values (NaN) left in it.

Bug: targets read from a CSV / DataFrame with empty cells become NaN and are not dropped or imputed (here 2% of the
rows, from batch 3 on). MSE on a batch holding one NaN target is NaN, and one optimizer step on it turns every
weight into NaN.
Symptom in a long run: the loss becomes `nan` at some step (only when a NaN row lands in the batch) and stays nan;
the model outputs nan from then on.
Source: Islam et al. (FSE 2019), data bugs ("missing values"); Humbatova et al. (ICSE 2020) taxonomy, "Training
data quality"; SageMaker Debugger rule "LossNotDecreasing / nan tensors".
"""

import torch
from torch import nn

EXPECT = {"data": "fail"}

N_FEATURES, BATCH = 8, 32


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(N_FEATURES, 64), nn.ReLU(), nn.Linear(64, 1))


def data():
    g = torch.Generator().manual_seed(0)
    n = 12 * BATCH
    w = torch.randn(N_FEATURES, 1, generator=g) / N_FEATURES**0.5
    x = torch.randn(n, N_FEATURES, generator=g)
    y = torch.tanh(x @ w) + 0.1 * torch.randn(n, 1, generator=g)
    missing = torch.rand(n, generator=g) < 0.02
    missing[: 3 * BATCH] = False
    y[missing] = float("nan")  # BUG: missing targets left in the data
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, n, BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
