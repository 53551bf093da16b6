"""Broken: a hand-written softmax `exp(z) / exp(z).sum()` on large logits overflows (inf / inf = NaN).

Bug: the model normalises its logits with `torch.exp(z) / torch.exp(z).sum(1, keepdim=True)` instead of
`torch.softmax` (which subtracts the max first); the inputs are raw pixel intensities 0..255, so logits reach the
hundreds and `exp` overflows float32 (above ~88).
Symptom in a long run: the loss is `nan` (or `inf`) from the first batch on.
Source: cs231n notes, "Practical issues: numeric stability" of the softmax; Humbatova et al. (ICSE 2020) taxonomy,
"Missing preprocessing (normalisation)" and numerical errors; Islam et al. (FSE 2019).
"""

import torch
import torch.nn.functional as F
from torch import nn

EXPECT = {"numerics": "fail"}

N_FEATURES, N_CLASSES, BATCH = 256, 5, 32


class NaiveSoftmaxNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(N_FEATURES, 64), nn.ReLU(), nn.Linear(64, N_CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.net(x)
        e = torch.exp(z)  # BUG: overflows; use torch.softmax(z, dim=1) or log_softmax
        return e / e.sum(dim=1, keepdim=True)


def model() -> nn.Module:
    return NaiveSoftmaxNet()


def loss(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.nll_loss(torch.log(probs), target)


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (8 * BATCH, N_FEATURES), generator=g).float()  # raw pixels, not normalised
    y = x[:, :N_CLASSES].argmax(dim=1)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
