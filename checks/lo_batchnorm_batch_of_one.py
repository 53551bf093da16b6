"""Broken: a CNN with BatchNorm2d trained with batch_size=1 (BatchNorm statistics of a single image).

Bug: with one sample per batch, BatchNorm normalises each image with its own per-channel mean and variance (instance
normalisation in training), while eval mode uses running averages of those per-image statistics: train and eval
compute different functions, and the contrast between images is normalised away.
Symptom in a long run: training loss is noisy and slow; eval accuracy is much worse than training accuracy; with
BatchNorm1d the same mistake crashes ("Expected more than 1 value per channel when training").
Source: Ioffe & Szegedy (2015); Wu & He (ECCV 2018), "Group Normalization" (BatchNorm error explodes at small
batches); Humbatova et al. (ICSE 2020) taxonomy, "Training / Hyperparameters / Suboptimal batch size".
"""

import torch
from torch import nn

EXPECT = {"layer-order": "fail"}

N_CLASSES = 4


def model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, N_CLASSES),
    )


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 8, 8, generator=g) * 0.5
    y = torch.randint(0, N_CLASSES, (64,), generator=g)
    for i, c in enumerate(y.tolist()):
        r, s = divmod(c, 2)
        x[i, 0, r * 4 : r * 4 + 4, s * 4 : s * 4 + 4] += 1.0
    return [(x[i : i + 1], y[i : i + 1]) for i in range(len(x))]  # BUG: batch_size=1 with BatchNorm


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
