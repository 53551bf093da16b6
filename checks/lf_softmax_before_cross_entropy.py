"""Broken: `forward` returns `F.softmax(logits, dim=1)` and the (inferred) loss is cross-entropy: a double softmax.

Bug: cross-entropy applies log_softmax itself; fed probabilities in [0, 1] it squashes them again, so the loss has a
floor far above 0 (1.10 nats for 5 classes) and the gradients shrink by the extra softmax's Jacobian. The softmax is
a functional call inside forward, invisible to module hooks.
Symptom in a long run: the loss falls a little, then plateaus high; the model never becomes confident; the loss at
init looks right (log C), so nothing seems wrong at first.
Source: Islam et al. (FSE 2019), "wrong loss input" / API misuse; Humbatova et al. (ICSE 2020) taxonomy, "Model /
Layers / Missing or redundant softmax".
"""

import torch
import torch.nn.functional as F
from torch import nn

EXPECT = {"loss-function": "fail"}

N_FEATURES, N_CLASSES, BATCH = 20, 5, 32


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(N_FEATURES, 64), nn.ReLU())
        self.head = nn.Linear(64, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.head(self.body(x)), dim=1)  # BUG: cross-entropy applies the softmax itself


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
