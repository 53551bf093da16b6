"""Broken: a binary classifier (one logit, BCE-with-logits) with 2% positives and the default output bias (~0).

Bug: at init the model predicts p = 0.5 for every sample although only 2% are positive: the loss starts at
log 2 = 0.69 nats instead of the prior's binary entropy, 0.10.
Symptom in a long run: the loss plunges in the first steps as the bias learns "almost always negative" (the
"hockey stick"); the large early gradients from thousands of easy negatives dominate, and the rare positives are
learnt late. The focal-loss paper reports training instability without the prior initialisation.
Source: Lin et al. (ICCV 2017, focal loss), §4.1 "initialise the bias to -log((1 - pi) / pi)"; Karpathy,
"A Recipe for Training Neural Networks" (2019), "init well"; Humbatova et al. (ICSE 2020) taxonomy,
"Model / Wrong weights initialisation".
"""

import torch
from torch import nn

EXPECT = {"last-layer-bias": "fail"}

N_FEATURES, BATCH = 16, 64


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(N_FEATURES, 64), nn.ReLU(), nn.Linear(64, 1))  # BUG: bias ~0 for a 2% prior


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, generator=g)
    x = torch.randn(16 * BATCH, N_FEATURES, generator=g)
    score = x @ w
    y = (score > torch.quantile(score, 0.98)).float().unsqueeze(1)  # (N, 1) of 0.0 / 1.0, 2% ones
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
