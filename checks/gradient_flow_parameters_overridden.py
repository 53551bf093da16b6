"""Broken: the model overrides `parameters()` to return only the encoder's parameters.

Bug: a custom `parameters()` (meant to expose "the trainable part" for some optimizer recipe) forgets the decoder;
`optimizer(model.parameters())` never sees the classifier head, which gets gradients but never moves.
Symptom in a long run: the loss plateaus high; the head stays at its random init.
Source: Humbatova et al. (ICSE 2020) taxonomy, "Training / Optimiser: wrong optimiser configuration"; DeepCrime
mutation operators (training-process changes).
"""

from collections.abc import Iterator

import torch
from torch import nn

EXPECT = {"gradient-flow": "fail"}

N_FEATURES, N_CLASSES, BATCH = 20, 5, 32


class EncoderHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(N_FEATURES, 64), nn.ReLU())
        self.head = nn.Linear(64, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:  # BUG: forgets self.head
        return self.encoder.parameters(recurse)


def model() -> nn.Module:
    return EncoderHead()


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, N_CLASSES, generator=g)
    x = torch.randn(8 * BATCH, N_FEATURES, generator=g)
    y = (x @ w).argmax(dim=1)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
