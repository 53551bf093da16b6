"""Broken: model() initialises its weights from an unseeded numpy Generator (`np.random.default_rng()`).

Bug: `np.random.default_rng()` without a seed draws its state from OS entropy, so `np.random.seed(...)` and
`torch.manual_seed(...)` do not reach it: every call of model() gives different initial weights.
Symptom in a long run: two runs with the same seed end at different accuracies; a regression cannot be
reproduced or bisected, and a "better" hyperparameter may only be a luckier init.
Source: Pham et al., ASE 2020 ("Problems and Opportunities in Training Deep Learning Software Systems: An Analysis
of Variance"): unseeded weight initialisation as a nondeterminism-introducing factor; Humbatova et al. ICSE 2020
taxonomy, "Model > Wrong weights initialisation".
"""

import numpy as np
import torch
from torch import nn

EXPECT = {"determinism": "fail"}


def model() -> nn.Module:
    net = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 3))
    rng = np.random.default_rng()  # BUG: no seed -> OS entropy
    with torch.no_grad():
        for layer in (net[0], net[2]):
            fan_in = layer.weight.shape[1]
            w = rng.normal(0.0, (2.0 / fan_in) ** 0.5, size=tuple(layer.weight.shape))
            layer.weight.copy_(torch.as_tensor(w, dtype=torch.float32))
    return net


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 10, generator=g)
    y = (x[:, :3]).argmax(dim=1)
    return [(x[i : i + 32], y[i : i + 32]) for i in range(0, 128, 32)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
