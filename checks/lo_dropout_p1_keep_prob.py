"""Broken: `nn.Dropout(p=1.0)`: a config value meant as keep_prob = 1.0 is passed as PyTorch's drop probability.

Bug: TensorFlow 1 / many papers give dropout as the probability to KEEP a unit; PyTorch's `p` is the probability to
DROP it. `keep_prob = 1.0` ("no dropout") becomes `nn.Dropout(p=1.0)`: in training mode every hidden value is zeroed,
the head sees zeros, only its bias learns, and nothing before the dropout ever gets a gradient. In eval mode dropout
is off, so the (never trained) hidden layers suddenly feed the head at test time.
Symptom in a long run: the training loss drops to the label-prior level and stays there, accuracy stays at the
majority class, gradients of the first layer are exactly zero; test predictions are erratic.
Source: DeepCrime mutation operators (Humbatova et al. ISSTA 2021), "change dropout rate"; Humbatova et al. (ICSE
2020) taxonomy, "Model / Layers / Wrong layer property"; held-out evaluation .notes/heldout/b_dropout_p1.py.
"""

import torch
from torch import nn

EXPECT = {"layer-order": "fail", "gradient-flow": "fail"}

N_FEATURES, N_CLASSES, BATCH = 20, 5, 32
KEEP_PROB = 1.0


def model() -> nn.Module:
    return nn.Sequential(
        nn.Linear(N_FEATURES, 64),
        nn.ReLU(),
        nn.Dropout(p=KEEP_PROB),  # BUG: p is the drop probability; keep_prob = 1.0 means p = 0.0
        nn.Linear(64, N_CLASSES),
    )


def data():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(N_CLASSES, N_FEATURES, generator=g)
    y = torch.randint(0, N_CLASSES, (8 * BATCH,), generator=g)
    x = mu[y] + torch.randn(8 * BATCH, N_FEATURES, generator=g)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
