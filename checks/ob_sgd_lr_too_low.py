"""Broken: SGD with a learning rate 1000x too low (lr=1e-5 where 1e-2 was meant: a typo in the exponent).

Bug: every update is ~1e-5 of the gradient; the weights barely move, so the loss stays at its initial value for
thousands of steps. The model, loss and data are fine: Adam(lr=3e-4) memorises a batch of this setup quickly.
Symptom in a long run: a flat loss curve at log C; the run "does nothing" and is often blamed on the model.
Source: DeepCrime mutation operator "change learning rate" (Humbatova et al., ISSTA 2021); Humbatova et al.
(ICSE 2020) taxonomy, "Training / Hyperparameters / Suboptimal learning rate"; Karpathy's recipe ("overfit one batch").
"""

import torch
from torch import nn

EXPECT = {"overfit-batch": "fail"}

N_FEATURES, N_CLASSES, BATCH = 20, 5, 32


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(N_FEATURES, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, N_CLASSES))


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, N_CLASSES, generator=g)
    x = torch.randn(8 * BATCH, N_FEATURES, generator=g)
    y = (x @ w).argmax(dim=1)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.SGD(params, lr=1e-5, momentum=0.9)  # BUG: meant lr=1e-2
