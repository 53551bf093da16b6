"""Broken: a regression whose output is (B, 1) and whose target is (B,), trained with nn.MSELoss().

Bug: MSELoss broadcasts (B, 1) against (B,) to (B, B): every output is compared with every target of the batch, so
the best any model can do is predict the batch mean for every sample; the loss cannot fall below Var(y) of the batch.
PyTorch only emits a UserWarning ("Using a target size that is different to the input size"), easy to miss.
Symptom in a long run: the loss drops to the variance of the targets and stays there; predictions collapse to the
mean; R^2 stays at 0 while the code "runs fine".
Source: Humbatova et al. (ICSE 2020) taxonomy, "Tensors & Inputs / Wrong tensor shape"; Islam et al. (FSE 2019),
"Data / dimension mismatch"; a classic of the PyTorch forums.
"""

import torch
from torch import nn

EXPECT = {"overfit-batch": "fail"}

N_FEATURES, BATCH = 8, 32


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(N_FEATURES, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, generator=g) / N_FEATURES**0.5
    x = torch.randn(8 * BATCH, N_FEATURES, generator=g)
    y = torch.tanh(x @ w) * 2 + x[:, 0]  # (N,): BUG, the output is (N, 1)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


loss = nn.MSELoss()  # broadcasts (B, 1) against (B,) to (B, B)


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
