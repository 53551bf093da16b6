"""Broken: a backbone's `train()` override forces its BatchNorm into eval mode, but its weights still train.

Bug: copied from a fine-tuning recipe that freezes BatchNorm (`def train(self, mode=True): super().train(mode);
self.bn.eval(); return self`), without the other half of the recipe (loading pretrained statistics and
`requires_grad_(False)` on the BatchNorm). Trained from scratch, the BatchNorm never learns its running statistics: it
normalises with mean 0 / variance 1 forever, while its affine weights and the layers around it keep training.
Symptom in a long run: training is slower / less stable than with BatchNorm (activations are not normalised), and
nothing warns; with a real backbone, activations blow up layer after layer.
Source: Humbatova et al. (ICSE 2020) taxonomy, "Training / missing train-eval mode switch"; the detectron2 /
torchvision FrozenBatchNorm recipe applied half-way.
"""

import torch
from torch import nn

EXPECT = {"eval-mode": "fail"}

N_CLASSES = 4


class Backbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)

    def train(self, mode: bool = True) -> "Backbone":
        super().train(mode)
        self.bn.eval()  # BUG: "freeze BN", but its statistics were never learnt and its weights still train
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


def model() -> nn.Module:
    return nn.Sequential(Backbone(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, N_CLASSES))


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 1, 8, 8, generator=g) * 0.5 + 2.0
    y = torch.randint(0, N_CLASSES, (128,), generator=g)
    for i, c in enumerate(y.tolist()):
        r, s = divmod(c, 2)
        x[i, 0, r * 4 : r * 4 + 4, s * 4 : s * 4 + 4] += 1.0
    return [(x[i : i + 32], y[i : i + 32]) for i in range(0, len(x), 32)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
