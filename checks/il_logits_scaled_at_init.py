"""Broken: the classifier's last layer is initialised 20x too large (a hand-written init with the wrong gain).

Bug: `head.weight.mul_(20)` stands for any init that ignores fan-in (e.g. `nn.init.normal_(w, std=1)` on a
64-wide layer, or a temperature multiplying the logits). The logits at init have a std of ~5 instead of ~0.3, so
the softmax is saturated: the model is confidently wrong on most samples and the loss at init is ~4x log C.
Symptom in a long run: a "hockey stick" loss curve that starts far above log C, large early gradients, saturated
softmax units that learn slowly, and sometimes a run that never recovers the lost early steps.
Source: Karpathy, "A Recipe for Training Neural Networks" (2019), "verify loss @ init"; cs231n (a softmax classifier
starts at -log(1/C)); Humbatova et al. (ICSE 2020) taxonomy, "Model / Wrong weights initialisation"; DeepCrime
mutation operator "change weights initialisation" (Humbatova et al., ISSTA 2021).
"""

import torch
from torch import nn

EXPECT = {"initial-loss": "fail"}

N_FEATURES, N_CLASSES, BATCH = 20, 5, 32


def model() -> nn.Module:
    net = nn.Sequential(nn.Linear(N_FEATURES, 64), nn.ReLU(), nn.Linear(64, N_CLASSES))
    with torch.no_grad():
        net[-1].weight.mul_(20.0)  # BUG: logits 20x too large at init
    return net


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, N_CLASSES, generator=g)
    x = torch.randn(8 * BATCH, N_FEATURES, generator=g)
    y = (x @ w).argmax(dim=1)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
