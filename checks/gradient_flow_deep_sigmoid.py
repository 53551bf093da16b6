"""Broken: a 20-layer MLP with sigmoid activations and default init: the gradients vanish towards the input.

Bug: the sigmoid's derivative is at most 1/4 and PyTorch's default Linear init has gain < 1, so each layer shrinks
the backpropagated gradient by ~10x; after 20 layers the first layers' gradients are ~1e-12 of the last layer's.
Symptom in a long run: the loss decreases only through the last layers; the first layers stay at their init, and
training stalls at a mediocre loss.
Source: Hochreiter (1991), Bengio et al. (1994); Glorot & Bengio (AISTATS 2010); Humbatova et al. (ICSE 2020)
taxonomy, "Vanishing gradient"; DeepCrime mutation "change activation function".
"""

import torch
from torch import nn

EXPECT = {"gradient-flow": "warn"}

N_FEATURES, N_CLASSES, WIDTH, DEPTH, BATCH = 20, 5, 32, 20, 32


def model() -> nn.Module:
    layers: list[nn.Module] = [nn.Linear(N_FEATURES, WIDTH), nn.Sigmoid()]
    for _ in range(DEPTH - 2):
        layers += [nn.Linear(WIDTH, WIDTH), nn.Sigmoid()]  # BUG: deep sigmoid stack, no normalisation / residual
    return nn.Sequential(*layers, nn.Linear(WIDTH, N_CLASSES))


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, N_CLASSES, generator=g)
    x = torch.randn(8 * BATCH, N_FEATURES, generator=g)
    y = (x @ w).argmax(dim=1)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.SGD(params, lr=0.1)
