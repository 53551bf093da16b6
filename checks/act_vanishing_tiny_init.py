"""Broken: a 10-layer tanh MLP whose weights are drawn with std 1e-3 (biases zero): activations vanish with depth.

Bug: `nn.init.normal_(w, std=1e-3)` for every layer ("small random numbers"). Each layer multiplies the signal's
scale by about 1e-3 * sqrt(64) = 0.008, so after ten layers the hidden activations are ~1e-20 of the input's:
the last layers see no information about the input and the gradients reaching the first layers vanish.
Symptom in a long run: the loss sits at the prior for a long time (a plateau), the first layers' weights do not
move, training looks "stuck".
Source: cs231n notes, "Weight initialization" (the 10-layer tanh net with 0.01 std weights whose activations
collapse to zero); Glorot & Bengio 2010; Humbatova et al. (ICSE 2020), "Model / Wrong weights initialisation".
"""

import torch
from torch import nn

EXPECT = {"activations": "warn"}

N_FEATURES, N_CLASSES, WIDTH, DEPTH, BATCH = 16, 4, 64, 10, 32


def model() -> nn.Module:
    layers: list[nn.Module] = [nn.Linear(N_FEATURES, WIDTH), nn.Tanh()]
    for _ in range(DEPTH - 2):
        layers += [nn.Linear(WIDTH, WIDTH), nn.Tanh()]
    layers.append(nn.Linear(WIDTH, N_CLASSES))
    net = nn.Sequential(*layers)
    for m in net.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=1e-3)  # BUG: far below Xavier's sqrt(1 / fan_in) = 0.125
            nn.init.zeros_(m.bias)
    return net


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, N_CLASSES, generator=g)
    x = torch.randn(8 * BATCH, N_FEATURES, generator=g)
    y = (x @ w).argmax(dim=1)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
