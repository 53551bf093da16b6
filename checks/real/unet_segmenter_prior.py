"""Correct: a small U-Net (Ronneberger et al. 2015: conv blocks with BatchNorm, max-pool down, transposed-conv up,
skip connections by concatenation) segmenting 32x32 images into background and two object classes, 81% of the
pixels background, with the class prior written into the bias of the 1x1 output convolution.

What it is: `(x, mask)` batches with `mask` a `(B, H, W)` map of class indices; the default loss is the pixel-wise
cross-entropy of the `(B, C, H, W)` logits.
Why it is right: the output bias starts at log p of the pixel classes (Karpathy's recipe "init well"; focal loss,
Lin et al. 2017, §4.1), the images are standardised, Adam.
Source: Ronneberger, Fischer, Brox 2015 (U-Net); the prior init of Lin et al. 2017.
"""

import torch
from torch import nn

CORRECT = True

SIZE, BATCH, CLASSES = 32, 8, 3
PRIOR = (0.81, 0.11, 0.08)  # measured on the masks data() yields (pixel class frequencies)


def block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
        nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
    )


class UNet(nn.Module):
    def __init__(self, prior: bool = True) -> None:
        super().__init__()
        self.down1, self.down2, self.bottom = block(1, 8), block(8, 16), block(16, 32)
        self.pool = nn.MaxPool2d(2)
        self.up2, self.dec2 = nn.ConvTranspose2d(32, 16, 2, stride=2), block(32, 16)
        self.up1, self.dec1 = nn.ConvTranspose2d(16, 8, 2, stride=2), block(16, 8)
        self.out = nn.Conv2d(8, CLASSES, 1)
        if prior:
            with torch.no_grad():
                self.out.bias.copy_(torch.tensor(PRIOR).log())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d1 = self.down1(x)
        d2 = self.down2(self.pool(d1))
        b = self.bottom(self.pool(d2))
        u2 = self.dec2(torch.cat([self.up2(b), d2], 1))
        u1 = self.dec1(torch.cat([self.up1(u2), d1], 1))
        return self.out(u1)


def model():
    return UNet(prior=True)


def data():
    # discs (class 1) and squares (class 2) on a noisy background; their intensity tells them apart
    g = torch.Generator().manual_seed(10)
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    batches = []
    for _ in range(8):
        x = torch.randn(BATCH, 1, SIZE, SIZE, generator=g) * 0.3
        mask = torch.zeros(BATCH, SIZE, SIZE, dtype=torch.long)
        for i in range(BATCH):
            cy, cx = torch.randint(6, SIZE - 6, (2,), generator=g).tolist()
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= 36
            sy, sx = torch.randint(0, SIZE - 10, (2,), generator=g).tolist()
            square = torch.zeros(SIZE, SIZE, dtype=torch.bool)
            square[sy : sy + 10, sx : sx + 10] = True
            mask[i][disc] = 1
            mask[i][square & ~disc] = 2
            x[i, 0][disc] += 1.0
            x[i, 0][square & ~disc] -= 1.0
        batches.append(((x - x.mean()) / x.std(), mask))
    return batches


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
