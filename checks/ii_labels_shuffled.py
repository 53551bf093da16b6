"""Broken: the labels are shuffled independently of the inputs (x and y no longer belong together).

Bug: the data pipeline shuffles the targets with their own permutation (`y = y[torch.randperm(len(y))]`), as
happens with two separately shuffled datasets zipped together or a sort applied to x only.
Symptom in a long run: the training loss still falls (the network memorises the random pairs), validation loss
rises from the start, validation accuracy stays at chance.
Source: Karpathy, "A Recipe for Training Neural Networks" (input-independent baseline, "visualize just before the
net"); Zhang et al. (ICLR 2017), "Understanding deep learning requires rethinking generalization" (random labels
are memorised); Humbatova et al. (ICSE 2020), "Training data quality / Wrong labels".
"""

import torch
from torch import nn

EXPECT = {"input-independent": "warn"}
# The fast budget stops the side-by-side run at 10 steps: memorising noise shows on the held-out batch only after
# ~60 (see `nncheck explain input-independent`, decide_at_cap); it ends inconclusive and points to the full budget.
EXPECT_FAST = {"input-independent": "skip"}

N_FEATURES, N_CLASSES, BATCH = 20, 5, 32


def model() -> nn.Module:
    return nn.Sequential(
        nn.Linear(N_FEATURES, 64),
        nn.ReLU(),
        nn.Linear(64, 64),
        nn.ReLU(),
        nn.Linear(64, N_CLASSES),
    )


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, N_CLASSES, generator=g)
    x = torch.randn(8 * BATCH, N_FEATURES, generator=g)
    y = (x @ w).argmax(dim=1)
    y = y[torch.randperm(len(y), generator=g)]  # BUG: labels shuffled without their inputs
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
