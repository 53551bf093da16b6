"""Correct: a custom train step with automatic mixed precision, bfloat16 autocast on the CPU (no GradScaler needed).

bfloat16 has float32's exponent range, so gradients do not underflow and need no loss scaling: the GradScaler is
built disabled (`enabled=False`, what `GradScaler("cpu", enabled=use_fp16)` gives for bfloat16), and its calls pass
through. train-step sees the forward under autocast(bfloat16), finite gradients and one optimizer step per call.
Source: PyTorch AMP docs ("torch.autocast": CPU autocast supports bfloat16; "GradScaler" is only needed for float16);
Kalamkar et al. 2019, "A Study of BFLOAT16 for Deep Learning Training".
"""

import torch
from torch import nn

CORRECT = True
EXPECT: dict[str, str] = {}

scaler = torch.amp.GradScaler("cpu", enabled=False)  # bfloat16 needs no loss scaling


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


def train_step(model, batch, optimizer):
    x, y = batch
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = nn.functional.cross_entropy(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss
