"""Broken: BCELoss (which expects probabilities) is fed the raw output of a Linear layer, with no sigmoid.

Bug: the user wrote the positive-class prior (0.5) into the output bias and shrank the weights, "so the outputs start
as probabilities": they lie in [0, 1] for the first batches, so the loss runs. Nothing keeps them there: as soon as
training pushes one value out of [0, 1], BCELoss raises ("all elements of input should be between 0 and 1") on CPU
or triggers a device-side assert on CUDA. (When the raw outputs leave [0, 1] on the very first batch, nncheck's setup
check already reports the loss error.)
Symptom in a long run: a crash after some steps, or NaN losses where the check is off; before that, gradients of
`log(p)` near 0 explode.
Source: Islam et al. (FSE 2019), "wrong loss input" / missing activation; Humbatova et al. (ICSE 2020) taxonomy,
"Model / Layers / Missing activation function" and "Loss function / Wrong loss function".
"""

import torch
from torch import nn

EXPECT = {"loss-function": "fail"}
# Training drives the raw logits out of [0, 1], where torch's BCELoss raises: the training probes report the
# user's code raising (correct culprit: the loss), as an error.
ALLOW = {"learning-rate": "error", "overfit-batch": "error"}

N_FEATURES, BATCH = 16, 32


def model() -> nn.Module:
    net = nn.Sequential(nn.Linear(N_FEATURES, 32), nn.ReLU(), nn.Linear(32, 1))
    with torch.no_grad():
        net[2].weight.mul_(0.01)
        net[2].bias.fill_(0.5)  # the prior as a "probability"
    return net  # BUG: no sigmoid, yet BCELoss below


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, generator=g)
    x = torch.randn(8 * BATCH, N_FEATURES, generator=g)
    y = (x @ w > 0).float()
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def loss(output, target):
    return nn.functional.binary_cross_entropy(output.squeeze(1), target)


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
