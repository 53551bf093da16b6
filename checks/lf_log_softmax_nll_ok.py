"""Correct: a classifier that ends in `nn.LogSoftmax(dim=1)` and is trained with `nn.NLLLoss()`.

LogSoftmax + NLLLoss computes exactly cross-entropy (it is what CrossEntropyLoss does inside): the outputs are
log-probabilities, which is what NLLLoss expects. A loss check that flags "softmax before the loss" without looking
at which loss follows would wrongly fail this setup.
"""

import torch
from torch import nn

CORRECT = True
EXPECT: dict[str, str] = {}

N_FEATURES, N_CLASSES, BATCH = 20, 5, 32


def model() -> nn.Module:
    return nn.Sequential(
        nn.Linear(N_FEATURES, 64),
        nn.ReLU(),
        nn.Linear(64, N_CLASSES),
        nn.LogSoftmax(dim=1),
    )


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, N_CLASSES, generator=g)
    x = torch.randn(16 * BATCH, N_FEATURES, generator=g)
    y = (x @ w).argmax(dim=1)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


loss = nn.NLLLoss()


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
