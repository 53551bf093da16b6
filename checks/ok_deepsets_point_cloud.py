"""Correct: a DeepSets point-cloud classifier: a per-point MLP on (B, N, 3) inputs, a mean over the points (dim 1,
not the batch), and a head. A mean over dim 1 must not be mistaken for batch mixing.
From the held-out evaluation of nncheck (new families not in examples/).
"""

import torch
from torch import nn

CORRECT = True
EXPECT: dict[str, str] = {}


class DeepSets(nn.Module):
    def __init__(self):
        super().__init__()
        self.phi = nn.Sequential(nn.Linear(3, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU())
        self.rho = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))

    def forward(self, pts):
        return self.rho(self.phi(pts).mean(dim=1))


def model():
    return DeepSets()


def data():
    g = torch.Generator().manual_seed(0)
    n, N = 192, 24
    y = torch.randint(0, 3, (n,), generator=g)
    p = torch.randn(n, N, 3, generator=g)
    p = p / p.norm(dim=2, keepdim=True)  # sphere
    scale = torch.tensor([[1.0, 1.0, 1.0], [1.6, 0.6, 1.0], [0.5, 0.5, 1.8]])
    p = p * scale[y][:, None, :] + 0.05 * torch.randn(n, N, 3, generator=g)
    return [(p[i : i + 32], y[i : i + 32]) for i in range(0, n, 32)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
