"""A correct MLP written with functional ops only: ``nn.Parameter`` weights, ``F.linear``, ``F.relu``, ``F.dropout``.

Shows a user that nncheck does not need ``nn.Linear`` / ``nn.Dropout`` modules, and the two rules a functional model
must follow: register every weight as an ``nn.Parameter`` attribute (so ``model.parameters()`` and the optimizer see
it), initialise it like ``nn.Linear`` does (Kaiming-uniform, He et al. 2015), and pass ``training=self.training`` to
``F.dropout`` (its default is ``training=True``, which keeps dropout on in ``model.eval()``).
Synthetic data: as examples/mlp.py, 20 features and 5 classes.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

CORRECT = True
EXPECT: dict[str, str] = {}

N_FEATURES, N_CLASSES, HIDDEN, BATCH = 20, 5, 64, 32


def linear_params(n_in: int, n_out: int) -> tuple[nn.Parameter, nn.Parameter]:
    """Weight and bias initialised as nn.Linear does."""
    w = torch.empty(n_out, n_in)
    nn.init.kaiming_uniform_(w, a=math.sqrt(5))
    bound = 1 / math.sqrt(n_in)
    return nn.Parameter(w), nn.Parameter(torch.empty(n_out).uniform_(-bound, bound))


class FunctionalMLP(nn.Module):
    def __init__(self, p_drop: float = 0.1) -> None:
        super().__init__()
        self.w1, self.b1 = linear_params(N_FEATURES, HIDDEN)
        self.w2, self.b2 = linear_params(HIDDEN, N_CLASSES)
        self.p_drop = p_drop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(F.linear(x, self.w1, self.b1))
        h = F.dropout(h, p=self.p_drop, training=self.training)
        return F.linear(h, self.w2, self.b2)


def model() -> nn.Module:
    return FunctionalMLP()


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, N_CLASSES, generator=g)
    x = torch.randn(16 * BATCH, N_FEATURES, generator=g)
    y = (x @ w).argmax(dim=1)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
