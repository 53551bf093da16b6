"""Broken: a regression MLP ends in BatchNorm1d after its output layer (BatchNorm on the final output).

Bug: the BatchNorm forces the predictions to zero mean and unit variance over each batch (then a learnt affine map),
so in training every batch's predictions are re-centred whatever the inputs say, and in eval the running statistics
replace them: the model can neither express the targets' scale quickly nor give a sample a prediction that does not
depend on the rest of its batch.
Symptom in a long run: the loss plateaus early; eval predictions differ from training ones; predictions for a single
sample (batch of 1) crash in train mode or are off in eval mode.
Source: Humbatova et al. (ICSE 2020) taxonomy, "Model / Layers / Wrong layer order" and "Redundant layer";
DeepCrime's "add layer" mutation.
"""

import torch
from torch import nn

EXPECT = {"layer-order": "fail"}

N_FEATURES, BATCH = 8, 32


def model() -> nn.Module:
    return nn.Sequential(
        nn.Linear(N_FEATURES, 32),
        nn.ReLU(),
        nn.Linear(32, 1),
        nn.BatchNorm1d(1),  # BUG: normalises the predictions over the batch
    )


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, 1, generator=g)
    x = torch.randn(8 * BATCH, N_FEATURES, generator=g)
    y = 3.0 * (x @ w) + 5.0
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
