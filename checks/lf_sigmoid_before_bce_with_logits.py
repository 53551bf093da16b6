"""Broken: a multi-label classifier ends in `nn.Sigmoid()` and is trained with BCEWithLogitsLoss (a double sigmoid).

Bug: BCEWithLogitsLoss applies the sigmoid itself; fed sigmoid outputs in (0, 1), its own sigmoid maps them into
(0.5, 0.73), so a negative label can never be predicted below 0.5 and the loss has a floor (0.69 nats for a 0-label,
0.31 for a 1-label); the gradients are squashed twice.
Symptom in a long run: the loss stalls at a high plateau; every predicted probability (after the user's sigmoid)
ends near 1 for all labels, so thresholding at 0.5 predicts everything positive.
Source: Islam et al. (FSE 2019), "wrong loss input"; Humbatova et al. (ICSE 2020) taxonomy, "Model / Layers /
Wrong activation function" and "Loss function / Wrong loss function"; PyTorch forums' recurring BCEWithLogits question.
"""

import torch
from torch import nn

EXPECT = {"loss-function": "fail"}

N_FEATURES, N_LABELS, BATCH = 16, 4, 32


def model() -> nn.Module:
    return nn.Sequential(
        nn.Linear(N_FEATURES, 32),
        nn.ReLU(),
        nn.Linear(32, N_LABELS),
        nn.Sigmoid(),  # BUG: BCEWithLogitsLoss expects raw logits
    )


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, N_LABELS, generator=g)
    x = torch.randn(8 * BATCH, N_FEATURES, generator=g)
    y = (x @ w > 0).float()
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


loss = nn.BCEWithLogitsLoss()


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
