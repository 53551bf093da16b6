"""Broken: a CNN multiplies its input by zero in forward() (`x = x * self.scale` with a scale left at 0).

Bug: an input-scaling factor (meant to be 1/255 or a learned gain) is initialised to 0 and registered as a buffer,
so every image becomes black before the first convolution.
Symptom in a long run: the loss falls to the label prior within a few hundred steps and never goes lower;
train and validation accuracy both sit at the majority-class rate.
Source: Karpathy, "A Recipe for Training Neural Networks" (input-independent baseline); Humbatova et al.
(ICSE 2020), "Training data quality / Wrong preprocessing".
Caught by input-independent (real and blanked inputs train identically) and by batch-isolation (no sample's
output has any gradient on its own input).
"""

import torch
from torch import nn

EXPECT = {"input-independent": "fail", "batch-isolation": "fail"}


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("scale", torch.zeros(()))  # BUG: should be torch.ones(()) (or 1 / 255)
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
        self.head = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.scale
        return self.head(self.features(x).flatten(1))


def model() -> nn.Module:
    return Net()


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 1, 12, 12, generator=g) * 0.5
    y = torch.randint(0, 4, (256,), generator=g)
    for i, c in enumerate(y.tolist()):
        r, s = divmod(c, 2)
        x[i, 0, r * 6 : r * 6 + 6, s * 6 : s * 6 + 6] += 1.0
    return [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
