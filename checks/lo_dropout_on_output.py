"""Broken: a classifier applies dropout to its logits (`nn.Dropout` after the output layer).

Bug: dropout on the output zeroes whole logits at random in training (and scales the others by 1/(1-p)): the loss is
computed on corrupted predictions, so the gradient is noisy and biased, and eval-mode logits have another scale than
the ones the model was trained with.
Symptom in a long run: a noisy loss curve that plateaus above what the model can reach; calibration in eval mode is
off (over-confident), and accuracy gains stop early.
Source: Humbatova et al. (ICSE 2020) taxonomy, "Model / Layers / Wrong layer order"; DeepCrime's "add layer"
mutation; a recurring PyTorch-forum question ("dropout after the last layer").
"""

import torch
from torch import nn

EXPECT = {"layer-order": "fail"}

N_FEATURES, N_CLASSES, BATCH = 20, 5, 32


def model() -> nn.Module:
    return nn.Sequential(
        nn.Linear(N_FEATURES, 64),
        nn.ReLU(),
        nn.Linear(64, N_CLASSES),
        nn.Dropout(0.2),  # BUG: dropout on the logits
    )


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, N_CLASSES, generator=g)
    x = torch.randn(8 * BATCH, N_FEATURES, generator=g)
    y = (x @ w).argmax(dim=1)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
