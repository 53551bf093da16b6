"""Broken: an nn.GRU built without `batch_first=True` is fed (batch, time, features) tensors.

Bug: PyTorch's recurrent layers default to (time, batch, features). Fed a (B, T, F) tensor, the GRU runs its
recurrence across the *batch* (sample j's state flows into sample j+1) and treats the time steps as independent
sequences; `out[:, -1]` then reads the last "batch" position. Shapes match, nothing crashes.
Symptom in a long run: the model learns a little (it sees some of each sample), plateaus well above what the task
allows, and its predictions depend on which samples came before in the batch; shuffling changes the results.
Source: Humbatova et al. (ICSE 2020) taxonomy, "Model / Layer properties / wrong input format"; Islam et al.
(FSE 2019) "API misuse"; PyTorch forum threads on batch_first (a classic RNN mistake).
"""

import torch
from torch import nn

EXPECT = {"batch-isolation": "fail"}

N_FEATURES, N_CLASSES, T, BATCH = 4, 3, 12, 32


class GRUClassifier(nn.Module):
    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.gru = nn.GRU(N_FEATURES, hidden)  # BUG: needs batch_first=True for (B, T, F) inputs
        self.head = nn.Linear(hidden, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(x)  # (B, T, H), but the recurrence ran over B
        return self.head(out[:, -1])


def model() -> nn.Module:
    return GRUClassifier()


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, N_CLASSES, generator=g)
    x = torch.randn(8 * BATCH, T, N_FEATURES, generator=g)
    y = (x.mean(dim=1) @ w).argmax(dim=1)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
