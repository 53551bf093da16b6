"""Correct: convolutional autoencoder on [0, 1] images, sigmoid output, MSE reconstruction (target = input).

The data probe must not flag it: the input tensor is also the target, was dropped from the duplicate keys and every
sample looked like a repeat ("94% of the samples repeat another sample"; nncheck held-out evaluation,
a_conv_autoencoder.py). Pattern: the PyTorch / Keras autoencoder tutorials (Hinton & Salakhutdinov 2006).
"""

import torch
from torch import nn

CORRECT = True
EXPECT: dict[str, str] = {}


def model():
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.ConvTranspose2d(8, 1, 4, stride=2, padding=1),
        nn.Sigmoid(),
    )


def data():
    g = torch.Generator().manual_seed(0)
    n = 128
    xs = torch.linspace(-1, 1, 16)
    yy, xx = torch.meshgrid(xs, xs, indexing="ij")
    c = torch.rand(n, 2, generator=g) * 1.2 - 0.6
    r = torch.rand(n, generator=g) * 0.3 + 0.2
    img = (((xx - c[:, :1, None]) ** 2 + (yy - c[:, 1:, None]) ** 2) < r[:, None, None] ** 2).float()
    img = (img * 0.8 + 0.1 + 0.05 * torch.rand(n, 16, 16, generator=g)).clamp(0, 1).unsqueeze(1)
    return [(img[i : i + 16],) for i in range(0, n, 16)]


def forward(model, batch):
    (x,) = batch
    return model(x), x


loss = nn.MSELoss()


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
