"""Broken: a learnable temperature stored as a plain tensor with `requires_grad=True`, not as `nn.Parameter`.

Bug: `self.log_temp = torch.zeros(1, requires_grad=True)` is not registered: `model.parameters()` does not return
it, so the optimizer never updates it (and `state_dict()` / `.to(device)` ignore it), although it gets a gradient.
Symptom in a long run: the temperature stays at its init value; a reloaded checkpoint silently resets it.
Source: Humbatova et al. (ICSE 2020) taxonomy, "Model / wrong parameter registration"; PyTorch docs of
nn.Parameter ("a tensor that is automatically added to the list of parameters when assigned as a module
attribute").
"""

import torch
from torch import nn

EXPECT = {"gradient-flow": "fail"}

N_FEATURES, N_CLASSES, BATCH = 20, 5, 32


class TempScaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(N_FEATURES, 64), nn.ReLU(), nn.Linear(64, N_CLASSES))
        self.log_temp = torch.zeros(1, requires_grad=True)  # BUG: use nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * self.log_temp.exp()


def model() -> nn.Module:
    return TempScaled()


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, N_CLASSES, generator=g)
    x = torch.randn(8 * BATCH, N_FEATURES, generator=g)
    y = (x @ w).argmax(dim=1)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
