"""Broken: class labels are 1-based (1..C) for a C-way classifier, and the first batch already holds label C.

Bug: labels read from a file or a pandas column numbered from 1 are fed to cross-entropy unchanged; the model has C
outputs, so label C indexes past the last logit. (checks/data_labels_one_based.py is the same bug with the
out-of-range label only in later batches.)
Symptom in a long run: the first step raises `IndexError: Target 5 is out of bounds` on CPU, or a device-side assert
on CUDA that poisons the CUDA context; nothing in the message says "1-based".
Source: Islam et al. (FSE 2019), "Data bugs / incorrect label encoding"; Humbatova et al. (ICSE 2020) taxonomy,
"Training data quality / Wrong labels"; nncheck issue 13 (a bug in the user's data is the data probe's fail, exit code
1, not a setup error).
"""

import torch
from torch import nn

EXPECT = {"data": "fail"}

N_FEATURES, N_CLASSES, BATCH = 16, 5, 32


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(N_FEATURES, 64), nn.ReLU(), nn.Linear(64, N_CLASSES))


def data():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, N_CLASSES, (8 * BATCH,), generator=g)
    centers = torch.randn(N_CLASSES, N_FEATURES, generator=g)
    x = centers[y] + torch.randn(8 * BATCH, N_FEATURES, generator=g)
    y = y + 1  # BUG: 1-based labels 1..5 for outputs 0..4
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]
