"""Broken: a functional `F.dropout` in forward feeds a BatchNorm (only a traced graph sees it).

Bug: the same variance shift as `nn.Dropout -> BatchNorm` (the BatchNorm's running variance is learnt on dropped-out,
rescaled activations), hidden in a functional call that forward hooks on modules cannot see.
Symptom in a long run: eval/test accuracy below training accuracy and noisy across epochs; the gap closes when the
dropout is removed.
Source: Li et al. (CVPR 2019), "Understanding the Disharmony between Dropout and Batch Normalization by Variance
Shift"; Humbatova et al. (ICSE 2020) taxonomy, "Model / Layers / Wrong layer order".
"""

import torch
import torch.nn.functional as F
from torch import nn

EXPECT = {"layer-order": "warn"}

N_FEATURES, N_CLASSES, BATCH = 20, 5, 32


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(N_FEATURES, 64, bias=False)
        self.bn = nn.BatchNorm1d(64)
        self.head = nn.Linear(64, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.dropout(torch.relu(self.fc1(x)), p=0.3, training=self.training)  # BUG: dropout before BatchNorm
        return self.head(torch.relu(self.bn(h)))


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
