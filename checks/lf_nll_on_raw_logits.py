"""Broken: NLLLoss on raw logits (the model has no log_softmax).

Bug: NLLLoss only picks `-output[target]`; it expects log-probabilities. On raw logits the loss is unbounded below:
the model lowers it by inflating the target logit without limit, not by separating classes.
Symptom in a long run: the loss goes negative and keeps falling towards -inf, logits explode, and accuracy is poor.
Source: Islam et al. (FSE 2019), "missing softmax / wrong loss input"; Humbatova et al. (ICSE 2020) taxonomy,
"Model / Layers / Missing softmax"; PyTorch docs of NLLLoss ("obtaining log-probabilities ... LogSoftmax").
"""

import torch
from torch import nn

EXPECT = {"loss-function": "fail"}

N_FEATURES, N_CLASSES, BATCH = 20, 5, 32


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(N_FEATURES, 64), nn.ReLU(), nn.Linear(64, N_CLASSES))  # BUG: no LogSoftmax


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, N_CLASSES, generator=g)
    x = torch.randn(8 * BATCH, N_FEATURES, generator=g)
    y = (x @ w).argmax(dim=1)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


loss = nn.NLLLoss()


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
