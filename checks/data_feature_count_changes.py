"""Broken: one batch has a different number of features (batch 2 has 5 columns, the others 4).

Bug: a data file or split with an extra column (an index or an unnamed column from a CSV written with its index), or a
feature pipeline that one-hot encodes per chunk (a category present in one chunk only). The batches are stacked per
chunk, so only some batches are wider.
Symptom in a long run: a shape error (`mat1 and mat2 shapes cannot be multiplied`) deep into an epoch, when the bad
chunk comes up; with a lazy or width-agnostic layer, silently misaligned features.
Source: Islam et al. (FSE 2019), data bugs ("data dimension mismatch"); Humbatova et al. (ICSE 2020) taxonomy,
"Training data quality"; nncheck UX review (`.notes/ux/bad/batch3_shape.py`).
"""

import torch
from torch import nn

EXPECT = {"data": "fail"}
# The probes that run a later batch crash on it (torch's shape / index error): the runner skips them with a pointer
# to the data probe's fail (issue 13, "wrong culprit"), so none ends in error.


def model():
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))


def optimizer(params):
    return torch.optim.Adam(params, lr=3e-3)


def data():
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(6):
        d = 5 if i == 2 else 4  # BUG: batch 2 has an extra column
        x = torch.randn(16, d, generator=g)
        out.append((x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()))
    return out
