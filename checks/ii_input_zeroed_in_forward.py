"""Broken: the input is overwritten with zeros inside forward() (`x = torch.zeros_like(x)`).

Bug: a debugging line (or a mask applied with the wrong polarity) blanks the input before the first layer, so the
output does not depend on the data at all.
Symptom in a long run: the loss drops quickly to the entropy of the label prior (the model learns the class
frequencies through its biases) and then plateaus forever; accuracy equals the majority-class rate.
Source: Karpathy, "A Recipe for Training Neural Networks" (input-independent baseline); Humbatova et al.
(ICSE 2020) taxonomy, "Training data quality / Wrong input"; DeepCrime-style mutation of the forward pass.
Caught by input-independent (real and blanked inputs train identically) and by batch-isolation (no sample's
output has any gradient on its own input).
"""

import torch
from torch import nn

EXPECT = {"input-independent": "fail", "batch-isolation": "fail"}

N_FEATURES, N_CLASSES, BATCH = 20, 5, 32


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(N_FEATURES, 64), nn.ReLU(), nn.Linear(64, N_CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.zeros_like(x)  # BUG: the input is thrown away
        return self.net(x)


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
