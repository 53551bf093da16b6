"""Broken: a custom loss compares *rounded* predictions with the labels, so its gradient w.r.t. the output is zero.

Bug: `torch.round` has a zero derivative everywhere; the loss is a perfectly valid number (an error rate) but
backpropagates nothing, so no parameter ever receives a gradient. The same happens with `argmax`, comparisons,
`.detach()`, `.item()` or a trip through numpy between the output and the loss (those usually crash instead).
Symptom in a long run: the loss curve is flat from step 0 (it moves only with the batch), the weights never change,
and no error is raised.
Source: Humbatova et al. (ICSE 2020) taxonomy, "Loss function / Wrong loss function calculation"; Islam et al. (FSE
2019), "non-differentiable loss"; a frequent PyTorch-forum question ("loss does not decrease, gradients are None").
"""

import torch
from torch import nn

EXPECT = {"loss-function": "fail"}

N_FEATURES, BATCH = 16, 32


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(N_FEATURES, 32), nn.ReLU(), nn.Linear(32, 1))


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, generator=g)
    x = torch.randn(8 * BATCH, N_FEATURES, generator=g)
    y = (x @ w > 0).float()
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def loss(output, target):
    pred = torch.round(torch.sigmoid(output.squeeze(1)))  # BUG: round() has zero gradient
    return ((pred - target) ** 2).mean()


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
