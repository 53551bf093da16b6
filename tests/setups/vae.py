"""Correct: MLP VAE, loss = BCE-with-logits reconstruction (sum over pixels, mean over batch) + KL.
Reparameterised sampling only in train mode; eval uses the mean. Output is a tuple (logits, mu, logvar)."""

import torch
import torch.nn.functional as F
from torch import nn

D, Z = 64, 4


class VAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(D, 64), nn.ReLU())
        self.mu = nn.Linear(64, Z)
        self.logvar = nn.Linear(64, Z)
        self.dec = nn.Sequential(nn.Linear(Z, 64), nn.ReLU(), nn.Linear(64, D))

    def forward(self, x):
        h = self.enc(x)
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return self.dec(z), mu, logvar


def model():
    return VAE()


def data():
    g = torch.Generator().manual_seed(0)
    n = 256
    proto = (torch.rand(8, D, generator=g) < 0.3).float()
    k = torch.randint(0, 8, (n,), generator=g)
    flip = torch.rand(n, D, generator=g) < 0.05
    x = (proto[k] + flip.float()) % 2
    return [(x[i : i + 32],) for i in range(0, n, 32)]


def forward(model, batch):
    (x,) = batch
    return model(x), x


def loss(out, x):
    logits, mu, logvar = out
    rec = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.shape[0]
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / x.shape[0]
    return rec + kl


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
