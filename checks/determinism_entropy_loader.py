"""Broken: the DataLoader's shuffling generator is seeded from OS entropy (`g.seed()`).

Bug: `torch.Generator().seed()` re-seeds the generator non-deterministically; the loader ignores the global
seed because it has a generator of its own. Each call of data() yields a different order.
Symptom in a long run: runs with the same seed diverge from the first epoch on; bugs that depend on a batch
cannot be replayed.
Source: PyTorch "Reproducibility" notes (DataLoader `generator=`); Pham et al., ASE 2020 (shuffling variance).
"""

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

EXPECT = {"determinism": "fail"}


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 3))


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 10, generator=g)
    y = (x[:, :3]).argmax(dim=1)
    shuffle_gen = torch.Generator()
    shuffle_gen.seed()  # BUG: OS entropy instead of manual_seed(seed)
    return DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=shuffle_gen)


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
