"""Broken: every parameter is frozen; nothing can train.

Bug: a fine-tuning script freezes the pretrained backbone with `model.requires_grad_(False)` and is meant to unfreeze
the new head afterwards; the head is built before the freeze (or the unfreeze line was lost), so every parameter has
`requires_grad=False`.
Symptom in a long run: the first `loss.backward()` raises torch's "element 0 of tensors does not require grad and
does not have a grad_fn", which names neither the freeze nor the layer; with a loss that does not need gradients
(an evaluation loop reused for training) the loss simply never moves.
Source: Humbatova et al. (ICSE 2020) taxonomy, "Training / Wrong selection of trainable parameters"; that error
message is one of the most asked-about on the PyTorch forums; nncheck issue 13 ("wrong culprit").
"""

import torch
from torch import nn

EXPECT = {"gradient-flow": "fail"}

N_FEATURES, N_CLASSES, BATCH = 20, 5, 32


def model() -> nn.Module:
    net = nn.Sequential(nn.Linear(N_FEATURES, 64), nn.ReLU(), nn.Linear(64, N_CLASSES))
    net.requires_grad_(False)  # BUG: meant for the backbone only; unfreeze the head: net[2].requires_grad_(True)
    return net


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8 * BATCH, N_FEATURES, generator=g)
    y = (x[:, :N_CLASSES] + 0.5 * torch.randn(8 * BATCH, N_CLASSES, generator=g)).argmax(dim=1)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]
