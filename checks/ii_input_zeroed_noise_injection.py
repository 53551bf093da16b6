"""Broken: the input is overwritten with zeros inside forward(), in a model that injects Gaussian noise into its
hidden layer in training mode and uses dropout.

Bug: as in ii_input_zeroed_in_forward.py, a debugging line blanks the input before the first layer; here the
forward is random in training mode (noise injection, `h + 0.1 * torch.randn_like(h)` under `if self.training:`,
and nn.Dropout), so two forwards of one batch differ even though neither depends on the data.
Symptom in a long run: the loss drops to the entropy of the label prior and plateaus; the noise makes the curve look
alive.
Source: the noise-injection regulariser of Bishop, "Training with Noise is Equivalent to Tikhonov Regularization"
(Neural Computation 1995); the input bug of Karpathy's "A Recipe for Training Neural Networks" (input-independent
baseline). Found by a review of nncheck: the blank copy's losses at init must draw the same noise as the real-input
copy's (seeded per batch as the trace's are), else "identical losses" is missed and the fast budget ends
inconclusive.
Caught by input-independent (identical losses at every step of the first 5) and by batch-isolation (no sample's
output has any gradient on its own input).
"""

import torch
from torch import nn

EXPECT = {"input-independent": "fail", "batch-isolation": "fail"}

N_FEATURES, N_CLASSES, BATCH = 20, 5, 32


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.drop, self.b = nn.Linear(N_FEATURES, 64), nn.Dropout(0.3), nn.Linear(64, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.zeros_like(x)  # BUG: the input is thrown away
        h = torch.relu(self.a(x))
        if self.training:
            h = h + 0.1 * torch.randn_like(h)  # noise injection (a regulariser)
        return self.b(self.drop(h))


def model() -> nn.Module:
    return Net()


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, N_CLASSES, generator=g)
    x = torch.randn(16 * BATCH, N_FEATURES, generator=g)
    y = (x @ w).argmax(dim=1)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
