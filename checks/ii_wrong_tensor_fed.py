"""Broken: the model feeds a constant buffer to its first layer instead of the input (the wrong tensor is fed).

Bug: forward() was refactored and the first layer now reads `self.prototype` (a registered constant buffer) where
it should read `x`; the input only decides the batch size. Shapes all match, nothing crashes.
Symptom in a long run: the loss plateaus at the entropy of the label prior; predictions are the same class for
every sample.
Source: Karpathy, "A Recipe for Training Neural Networks" (input-independent baseline); Islam et al. (FSE 2019),
"API misuse / wrong tensor"; Humbatova et al. (ICSE 2020), "Model / Wrong input to a layer".
Caught by input-independent (real and blanked inputs train identically) and by batch-isolation (no sample's
output has any gradient on its own input).
"""

import torch
from torch import nn

EXPECT = {"input-independent": "fail", "batch-isolation": "fail"}

N_FEATURES, N_CLASSES, BATCH = 16, 4, 32


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("prototype", torch.randn(1, N_FEATURES))
        self.body = nn.Sequential(nn.Linear(N_FEATURES, 48), nn.Tanh(), nn.Linear(48, N_CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.prototype.expand(x.shape[0], -1)  # BUG: should be `h = x`
        return self.body(h)


def model() -> nn.Module:
    return Net()


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, N_CLASSES, generator=g)
    x = torch.randn(8 * BATCH, N_FEATURES, generator=g)
    y = (x @ w).argmax(dim=1)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
