"""A correct residual CNN with BatchNorm and identity skip connections on 1x16x16 images.

Shows a user that skip connections, BatchNorm inside the residual branch and dropout on one branch are all fine:
each block computes ``relu(x + branch(x))`` where ``branch`` is conv -> BN -> ReLU -> dropout -> conv -> BN, and the
last BatchNorm of each branch starts at zero (``bn2.weight = 0``, the "zero-init residual" trick of Goyal et al.
2017) so every block is the identity at initialisation. Synthetic data: the class is the brightest quadrant.
"""

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

CORRECT = True
EXPECT: dict[str, str] = {}

N_CLASSES = 4


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, p_drop: float = 0.1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.drop = nn.Dropout2d(p_drop)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn2.weight)  # the block starts as the identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(torch.relu(self.bn1(self.conv1(x))))
        return torch.relu(x + self.bn2(self.conv2(h)))


class ResNet(nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.blocks = nn.Sequential(nn.MaxPool2d(2), ResidualBlock(width), ResidualBlock(width))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(width, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.blocks(self.stem(x))).flatten(1))


def model() -> nn.Module:
    return ResNet()


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 1, 16, 16, generator=g) * 0.5
    y = torch.randint(0, N_CLASSES, (256,), generator=g)
    for i, c in enumerate(y.tolist()):
        r, s = divmod(c, 2)
        x[i, 0, r * 8 : r * 8 + 8, s * 8 : s * 8 + 8] += 1.0
    return DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(1))


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
