"""Broken (a moderate cost): the U-Net segmenter of unet_segmenter_prior.py with PyTorch's default output bias: 81%
of the pixels are background, but the 1x1 output convolution starts by predicting the three classes as equally likely.

Bug: the class prior is not written into the output bias (`self.out.bias`), so the loss at init is log 3 = 1.10 nats
instead of ~0.6 (the prior's entropy).
Symptom in a long run: the first tens of steps only learn the pixel frequencies (a short hockey stick); the
network trains fine afterwards. A warning, not a failure: the loss at init is under twice the prior's (the
criterion for a fail, the same as initial-loss's), and Adam recovers the prior within tens of steps.
Source: Karpathy, "A Recipe for Training Neural Networks" (2019), "init well"; Lin et al. 2017 (focal loss), §4.1.
"""

import torch
from unet_segmenter_prior import CLASSES, UNet, data  # noqa: F401  (the same model and data)

EXPECT = {"last-layer-bias": "warn"}


def model():
    return UNet(prior=False)  # BUG: default bias, class prior not built in


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
