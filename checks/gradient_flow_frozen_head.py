"""Broken: an inverted freezing condition freezes the classifier head and trains the backbone.

Bug: a fine-tuning loop meant to freeze the first layer (`if name.startswith("0.")`) tests the head's prefix
instead, so the output Linear has `requires_grad=False` and keeps its random init while the layers before it train.
The model can only learn features that happen to suit a random, fixed read-out.
Symptom in a long run: the loss falls slowly and plateaus well above what the architecture reaches; a linear probe
on the features does much better; the optimizer holds every parameter except the head's.
Source: Humbatova et al. (ICSE 2020) taxonomy, "Training / Wrong selection of trainable parameters"; Islam et al.
(FSE 2019), "API misuse" in transfer learning; held-out evaluation .notes/heldout/b_frozen_head.py.
"""

import torch
from torch import nn

EXPECT = {"gradient-flow": "warn"}

N_FEATURES, N_CLASSES, BATCH = 20, 5, 32


def model() -> nn.Module:
    net = nn.Sequential(nn.Linear(N_FEATURES, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, N_CLASSES))
    for name, p in net.named_parameters():
        if name.startswith("4."):  # BUG: meant `if name.startswith("0.")` (freeze the first layer)
            p.requires_grad_(False)
    return net


def data():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(N_CLASSES, N_FEATURES, generator=g)
    y = torch.randint(0, N_CLASSES, (8 * BATCH,), generator=g)
    x = mu[y] + torch.randn(8 * BATCH, N_FEATURES, generator=g)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.Adam([p for p in params if p.requires_grad], lr=1e-3)
