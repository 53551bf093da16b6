"""Broken: the two-head model of two_head_classifier_regressor.py "centres" its shared features over the batch
(`h = h - h.mean(0)`) before the heads.

Bug: the mean is taken over dim 0 (the batch) instead of the features, so each sample's class and value depend on
the other samples of its batch. The bug is the same as checks/bi_center_over_batch.py, inside a model with a tuple
output: batch-isolation must check every output tensor, not skip because the output is not one tensor.
Symptom in a long run: training looks fine; at inference the predictions change with the batch composition, and a
batch of one sample gives h = 0: the same class and value for every input.
Source: Humbatova et al. (ICSE 2020) taxonomy, "Model / Wrong tensor shape or dimension in an operation";
issue 11 of this repository (a multi-output model passed batch-isolation).
"""

import torch
from torch import nn
from two_head_classifier_regressor import TwoHead, data, loss, optimizer  # noqa: F401  (the same setup)

EXPECT = {"batch-isolation": "fail"}


class Centred(TwoHead):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(x)
        h = h - h.mean(0)  # BUG: a mean over the batch; meant h.mean(-1, keepdim=True) (or nn.LayerNorm)
        return self.cls(h), self.reg(h)


def model() -> nn.Module:
    return Centred()
