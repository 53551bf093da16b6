"""A correct classifier on imbalanced data (class prior 90% / 7% / 3%) with the output bias set to the log prior.

Shows a user how to start an imbalanced classifier well: initialise the last layer's bias to ``log(prior)`` so the
initial loss is the entropy of the prior (about 0.39 nats here) instead of log(3) = 1.10, and the first hundreds of
steps are not spent learning the class frequencies (Karpathy's recipe, "init well"; the focal-loss paper, Lin et al.
2017, section 4.1, "prior" initialisation). Synthetic data: the class is given by thresholds on a fixed projection of
the inputs, placed at its 90% and 97% quantiles.
"""

import math

import torch
from torch import nn

CORRECT = True
EXPECT: dict[str, str] = {}

N_FEATURES, BATCH = 16, 32
PRIOR = (0.90, 0.07, 0.03)


def model() -> nn.Module:
    net = nn.Sequential(nn.Linear(N_FEATURES, 64), nn.ReLU(), nn.Linear(64, len(PRIOR)))
    with torch.no_grad():
        net[-1].bias.copy_(torch.tensor([math.log(p) for p in PRIOR]))
    return net


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, generator=g)
    x = torch.randn(32 * BATCH, N_FEATURES, generator=g)
    score = x @ w
    q90, q97 = torch.quantile(score, torch.tensor([PRIOR[0], PRIOR[0] + PRIOR[1]]))
    y = (score > q90).long() + (score > q97).long()  # 0: 90%, 1: 7%, 2: 3%
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
