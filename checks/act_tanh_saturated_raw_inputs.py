"""Broken: raw, unscaled inputs (values in the thousands) go straight into a Linear -> Tanh network.

Bug: the features are physical quantities in their raw units (here standard-normal features times 1000, as
metres instead of kilometres), never standardised. The first layer's pre-activations have std ~600, so nearly
every tanh output is +/-1, where its gradient is zero.
Symptom in a long run: the loss barely moves for many epochs, then moves in jumps; the first layer's gradients
are tiny; the model is very sensitive to the learning rate.
Source: Humbatova et al. (ICSE 2020) taxonomy, "Training / Training data quality / Missing preprocessing
(normalisation)"; cs231n notes, "saturated neurons kill the gradients"; LeCun et al. 1998, "Efficient BackProp".
"""

import torch
from torch import nn

EXPECT = {"activations": "warn"}

N_FEATURES, N_CLASSES, BATCH, SCALE = 10, 3, 32, 1000.0


def model() -> nn.Module:
    return nn.Sequential(
        nn.Linear(N_FEATURES, 32),
        nn.Tanh(),
        nn.Linear(32, 32),
        nn.Tanh(),
        nn.Linear(32, N_CLASSES),
    )


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, N_CLASSES, generator=g)
    x = torch.randn(8 * BATCH, N_FEATURES, generator=g)
    y = (x @ w).argmax(dim=1)
    x = x * SCALE  # BUG: raw units, no standardisation
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
