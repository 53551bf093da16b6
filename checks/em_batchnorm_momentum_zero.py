"""Broken: `nn.BatchNorm1d(64, momentum=0.0)`: the running statistics never move.

Bug: Keras' BatchNormalization(momentum=0.99) weights the OLD running average; PyTorch's momentum weights the NEW
batch (running = (1 - momentum) * running + momentum * batch), so PyTorch momentum = 1 - Keras momentum. Porting
"momentum 0.99" as 0.99 is too fast; "fixing" it to 0.0 (or writing 1 - 1.0) freezes the running mean / variance at
their init values (0 and 1). num_batches_tracked still counts up, so the layer looks alive.
Symptom in a long run: training accuracy is fine, validation / test accuracy is near chance or far below training,
because eval mode normalises features of mean ~3 with mean 0 / variance 1.
Source: Humbatova et al. (ICSE 2020) taxonomy, "Training / wrong hyperparameter of a layer"; DeepCrime-style layer
hyperparameter mutation; PyTorch docs of nn.BatchNorm1d (note on momentum vs optimizer momentum).
"""

import torch
from torch import nn

EXPECT = {"eval-mode": "fail"}

N_FEATURES, N_CLASSES = 20, 5


def data():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(N_CLASSES, N_FEATURES, generator=g)
    y = torch.randint(0, N_CLASSES, (256,), generator=g)
    x = mu[y] + torch.randn(256, N_FEATURES, generator=g) + 3.0  # features of mean ~3
    return [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]


def model() -> nn.Module:
    return nn.Sequential(
        nn.Linear(N_FEATURES, 64, bias=False),
        nn.BatchNorm1d(64, momentum=0.0),  # BUG: PyTorch momentum 0 = never update (Keras 0.99 -> PyTorch 0.01)
        nn.ReLU(),
        nn.Linear(64, N_CLASSES),
    )


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
