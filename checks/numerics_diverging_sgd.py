"""Broken: plain SGD at lr=2 on unnormalised regression features (std 20): the updates explode to inf.

Bug: the learning rate was copied from a normalised-data recipe; with feature scale 20 the curvature of the MSE is
~400x larger, so every step overshoots and the weights grow geometrically until float32 overflows.
Symptom in a long run: the loss jumps by orders of magnitude for a few steps and then reads `inf` / `nan`.
Source: Karpathy, "A Recipe for Training Neural Networks" (learning rate, normalise inputs); Humbatova et al.
(ICSE 2020) taxonomy, "Training / Optimiser: wrong learning rate"; DeepCrime mutation "change learning rate".
"""

import torch
from torch import nn

EXPECT = {"numerics": "fail"}

N_FEATURES, BATCH = 10, 32


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(N_FEATURES, 32), nn.ReLU(), nn.Linear(32, 1))


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8 * BATCH, N_FEATURES, generator=g) * 20  # BUG (with the LR): features not standardised
    y = x @ torch.randn(N_FEATURES, 1, generator=g) * 0.1
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.SGD(params, lr=2.0)
