"""Broken: the first hidden layer's bias is initialised at -5, so its ReLU is never positive (all units dead).

Bug: a custom init writes a large negative constant into the bias of the layer before a ReLU (a sign slip in
`bias.fill_(5.0)`, or a "sparsity" trick with the wrong scale). Every pre-activation is about -5 +/- 0.6, the ReLU
outputs exact zeros for every sample, and no gradient reaches the first layer.
Symptom in a long run: the loss stays at the prior's level (the model predicts the label frequencies), gradients of
the first layer are exactly zero, accuracy never leaves chance.
Source: Humbatova et al. (ICSE 2020) taxonomy, "Model / Wrong weights initialisation"; Lu et al. 2019,
"Dying ReLU and Initialization"; cs231n notes, "dead ReLUs".
"""

import torch
from torch import nn

EXPECT = {"activations": "fail"}

N_FEATURES, N_CLASSES, BATCH = 20, 5, 32


def model() -> nn.Module:
    net = nn.Sequential(
        nn.Linear(N_FEATURES, 64),
        nn.ReLU(),
        nn.Linear(64, 64),
        nn.ReLU(),
        nn.Linear(64, N_CLASSES),
    )
    with torch.no_grad():
        net[0].bias.fill_(-5.0)  # BUG: every unit of the first ReLU starts (and stays) dead
    return net


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, N_CLASSES, generator=g)
    x = torch.randn(8 * BATCH, N_FEATURES, generator=g)
    y = (x @ w).argmax(dim=1)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
