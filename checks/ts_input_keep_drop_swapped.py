"""Broken: a custom train step whose input dropout keeps no input: the keep / drop probabilities are swapped.

Bug: `x = x * (torch.rand_like(x) < INPUT_DROP)` with INPUT_DROP = 0.0 (meant: drop 0% of the features) keeps a
feature with probability 0.0: every training input is all zeros, in every step of the user's loop. The model never
sees its inputs; it learns the label prior. nncheck's own steps would not show it: only a check that runs the
setup's train_step on real and on blanked inputs does (both copies then train on zeros: identical losses).
Symptom in a long run: the loss falls to the entropy of the label frequencies and stays there; evaluation (which
skips the train step's masking) is at chance.
Source: the keep-probability vs drop-probability convention (TF1 `dropout(keep_prob)` vs `torch.nn.Dropout(p)` with
p the drop probability; Srivastava et al. 2014 use the retention probability p); Karpathy's recipe ("visualise just
before the net": the data the model receives).
"""

import torch
from torch import nn

EXPECT = {"input-independent": "fail"}

INPUT_DROP = 0.0  # the share of input features to drop


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 5))


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(20, 5, generator=g)
    x = torch.randn(256, 20, generator=g)
    y = (x @ w).argmax(dim=1)
    return [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)


def train_step(model, batch, optimizer):
    x, y = batch
    x = x * (torch.rand_like(x) < INPUT_DROP)  # BUG: keeps a feature with probability INPUT_DROP (0): all zeros
    optimizer.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss
