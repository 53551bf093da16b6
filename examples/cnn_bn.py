"""A correct small CNN with BatchNorm on 1x16x16 images (synthetic: the class is the brightest quadrant).

Conv -> BatchNorm -> ReLU blocks without conv bias (BatchNorm's shift makes it redundant), global average
pooling, a linear head. Data comes from a DataLoader with shuffling under a seeded generator.
"""

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

CORRECT = True
EXPECT: dict[str, str] = {}


def block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


def model() -> nn.Module:
    return nn.Sequential(
        block(1, 8),
        nn.MaxPool2d(2),
        block(8, 16),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 4),
    )


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 1, 16, 16, generator=g) * 0.5
    y = torch.randint(0, 4, (256,), generator=g)
    for i, c in enumerate(y.tolist()):
        r, s = divmod(c, 2)
        x[i, 0, r * 8 : r * 8 + 8, s * 8 : s * 8 + 8] += 1.0
    return DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(1))


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
