"""Broken (a warning): the two-head model of two_head_classifier_regressor.py trained on regression targets in raw
units (values in the thousands) next to a cross-entropy: at init the MSE term is ~1e6 and the cross-entropy ~1.4.

Bug: the terms of the multi-task loss differ by orders of magnitude, so the gradient of the sum is the regression's
gradient: the classifier head barely trains until the regression is fitted (or never, at a learning rate sized for
the regression).
Symptom in a long run: the classification accuracy stays near chance for thousands of steps while the total loss
falls nicely.
Source: Kendall, Gal & Cipolla 2018 ("Multi-Task Learning Using Uncertainty to Weigh Losses", §1: the tasks' losses
have different units and scales and the weighted sum is dominated by the largest); Chen et al. 2018 (GradNorm).
"""

import torch
from two_head_classifier_regressor import TwoHead, loss, make_batches  # noqa: F401  (the same model and loss)

EXPECT = {"loss-function": "warn"}


def model():
    return TwoHead()


def data():
    return make_batches(15, scale=1000.0)  # BUG: regression targets not standardised (std ~1000)


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
