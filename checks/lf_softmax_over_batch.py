"""Broken: a hand-written cross-entropy normalises over the batch (`log_softmax(logits, dim=0)`) instead of the
classes.

Bug: `dim=0` where `dim=1` (or `dim=-1`) was meant; with (N, C) logits both run without an error. Each sample's loss
then depends on the logits of every other sample of the batch: the model learns "which sample of the batch is most
likely class c", not "which class is sample i".
Symptom in a long run: the training loss falls, but accuracy stays low and depends on the batch size and the batch
composition; predictions at batch size 1 are meaningless (log_softmax over one row is 0).
Source: Humbatova et al. (ICSE 2020) taxonomy, "Loss function / wrong loss calculation"; Islam et al. (FSE 2019),
"wrong dimension" API misuse; the softmax-dimension warnings of PyTorch's implicit-dim deprecation.
"""

import torch
import torch.nn.functional as F
from torch import nn

EXPECT = {"loss-function": "fail"}

N_FEATURES, N_CLASSES = 20, 5


def data():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(N_CLASSES, N_FEATURES, generator=g)
    y = torch.randint(0, N_CLASSES, (256,), generator=g)
    x = mu[y] + torch.randn(256, N_FEATURES, generator=g)
    return [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(N_FEATURES, 64), nn.ReLU(), nn.Linear(64, N_CLASSES))


def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logp = F.log_softmax(logits, dim=0)  # BUG: normalises over the batch; should be dim=1
    return -(logp * F.one_hot(y, N_CLASSES).float()).sum(1).mean()


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
