"""Broken: the forward adds input noise from a torch.Generator seeded from the clock.

Bug: `torch.Generator().manual_seed(time.time_ns())` is created per call: the noise differs between runs
with the same seed, so training is not reproducible even though model and data are.
Symptom in a long run: two runs from one seed give different losses from the first step; debugging a
divergence by re-running it is impossible.
Source: Pham et al., ASE 2020 (noise/augmentation RNGs as a variance source); DeepCrime's "change noise"
mutation family (Humbatova et al., ISSTA 2021) shows how sensitive training is to this noise.
"""

import time

import torch
from torch import nn

EXPECT = {"determinism": "fail"}


class NoisyMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            g = torch.Generator().manual_seed(time.time_ns())  # BUG: seeded from the clock
            x = x + 0.1 * torch.randn(x.shape, generator=g)
        return self.net(x)


def model() -> nn.Module:
    return NoisyMLP()


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 10, generator=g)
    y = (x[:, :3]).argmax(dim=1)
    return [(x[i : i + 32], y[i : i + 32]) for i in range(0, 128, 32)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
