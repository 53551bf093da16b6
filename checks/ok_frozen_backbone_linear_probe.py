"""Correct: a linear probe on a frozen "pretrained" CNN backbone (BatchNorm, requires_grad=False, kept in eval mode
by a train() override, run under no_grad); the optimizer holds the trainable head only. Frozen parameters, a
backbone without gradients and BatchNorm kept in eval mode are all deliberate here.
From the held-out evaluation of nncheck.
"""

import torch
from torch import nn

CORRECT = True
EXPECT: dict[str, str] = {}


class Probe(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.head = nn.Sequential(nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 4))

    def train(self, mode=True):
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, x):
        with torch.no_grad():
            f = self.backbone(x)
        return self.head(f)


def model():
    m = Probe()
    with torch.no_grad():  # "pretrained" running statistics
        for bn in (m.backbone[1], m.backbone[5]):
            bn.running_mean.normal_(0, 0.1)
            bn.running_var.uniform_(0.5, 1.5)
    return m


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 1, 16, 16, generator=g) * 0.5
    y = torch.randint(0, 4, (256,), generator=g)
    for i, c in enumerate(y.tolist()):
        r, s = divmod(c, 2)
        x[i, 0, r * 8 : r * 8 + 8, s * 8 : s * 8 + 8] += 1.0
    return [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]


def optimizer(params):
    return torch.optim.Adam([p for p in params if p.requires_grad], lr=1e-3)
