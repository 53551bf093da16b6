"""Broken: a fixed random-feature projection built with `random.Random()` (no seed) inside model().

Bug: `random.Random()` seeds itself from OS entropy; `random.seed(...)` only seeds the module-level generator.
The projection buffer (not even a parameter, so no optimizer ever fixes it) differs at every model() call.
Symptom in a long run: identical configs give different learning curves; a saved checkpoint's buffer does not
match a rebuilt model's, so results cannot be reproduced from code + seed.
Source: Pham et al., ASE 2020 (variance from unseeded random generators); random-features models (Rahimi & Recht,
NeurIPS 2007) are a common place for such hand-rolled generators.
"""

import random

import torch
from torch import nn

EXPECT = {"determinism": "fail"}


class RandomFeatures(nn.Module):
    def __init__(self, d_in: int, d_feat: int, n_classes: int) -> None:
        super().__init__()
        rng = random.Random()  # BUG: no seed -> OS entropy
        proj = torch.tensor([[rng.gauss(0.0, 1.0) for _ in range(d_feat)] for _ in range(d_in)])
        self.register_buffer("proj", proj)
        self.head = nn.Linear(d_feat, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cos(x @ self.proj))


def model() -> nn.Module:
    return RandomFeatures(8, 32, 3)


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 8, generator=g)
    y = (x[:, :3]).argmax(dim=1)
    return [(x[i : i + 32], y[i : i + 32]) for i in range(0, 128, 32)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
