"""Broken: a 4-class problem trained as regression: one output, MSELoss against the class index (0., 1., 2., 3.).

Bug: MSE on class indices imposes an order and a distance between classes that do not exist (class 3 is "three times
further" from class 0 than class 1), and predictions between classes (1.5) are meaningless; cross-entropy with one
logit per class is the loss for class labels.
Symptom in a long run: the loss falls to a plateau; predictions regress to the mean class index, rounding them gives
the middle classes most of the time, and accuracy stays far below what a classifier reaches.
Source: Humbatova et al. (ICSE 2020) taxonomy, "Loss function / Wrong loss function"; Islam et al. (FSE 2019), "wrong
loss function"; DeepCrime's "change loss function" mutation operator.
"""

import torch
from torch import nn

EXPECT = {"loss-function": "warn"}

N_FEATURES, N_CLASSES, BATCH = 20, 4, 32


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(N_FEATURES, 64), nn.ReLU(), nn.Linear(64, 1))


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, N_CLASSES, generator=g)
    x = torch.randn(8 * BATCH, N_FEATURES, generator=g)
    y = (x @ w).argmax(dim=1).float().unsqueeze(1)  # class indices as float regression targets
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


loss = nn.MSELoss()  # BUG: class labels need CrossEntropyLoss


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
