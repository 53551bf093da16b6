"""Broken: class labels are 1-based (1..5) for a 5-way classifier; the rare class 5 is absent from the first batch.

Bug: the labels come from a file or a pandas column numbered from 1 (`category` 1..C) and are fed to
cross-entropy unchanged; the model has C outputs, so label C indexes past the last logit. Here class 5 is rare
(~3%), so the first batches train "fine" (every label is in range, one class is simply never predicted) and the
crash comes later.
Symptom in a long run: minutes or hours in, `IndexError: Target 5 is out of bounds` on CPU, or on CUDA an opaque
`device-side assert triggered` that kills the process and poisons the CUDA context; before that, class 1..4 are
learned shifted by one.
Source: Islam et al. (FSE 2019), "Data bugs / incorrect label encoding"; Humbatova et al. (ICSE 2020) taxonomy,
"Training data quality / Wrong labels"; a recurring PyTorch forum question ("Assertion `t >= 0 && t < n_classes`
failed").
"""

import torch
from torch import nn

EXPECT = {"data": "fail"}
# The probes that run a later batch crash on it (torch's shape / index error): the runner skips them with a pointer
# to the data probe's fail (issue 13, "wrong culprit"), so none ends in error.

N_FEATURES, N_CLASSES, BATCH = 16, 5, 32
PRIOR = (0.30, 0.30, 0.20, 0.17, 0.03)


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(N_FEATURES, 64), nn.ReLU(), nn.Linear(64, N_CLASSES))


def data():
    g = torch.Generator().manual_seed(0)
    n = 12 * BATCH
    y = torch.multinomial(torch.tensor(PRIOR), n, replacement=True, generator=g)  # 0-based classes
    y[:BATCH] = y[:BATCH].clamp(max=N_CLASSES - 2)  # the rare class shows up only after the first batch
    centers = torch.randn(N_CLASSES, N_FEATURES, generator=g)
    x = centers[y] + torch.randn(n, N_FEATURES, generator=g)
    y = y + 1  # BUG: 1-based labels 1..5 for outputs 0..4
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, n, BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
