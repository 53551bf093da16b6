"""Correct: a classifier trained with `nn.CrossEntropyLoss(label_smoothing=0.2)` and heavy dropout (p=0.5).

Label smoothing puts a floor under the loss: with 5 classes and eps = 0.2 the best reachable cross-entropy is the
entropy of the smoothed targets, 0.66 nats, 41% of log 5. A memorisation check that asks for 10% of the
initial loss without subtracting that floor would wrongly fail this setup. Dropout must be switched off while
memorising (overfit-batch does), otherwise 8 samples are never fitted exactly either.
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
        nn.Dropout(0.5),
        nn.Linear(64, 64),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(64, N_CLASSES),
    )


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, N_CLASSES, generator=g)
    x = torch.randn(16 * BATCH, N_FEATURES, generator=g)
    y = (x @ w).argmax(dim=1)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


loss = nn.CrossEntropyLoss(label_smoothing=0.2)


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
