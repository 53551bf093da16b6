"""Broken: a cosine decay sized for 5,000 steps in a run of 50,000: the LR is ~0 from 10% of the run on.

Bug: the schedule (warm-up + cosine to 0, the shape of Hugging Face's get_cosine_schedule_with_warmup, clamped at its
end) was written for another run length: `num_training_steps` is the number of epochs x 100, not epochs x batches.
The LR reaches 0 at step 5,000 and the remaining 45,000 steps train nothing.
Symptom in a long run: the loss plateaus early (after ~10% of the run) at a value a longer decay beats.
Source: Karpathy, "A Recipe for Training Neural Networks" (2019): "don't trust LR decay defaults".
"""

import math

import torch
from torch import nn

EXPECT = {"lr-schedule": "fail"}

nncheck = {"total_steps": 50_000}
WARMUP, DECAY_STEPS = 100, 5_000  # BUG: the decay ends at 10% of total_steps


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 5))


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(20, 5, generator=g)
    x = torch.randn(256, 20, generator=g)
    y = (x @ w).argmax(dim=1)
    return [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]


def optimizer(params):
    return torch.optim.AdamW(params, lr=1e-3)


def warmup_cosine(step: int) -> float:
    if step < WARMUP:
        return (step + 1) / WARMUP
    progress = min(1.0, (step - WARMUP) / (DECAY_STEPS - WARMUP))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def scheduler(opt):
    return torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine)
