"""Broken: a CNN flattens its feature maps with `h.view(-1, batch).t()`, which scrambles samples together.

Bug: `view(-1, B)` reads the (B, C, H, W) memory in order and cuts it into columns of B values, so each column
holds features of several samples; transposing back gives a (B, C*H*W) tensor of the right shape whose rows mix
the batch. The intended line is `h.reshape(h.shape[0], -1)` (or `torch.flatten(h, 1)`).
Symptom in a long run: the loss decreases slowly and plateaus high; accuracy changes with the batch size and the
order of samples; predictions for one image depend on the other images of its batch.
Source: Karpathy, "A Recipe for Training Neural Networks" ("use backprop to chart dependencies": "view instead of
transpose/permute" bugs mix information across the batch); Islam et al. (FSE 2019), "Shape / reshape bugs";
DeepCrime mutation operators (wrong reshape).
"""

import torch
from torch import nn

EXPECT = {"batch-isolation": "fail"}


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(4 * 6 * 6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)  # (B, 4, 6, 6)
        h = h.view(-1, x.shape[0]).t()  # BUG: should be h.reshape(h.shape[0], -1)
        return self.head(h)


def model() -> nn.Module:
    return Net()


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 1, 12, 12, generator=g) * 0.5
    y = torch.randint(0, 4, (256,), generator=g)
    for i, c in enumerate(y.tolist()):
        r, s = divmod(c, 2)
        x[i, 0, r * 6 : r * 6 + 6, s * 6 : s * 6 + 6] += 1.0
    return [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
