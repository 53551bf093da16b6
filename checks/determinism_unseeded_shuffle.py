"""Broken: data() shuffles the samples with an unseeded numpy Generator (`np.random.default_rng()`).

Bug: the permutation comes from OS entropy, so two runs with the same seed see the batches in different orders.
Symptom in a long run: same code, same seed, different curves and final metrics; a loss spike at step 12k
cannot be replayed to find the offending batch.
Source: Pham et al., ASE 2020 (data shuffling as a nondeterminism-introducing factor); Islam et al. FSE 2019
("data" bugs); PyTorch's reproducibility notes (seed every generator the data pipeline uses).
"""

import numpy as np
import torch
from torch import nn

EXPECT = {"determinism": "fail"}


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 3))


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 10, generator=g)
    y = (x[:, :3]).argmax(dim=1)
    order = torch.as_tensor(np.random.default_rng().permutation(128))  # BUG: no seed
    x, y = x[order], y[order]
    return [(x[i : i + 32], y[i : i + 32]) for i in range(0, 128, 32)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
