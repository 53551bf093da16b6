"""Broken: a submodule overrides `train()` and always calls `super().train(True)`, so it never leaves train mode.

Bug: the block's author wanted "Monte-Carlo dropout" during development and wrote `def train(self, mode=True):
return super().train(True)`. `model.eval()` reaches the block, which ignores the mode: its dropout keeps dropping
and its BatchNorm keeps using batch statistics and updating its running averages on evaluation data.
Symptom in a long run: validation metrics are noisy and depend on the eval batch size and composition; the running
statistics drift towards the validation set; predictions on one sample are random.
Source: Humbatova et al. (ICSE 2020) taxonomy, "Training / missing train-eval mode switch"; PyTorch docs of
`Module.train` (overrides must pass the mode on and return self).
"""

import torch
from torch import nn

EXPECT = {"eval-mode": "fail"}

N_FEATURES, N_CLASSES, BATCH = 20, 5, 32


class Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d, d, bias=False)
        self.bn = nn.BatchNorm1d(d)
        self.drop = nn.Dropout(0.2)

    def train(self, mode: bool = True) -> "Block":
        return super().train(True)  # BUG: ignores mode, so model.eval() never reaches this block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(torch.relu(self.bn(self.fc(x))))


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(N_FEATURES, 64), nn.ReLU(), Block(64), nn.Linear(64, N_CLASSES))


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, N_CLASSES, generator=g)
    x = torch.randn(8 * BATCH, N_FEATURES, generator=g)
    y = (x @ w).argmax(dim=1)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
