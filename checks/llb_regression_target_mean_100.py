"""Broken: a regression whose targets have mean 100 (std 5), unstandardised, with the default output bias (~0).

Bug: the network starts predicting ~0 for targets around 100: the initial MSE is ~10^4, 400x the targets' variance.
Symptom in a long run: the first phase of training only walks the bias from 0 to 100 (with Adam at lr 1e-3 that is
~10^5 steps for the bias alone, so the weights inflate instead), the loss curve is dominated by the offset, and the
fit of the signal starts late or never; large gradients at init can also destabilise training.
Source: Karpathy, "A Recipe for Training Neural Networks" (2019), "init well: if you are regressing some values that
have a mean of 50 then initialize the final bias to 50"; Humbatova et al. (ICSE 2020), "Training data quality /
Missing normalisation"; DeepCrime mutation operators on data preprocessing.
"""

import torch
from torch import nn

EXPECT = {"last-layer-bias": "fail"}

N_FEATURES, BATCH = 8, 32


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(N_FEATURES, 64), nn.ReLU(), nn.Linear(64, 1))  # BUG: bias ~0, targets ~100


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, 1, generator=g) / N_FEATURES**0.5
    x = torch.randn(16 * BATCH, N_FEATURES, generator=g)
    y = 100.0 + 5.0 * torch.tanh(x @ w)  # (N, 1): mean ~100
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
