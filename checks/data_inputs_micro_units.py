"""Broken: the features are converted with the wrong unit (micro-units instead of the base unit): inputs ~1e-6.

Bug: a unit conversion applied twice or the wrong way (`x * 1e-6` where `x / 1e-6` was meant, a value already in
the base unit divided again). Every feature has a std of ~1e-6, so the first layer's output is ~its bias.
Symptom in a long run: the loss stays at the label-prior level for many epochs (the weights must grow 1e6x before the
inputs matter); Adam eventually gets there slowly, SGD never does; the model predicts the majority class.
Source: Islam et al. (FSE 2019), data bugs ("wrong data preprocessing"); Humbatova et al. (ICSE 2020) taxonomy,
"Preprocessing of training data / Missing normalisation"; LeCun et al. 1998, "Efficient BackProp" (inputs of unit
variance).
"""

import torch
from torch import nn

EXPECT = {"data": "warn"}


def model():
    return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 5))


def data():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(5, 20, generator=g)
    y = torch.randint(0, 5, (256,), generator=g)
    x = (mu[y] + torch.randn(256, 20, generator=g)) * 1e-6  # BUG: wrong unit
    return [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
