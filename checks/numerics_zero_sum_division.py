"""Broken: histograms normalised with `x / x.sum(dim=1, keepdim=True)`; some rows are all zero (0 / 0 = NaN).

Bug: the model turns non-negative histogram features into frequencies by dividing by the row sum, without an
epsilon; an empty histogram (all-zero row) gives 0/0 = NaN in every feature of that sample.
Symptom in a long run: the loss becomes `nan` as soon as a batch holds an empty row (here at once); the weights are
NaN after the next step.
Source: Humbatova et al. (ICSE 2020) taxonomy, "Missing / wrong numerical guard (epsilon)"; DeepCrime mutation
"remove epsilon from a division".
"""

import torch
from torch import nn

EXPECT = {"numerics": "fail"}

N_FEATURES, N_CLASSES, BATCH = 20, 5, 32


class Frequencies(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(N_FEATURES, 64), nn.ReLU(), nn.Linear(64, N_CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        freq = x / x.sum(dim=1, keepdim=True)  # BUG: 0 / 0 for an empty histogram; add + 1e-8
        return self.net(freq)


def model() -> nn.Module:
    return Frequencies()


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.poisson(torch.full((8 * BATCH, N_FEATURES), 0.5), generator=g)
    x[torch.rand(len(x), generator=g) < 0.1] = 0.0  # empty histograms
    y = x[:, :N_CLASSES].argmax(dim=1)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
