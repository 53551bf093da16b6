"""Broken: `F.dropout(h, 0.3)` in forward without `training=self.training`, so dropout stays on in eval mode.

Bug: `torch.nn.functional.dropout` defaults to `training=True`; unlike `nn.Dropout` it does not follow
`model.eval()`. Every evaluation forward drops 30% of the hidden units at random.
Symptom in a long run: validation loss and accuracy are noisy and worse than training ones; the same input gives a
different prediction on every call; early stopping and model selection pick checkpoints at random.
Source: Humbatova et al. (ICSE 2020) taxonomy, "Training / missing train-eval mode switch"; PyTorch docs of
`F.dropout` (training=True by default); a classic PyTorch-forum question ("model.eval() does not disable dropout").
"""

import torch
import torch.nn.functional as F
from torch import nn

EXPECT = {"eval-mode": "fail"}

N_FEATURES, N_CLASSES, BATCH = 20, 5, 32


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(N_FEATURES, 64)
        self.head = nn.Linear(64, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.dropout(torch.relu(self.fc1(x)), 0.3)  # BUG: missing training=self.training
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
