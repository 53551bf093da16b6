"""Broken: the feature extractor runs under `torch.no_grad()` inside forward().

Bug: a `with torch.no_grad():` meant for a frozen pretrained backbone wraps a backbone that is supposed to train
(its parameters have requires_grad=True and are in the optimizer), so it never gets a gradient.
Symptom in a long run: only the head learns; accuracy plateaus far below what the architecture reaches.
Source: Humbatova et al. (ICSE 2020) taxonomy, "Training / Gradient computation disabled"; Islam et al. (FSE 2019);
the PyTorch forum classic "grad is None for my layers".
"""

import torch
from torch import nn

EXPECT = {"gradient-flow": "fail"}

N_FEATURES, N_CLASSES, BATCH = 20, 5, 32


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(N_FEATURES, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())
        self.head = nn.Linear(64, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # BUG: the backbone is meant to train
            h = self.backbone(x)
        return self.head(h)


def model() -> nn.Module:
    return Net()


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, N_CLASSES, generator=g)
    x = torch.randn(8 * BATCH, N_FEATURES, generator=g)
    y = (x @ w).argmax(dim=1)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
