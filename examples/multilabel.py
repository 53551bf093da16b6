"""A correct multi-label classifier: 8 independent labels, 0/1 float targets, BCEWithLogitsLoss.

Shows a user the multi-label recipe: the model outputs one raw logit per label (no sigmoid in the model: the loss
applies it, in a numerically stable way), targets are float 0/1 tensors of the output's shape, and the loss is
``nn.BCEWithLogitsLoss()`` (nncheck would infer it from 0/1 float targets; it is written out here for clarity).
Synthetic data: label k is on when a fixed projection k of the inputs is positive.
"""

import torch
from torch import nn

CORRECT = True
EXPECT: dict[str, str] = {}

N_FEATURES, N_LABELS, BATCH = 16, 8, 32

loss = nn.BCEWithLogitsLoss()


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(N_FEATURES, 64), nn.ReLU(), nn.Linear(64, N_LABELS))


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, N_LABELS, generator=g)
    x = torch.randn(16 * BATCH, N_FEATURES, generator=g)
    y = (x @ w > 0).float()  # (N, 8) of 0.0 / 1.0
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
