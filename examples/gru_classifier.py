"""A correct GRU sequence classifier over float sequences with ``batch_first=True``.

Shows a user how to check a recurrent model: inputs are ``(batch, time, features)``, the GRU runs with
``batch_first=True`` (so the batch stays the first dimension everywhere, which is what nncheck and DataLoaders
assume) and the classifier reads the last hidden state. Synthetic data: 3 classes, the class is the argmax of a fixed
projection of the sequence's mean, so the model has to integrate over time.
"""

import torch
from torch import nn

CORRECT = True
EXPECT: dict[str, str] = {}

N_FEATURES, N_CLASSES, T, BATCH = 4, 3, 12, 32


class GRUClassifier(nn.Module):
    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.gru = nn.GRU(N_FEATURES, hidden, batch_first=True)
        self.head = nn.Linear(hidden, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h = self.gru(x)  # h: (num_layers, batch, hidden)
        return self.head(h[-1])


def model() -> nn.Module:
    return GRUClassifier()


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, N_CLASSES, generator=g)
    x = torch.randn(16 * BATCH, T, N_FEATURES, generator=g)
    y = (x.mean(dim=1) @ w).argmax(dim=1)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
