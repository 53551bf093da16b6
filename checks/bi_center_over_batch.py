"""Broken: forward() "centres" the features over the batch (`x = x - x.mean(0)`) with no BatchNorm.

Bug: a hand-written normalisation reduces over dim 0 (the batch) instead of the feature dimension, so every
sample's prediction depends on the other samples in its batch, in training and at inference alike.
Symptom in a long run: training and validation curves look fine, but predictions change with the batch size and
composition; single-sample inference (batch of 1) outputs the same class for every input (x - x.mean(0) == 0).
Source: Karpathy, "A Recipe for Training Neural Networks" ("use backprop to chart dependencies");
Humbatova et al. (ICSE 2020) taxonomy, "Model / Wrong tensor shape or dimension in an operation".
"""

import torch
from torch import nn

EXPECT = {"batch-isolation": "fail"}

N_FEATURES, N_CLASSES, BATCH = 20, 5, 32


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(N_FEATURES, 64), nn.ReLU(), nn.Linear(64, N_CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x - x.mean(0)  # BUG: mean over the batch; meant x.mean(-1, keepdim=True) (or nn.LayerNorm)
        return self.net(x)


def model() -> nn.Module:
    return Net()


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, N_CLASSES, generator=g)
    x = torch.randn(8 * BATCH, N_FEATURES, generator=g) + 2.0
    y = (x @ w).argmax(dim=1)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
