"""Broken: a contrastive-style classifier that divides its logits by a temperature it meant to multiply by.

Bug: cosine-similarity logits (in [-1, 1]) are meant to be scaled by a learnable inverse temperature starting at
1 / 0.07 ~ 14 (CLIP); the code stores the temperature 0.07 and then divides by its square, giving a scale of 204:
`logits = cos / self.tau**2`. At init the softmax is saturated and the loss sits far above log C.
Symptom in a long run: a loss that starts at 20-40 instead of log C, huge early gradients on the projection layers,
a run that spends its first epochs undoing the scale or diverges without warmup.
Source: Karpathy, "A Recipe for Training Neural Networks" (2019), "verify loss @ init"; Radford et al. 2021 (CLIP's
logit scale 1/0.07); Islam et al. FSE 2019, "wrong hyperparameter / API misuse" category; DeepCrime mutation
operator "change weights initialisation / scale".
"""

import torch
import torch.nn.functional as F
from torch import nn

EXPECT = {"initial-loss": "fail"}

N_FEATURES, N_CLASSES, BATCH = 20, 5, 32


class CosineClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(N_FEATURES, 64), nn.ReLU(), nn.Linear(64, 32))
        self.prototypes = nn.Parameter(torch.randn(N_CLASSES, 32))
        self.tau = 0.07

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cos = F.normalize(self.body(x), dim=1) @ F.normalize(self.prototypes, dim=1).t()
        return cos / self.tau**2  # BUG: meant cos / self.tau (scale 14), this is a scale of 204


def model() -> nn.Module:
    return CosineClassifier()


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, N_CLASSES, generator=g)
    x = torch.randn(16 * BATCH, N_FEATURES, generator=g)
    y = (x @ w).argmax(dim=1)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
