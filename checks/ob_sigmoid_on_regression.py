"""Broken: a regression model ends in `nn.Sigmoid()` while its (standardised) targets range over about [-3, 3].

Bug: the sigmoid bounds every prediction to (0, 1); negative targets and targets above 1 can never be reached,
however long the model trains. (Copied from a binary classifier head, or added "to keep outputs stable".)
Symptom in a long run: the loss plateaus far above 0; predictions pile up at 0 and 1; gradients vanish for the
saturated samples.
Source: Humbatova et al. (ICSE 2020) taxonomy, "Model / Activation function / Wrong activation for the output
layer"; DeepCrime mutation operator "change activation function" (Humbatova et al., ISSTA 2021).
"""

import torch
from torch import nn

EXPECT = {"overfit-batch": "fail"}
# The fast budget's looser goal (15% of the initial loss) leaves the 4-sample run still falling fast enough at its end
# to count as slow on some seeds: a warning, not a fail (see `nncheck explain overfit-batch`, batch_size).
EXPECT_FAST = {"overfit-batch": "warn|fail"}

N_FEATURES, BATCH = 8, 32


def model() -> nn.Module:
    return nn.Sequential(
        nn.Linear(N_FEATURES, 64),
        nn.ReLU(),
        nn.Linear(64, 1),
        nn.Sigmoid(),  # BUG: the targets are not in (0, 1)
    )


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, 1, generator=g) / N_FEATURES**0.5
    x = torch.randn(8 * BATCH, N_FEATURES, generator=g)
    y = torch.tanh(x @ w) + 0.5 * x[:, :1]
    y = (y - y.mean()) / y.std()  # standardised targets: mean 0, std 1
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
