"""Broken: the output of one branch of a two-branch model is `.detach()`ed before the branches are merged.

Bug: a "stop-gradient" left in from an experiment (or copied from a target-network recipe) cuts the graph after the
`context` branch, so its Linear layers never receive a gradient and keep their random init.
Symptom in a long run: training works, only worse than it should; the context branch's weights never change
(visible only by diffing checkpoints).
Source: Humbatova et al. (ICSE 2020) taxonomy, "Model / Layers: missing or wrong connection"; Islam et al. (FSE
2019); DeepCrime mutation operators (graph changes); the PyTorch forum classic "my layer's grad is None".
"""

import torch
from torch import nn

EXPECT = {"gradient-flow": "fail"}

N_FEATURES, N_CLASSES, BATCH = 20, 5, 32


class TwoBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.main = nn.Sequential(nn.Linear(N_FEATURES, 32), nn.ReLU())
        self.context = nn.Sequential(nn.Linear(N_FEATURES, 32), nn.ReLU())
        self.head = nn.Linear(64, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.context(x).detach()  # BUG: stops the gradient into self.context
        return self.head(torch.cat([self.main(x), c], dim=1))


def model() -> nn.Module:
    return TwoBranch()


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, N_CLASSES, generator=g)
    x = torch.randn(8 * BATCH, N_FEATURES, generator=g)
    y = (x @ w).argmax(dim=1)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
