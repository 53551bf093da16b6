"""Correct: a convolutional VAE (Kingma & Welling 2014) on 16x16 images, returning `(reconstruction logits, mu,
logvar)`, trained on the negative ELBO: Bernoulli reconstruction (BCE-with-logits, summed per image) + KL.

What it is: a model with three outputs and a hand-written loss; nncheck recognises the reconstruction term as a
BCE-with-logits of `output[0]` against the images (its head) and leaves the KL (written out by hand) as it is.
The reparameterisation samples noise in train mode only (eval mode returns the mean).
Why it is right: the loss sums over pixels and averages over the batch, the KL is the closed form for a diagonal
Gaussian, the decoder outputs logits for BCE-with-logits (no sigmoid before the loss) and its output bias starts at
the log-odds of the mean pixel (the images are 87% background), Adam 1e-3.
Source: Kingma & Welling 2014 (appendix B: the Gaussian KL); Burda, Grosse & Salakhutdinov 2016 (IWAE, §5: output
biases initialised to the marginal log-odds); the PyTorch VAE example
(https://github.com/pytorch/examples/blob/main/vae/main.py).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

CORRECT = True

SIZE, BATCH, LATENT = 16, 16, 8
PIXEL_MEAN = 0.13  # the share of pixels on in the images data() yields


class VAE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(
            nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
        )
        self.mu, self.logvar = nn.Linear(32 * 4 * 4, LATENT), nn.Linear(32 * 4 * 4, LATENT)
        self.dec_in = nn.Linear(LATENT, 32 * 4 * 4)
        self.dec = nn.Sequential(
            nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(16, 1, 4, stride=2, padding=1),
        )
        with torch.no_grad():  # output bias at the log-odds of the mean pixel (Burda et al. 2016, IWAE, §5)
            self.dec[2].bias.fill_(math.log(PIXEL_MEAN / (1 - PIXEL_MEAN)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.enc(x)
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        return self.dec(self.dec_in(z).view(-1, 32, 4, 4)), mu, logvar


def model():
    return VAE()


def data():
    # binarised blobs: a disc of random centre and radius
    g = torch.Generator().manual_seed(13)
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    batches = []
    for _ in range(8):
        c = torch.randint(4, SIZE - 4, (BATCH, 2), generator=g)
        r = torch.randint(2, 5, (BATCH,), generator=g)
        d2 = (yy[None] - c[:, :1, None]) ** 2 + (xx[None] - c[:, 1:, None]) ** 2
        x = (d2 <= r[:, None, None] ** 2).float()[:, None]
        batches.append((x, x))
    return batches


def loss(output, target):
    recon, mu, logvar = output
    rec = F.binary_cross_entropy_with_logits(recon, target, reduction="sum") / target.shape[0]
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / target.shape[0]
    return rec + kl


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
