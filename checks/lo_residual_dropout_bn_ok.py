"""Correct: residual blocks with dropout on the main branch and a BatchNorm on the shortcut branch.

Dropout and BatchNorm sit in *different branches* of each block (`relu(dropout(branch(x)) + bn(proj(x)))`), so no
dropout mask reaches a BatchNorm's input: there is no variance shift (Li et al., CVPR 2019). A layer-order check that
only looks at execution order (dropout runs, then a BatchNorm runs) would flag this wrongly; the data flow does not.
The output layer is a plain Linear.
"""

import torch
from torch import nn

CORRECT = True
EXPECT: dict[str, str] = {}

N_FEATURES, N_CLASSES, BATCH = 20, 5, 32


class Block(nn.Module):
    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d_in, d_out)
        self.drop = nn.Dropout(0.2)
        self.proj = nn.Linear(d_in, d_out, bias=False)
        self.bn = nn.BatchNorm1d(d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.drop(torch.relu(self.fc(x))) + self.bn(self.proj(x)))


def model() -> nn.Module:
    return nn.Sequential(Block(N_FEATURES, 64), Block(64, 64), nn.Linear(64, N_CLASSES))


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, N_CLASSES, generator=g)
    x = torch.randn(8 * BATCH, N_FEATURES, generator=g)
    y = (x @ w).argmax(dim=1)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
