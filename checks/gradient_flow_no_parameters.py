"""Broken: the model registers no parameter at all: every layer sits in a plain Python list.

Bug: `self.layers = [nn.Linear(...), nn.ReLU(), nn.Linear(...)]` instead of `nn.ModuleList([...])` (or
`nn.Sequential`): the layers run in forward, but `model.parameters()` is empty, so there is nothing to optimise, to
move to the GPU or to save.
Symptom in a long run: the optimizer refuses to start ("optimizer got an empty parameter list"), which points at the
optimizer instead of the model; a loader that skips empty parameter groups trains nothing.
Source: Humbatova et al. (ICSE 2020) taxonomy, "Model / Layers: wrong layer registration"; PyTorch docs of
nn.ModuleList; nncheck issue 13 ("a model with zero parameters is blamed on `optimizer`").
"""

import torch
from torch import nn

EXPECT = {"gradient-flow": "fail"}

N_FEATURES, N_CLASSES, BATCH = 20, 5, 32


class ListMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = [nn.Linear(N_FEATURES, 64), nn.ReLU(), nn.Linear(64, N_CLASSES)]  # BUG: nn.ModuleList([...])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def model() -> nn.Module:
    return ListMLP()


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8 * BATCH, N_FEATURES, generator=g)
    y = (x[:, :N_CLASSES] + 0.5 * torch.randn(8 * BATCH, N_CLASSES, generator=g)).argmax(dim=1)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]
