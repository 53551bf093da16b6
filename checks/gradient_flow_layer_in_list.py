"""Broken: hidden layers kept in a plain Python list instead of `nn.ModuleList`.

Bug: `self.hidden = [nn.Linear(64, 64) for _ in range(2)]` registers nothing: `model.parameters()` (so the optimizer,
`model.to(device)` and `state_dict()`) never sees those layers. They run in forward and receive gradients, but are
never updated and are not saved.
Symptom in a long run: the model trains, but worse than expected; a reloaded checkpoint gives different outputs; on
GPU, "Expected all tensors to be on the same device".
Source: Humbatova et al. (ICSE 2020) taxonomy, "Model / Layers: wrong layer registration"; PyTorch docs of
nn.ModuleList; a frequent PyTorch forum question ("parameters missing from model.parameters()").
"""

import torch
from torch import nn

EXPECT = {"gradient-flow": "fail"}

N_FEATURES, N_CLASSES, BATCH = 20, 5, 32


class ListMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(N_FEATURES, 64)
        self.hidden = [nn.Linear(64, 64) for _ in range(2)]  # BUG: use nn.ModuleList([...])
        self.out = nn.Linear(64, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(x))
        for layer in self.hidden:
            h = torch.relu(layer(h))
        return self.out(h)


def model() -> nn.Module:
    return ListMLP()


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, N_CLASSES, generator=g)
    x = torch.randn(8 * BATCH, N_FEATURES, generator=g)
    y = (x @ w).argmax(dim=1)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
