"""Broken: `torch.log(x)` of count features that contain zeros (missing epsilon / log1p).

Bug: the model log-transforms non-negative count features with `torch.log(x)`; every zero count becomes -inf, the
first Linear turns -inf times weights of both signs into NaN.
Symptom in a long run: the loss is `nan` from the very first step and never recovers; accuracy stays at chance.
Source: Humbatova et al. (ICSE 2020) taxonomy, "Missing / wrong numerical guard (epsilon)"; Islam et al. (FSE 2019),
"numerical errors" (log of zero is their most frequent NaN cause).
"""

import torch
from torch import nn

EXPECT = {"numerics": "fail"}

N_FEATURES, N_CLASSES, BATCH = 20, 5, 32


class LogCounts(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(N_FEATURES, 64), nn.ReLU(), nn.Linear(64, N_CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.log(x))  # BUG: log(0) = -inf; use torch.log1p(x)


def model() -> nn.Module:
    return LogCounts()


def data():
    g = torch.Generator().manual_seed(0)
    rate = torch.rand(N_FEATURES, generator=g) * 3
    x = torch.poisson(rate.expand(8 * BATCH, N_FEATURES), generator=g)  # counts, many zeros
    y = (x[:, :N_CLASSES] - rate[:N_CLASSES]).argmax(dim=1)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
