"""Correct: causal dilated 1D temporal CNN predicting the next value of standardised multi-sine series."""

import torch
import torch.nn.functional as F
from torch import nn


class CausalConv(nn.Module):
    def __init__(self, i, o, k, d):
        super().__init__()
        self.pad = (k - 1) * d
        self.conv = nn.Conv1d(i, o, k, dilation=d)

    def forward(self, x):
        return self.conv(F.pad(x, (self.pad, 0)))


class TCN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = CausalConv(1, 16, 3, 1)
        self.c2 = CausalConv(16, 16, 3, 2)
        self.c3 = CausalConv(16, 16, 3, 4)
        self.act = nn.ReLU()
        self.head = nn.Linear(16, 1)

    def forward(self, x):  # x (B, 1, L)
        h = self.act(self.c1(x))
        h = h + self.act(self.c2(h))
        h = h + self.act(self.c3(h))
        return self.head(h[:, :, -1])  # (B, 1)


def model():
    return TCN()


def data():
    g = torch.Generator().manual_seed(0)
    n, L = 256, 33
    f = torch.rand(n, 2, generator=g) * 0.4 + 0.1
    ph = torch.rand(n, 2, generator=g) * 6.28
    t = torch.arange(L).float()
    s = torch.sin(f[:, :1] * t + ph[:, :1]) + 0.5 * torch.sin(f[:, 1:] * t + ph[:, 1:])
    s = s + 0.05 * torch.randn(n, L, generator=g)
    s = (s - s.mean()) / s.std()
    x, y = s[:, None, :-1], s[:, -1:]
    return [(x[i : i + 32], y[i : i + 32]) for i in range(0, n, 32)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
