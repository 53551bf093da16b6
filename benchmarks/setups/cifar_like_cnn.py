"""A correct CIFAR-sized setup (3x32x32 images, batch 64, a 4-stage CNN with BatchNorm, ~0.3M parameters), used by
the benchmark to show the battery's cost where a training step is not dominated by Python overhead.

Not in examples/ (the test suite would pay its cost on every CI run). Run it:
    nncheck run benchmarks/setups/cifar_like_cnn.py -v
"""

import torch
from torch import nn

CORRECT = True
EXPECT: dict[str, str] = {}


def stage(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


def model() -> nn.Module:
    return nn.Sequential(
        stage(3, 32),
        stage(32, 64),
        stage(64, 96),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(96, 10),
    )


def data():
    g = torch.Generator().manual_seed(0)
    n = 16 * 64
    y = torch.randint(0, 10, (n,), generator=g)
    proto = torch.randn(10, 3, 32, 32, generator=g)
    x = proto[y] * 0.5 + torch.randn(n, 3, 32, 32, generator=g)
    return [(x[i : i + 64], y[i : i + 64]) for i in range(0, n, 64)]


def optimizer(params):
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
