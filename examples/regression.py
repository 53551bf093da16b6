"""A correct regression MLP whose targets have a large mean (50 +- 2), with the output bias set to that mean.

Shows a user the fix for the most common regression bug: standardise the inputs, and start the output layer's bias
at the target mean (Karpathy, "A Recipe for Training Neural Networks", 2019: "init well"), so the first steps learn
the signal instead of spending hundreds of steps walking the bias from 0 to 50. The line that does it is in
``model()``: ``head.bias.fill_(TARGET_MEAN)``. Synthetic data: ``y = 50 + 2 * (a fixed non-linear function of x)``.
"""

import torch
from torch import nn

CORRECT = True
EXPECT: dict[str, str] = {}

N_FEATURES, BATCH = 8, 32
TARGET_MEAN, TARGET_STD = 50.0, 2.0


def model() -> nn.Module:
    net = nn.Sequential(nn.Linear(N_FEATURES, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    with torch.no_grad():
        net[-1].bias.fill_(TARGET_MEAN)  # start at the target mean (estimate it on the training set)
    return net


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, 1, generator=g) / N_FEATURES**0.5
    x = torch.randn(16 * BATCH, N_FEATURES, generator=g)  # standardised inputs: mean 0, std 1
    signal = torch.tanh(x @ w) + 0.5 * x[:, :1] * x[:, 1:2]
    signal = (signal - signal.mean()) / signal.std()
    y = TARGET_MEAN + TARGET_STD * signal  # (N, 1): the same shape as the output
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
