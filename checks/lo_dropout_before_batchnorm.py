"""Broken: an MLP block ordered Linear -> ReLU -> Dropout -> BatchNorm (dropout feeds the BatchNorm).

Bug: dropout scales the kept activations by 1/(1-p) in training only, so the BatchNorm after it accumulates running
statistics (a variance) that inference, without dropout, never reproduces: the "variance shift" of Li et al.
Symptom in a long run: training accuracy is fine but eval/test accuracy is lower than it should be and unstable
between epochs; switching the model to eval mode makes predictions worse, not better.
Source: Li et al. (CVPR 2019), "Understanding the Disharmony between Dropout and Batch Normalization by Variance
Shift"; Humbatova et al. (ICSE 2020) taxonomy, "Model / Layers / Wrong layer order"; DeepCrime's layer mutation
operators.
"""

import torch
from torch import nn

EXPECT = {"layer-order": "warn"}

N_FEATURES, N_CLASSES, BATCH = 20, 5, 32


def model() -> nn.Module:
    return nn.Sequential(
        nn.Linear(N_FEATURES, 64, bias=False),
        nn.ReLU(),
        nn.Dropout(0.5),  # BUG: dropout right before BatchNorm
        nn.BatchNorm1d(64),
        nn.Linear(64, N_CLASSES),
    )


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, N_CLASSES, generator=g)
    x = torch.randn(8 * BATCH, N_FEATURES, generator=g)
    y = (x @ w).argmax(dim=1)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
