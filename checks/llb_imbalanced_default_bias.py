"""Broken: a 3-class classifier on imbalanced labels (90% / 5% / 5%) with PyTorch's default (near-zero) output bias.

Bug: the output layer starts by predicting the three classes as equally likely, although 90% of the labels are class
0; the loss at init is log 3 = 1.10 nats instead of the prior's entropy, 0.39.
Symptom in a long run: a "hockey stick" loss curve; the first hundreds of steps only learn the class frequencies, and
the large early gradients of the rare classes disturb the features (Karpathy's recipe: "init well").
Source: Karpathy, "A Recipe for Training Neural Networks" (2019), "init well"; Lin et al. (ICCV 2017, focal loss),
§4.1 prior initialisation; Humbatova et al. (ICSE 2020) taxonomy, "Model / Wrong weights initialisation".
"""

import torch
from torch import nn

EXPECT = {"last-layer-bias": "fail"}

N_FEATURES, BATCH = 16, 32


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(N_FEATURES, 64), nn.ReLU(), nn.Linear(64, 3))  # BUG: bias not at log(prior)


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, generator=g)
    x = torch.randn(16 * BATCH, N_FEATURES, generator=g)
    score = x @ w
    q90, q95 = torch.quantile(score, torch.tensor([0.90, 0.95]))
    y = (score > q90).long() + (score > q95).long()  # 0: 90%, 1: 5%, 2: 5%
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
