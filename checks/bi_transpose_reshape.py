"""Broken: a sequence model flattens (B, T, F) features with a transpose before the reshape, mixing samples.

Bug: `h.transpose(0, 1).reshape(B, -1)` (written to get "time-major" features) reorders the memory so that each
row of the flattened tensor holds pieces of several samples; shapes stay (B, T * F) and nothing crashes. The same
happens with `x.view(-1, batch)` on a tensor whose batch dimension is not the first one in memory.
Symptom in a long run: the loss falls more slowly than it should and plateaus; validation accuracy depends on the
batch size and on the order of the samples; single-sample inference gives different predictions than batched.
Source: Karpathy, "A Recipe for Training Neural Networks" ("use backprop to chart dependencies": "view instead of
transpose/permute" mixes information across the batch); Islam et al. (FSE 2019), "Shape / reshape bugs".
"""

import torch
from torch import nn

EXPECT = {"batch-isolation": "fail"}

N_FEATURES, N_CLASSES, T, BATCH = 4, 3, 8, 32


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(N_FEATURES, 8)
        self.head = nn.Linear(T * 8, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.proj(x))  # (B, T, 8)
        h = h.transpose(0, 1).reshape(x.shape[0], -1)  # BUG: should be h.reshape(x.shape[0], -1)
        return self.head(h)


def model() -> nn.Module:
    return Net()


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, N_CLASSES, generator=g)
    x = torch.randn(8 * BATCH, T, N_FEATURES, generator=g)
    y = (x.mean(dim=1) @ w).argmax(dim=1)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
