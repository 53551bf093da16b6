"""Broken: pairwise Euclidean distances with `sqrt` and no epsilon: the gradient at distance 0 is NaN.

Bug: a set model compares each sample's embedding with every other sample's, including itself:
`((h[:, None] - h[None]) ** 2).sum(-1).sqrt()`. The diagonal is exactly 0, where d sqrt(s)/ds is infinite; times the
zero derivative of the squared difference it gives 0 * inf = NaN. The forward pass and the loss are finite, only the
gradients are NaN, so printing the loss shows nothing wrong until the weights turn NaN after the first step.
Symptom in a long run: the loss is finite at step 0 and `nan` from step 1 on.
Source: Humbatova et al. (ICSE 2020) taxonomy, "Missing / wrong numerical guard (epsilon)"; a well-known PyTorch
pitfall (torch.norm / sqrt at zero has a NaN gradient; discuss.pytorch.org).
"""

import torch
from torch import nn

EXPECT = {"numerics": "fail"}

N_FEATURES, N_CLASSES, BATCH = 20, 5, 32


class DistanceFeatures(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(N_FEATURES, 16)
        self.head = nn.Linear(16 + 1, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        dist = ((h[:, None] - h[None]) ** 2).sum(-1).sqrt()  # BUG: sqrt(0) on the diagonal; add 1e-12 inside
        mean_dist = dist.mean(dim=1, keepdim=True)
        return self.head(torch.cat([h, mean_dist], dim=1))


def model() -> nn.Module:
    return DistanceFeatures()


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, N_CLASSES, generator=g)
    x = torch.randn(8 * BATCH, N_FEATURES, generator=g)
    y = (x @ w).argmax(dim=1)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
