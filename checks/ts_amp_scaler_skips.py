"""Broken: float16 autocast with a GradScaler that skips every step: an attention score overflows float16.

Bug: a self-attention layer computes `q @ k.T` without the 1/sqrt(d) scaling on unnormalised features; in float32
the scores (~1e5) are large but finite (softmax saturates), in float16 (max 65504) they overflow to inf, the softmax
gives NaN and every gradient is NaN. The GradScaler sees inf / NaN gradients on every step, skips `optimizer.step()`
and halves its scale, forever: nothing crashes and nothing trains.
Symptom in a long run: a flat (or NaN) loss, the scale logged by the scaler falling to 0.
Source: PyTorch AMP docs (GradScaler skips steps with inf / NaN gradients); Vaswani et al. 2017 (scaled dot-product
attention: "we scale the dot products by 1/sqrt(d_k)"); Micikevicius et al. 2018, "Mixed Precision Training".
"""

import torch
from torch import nn

# overfit-batch runs this train_step too: its loss is NaN from the first step (seeds 0-2): fail, the hint names the
# step (float32 forward of the same batch finite).
EXPECT = {"train-step": "fail", "overfit-batch": "fail"}

D = 64
scaler = torch.amp.GradScaler("cpu")


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(D, 3 * D)
        self.head = nn.Linear(D, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        scores = q @ k.transpose(1, 2)  # BUG: no / D**0.5; overflows float16 on these inputs
        h = scores.softmax(dim=-1) @ v
        return self.head(h.mean(dim=1))


def model() -> nn.Module:
    return Attention()


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 6, D, generator=g) * 100  # unnormalised features
    y = (x[:, 0, :4].argmax(dim=1)).long()
    return [(x[i : i + 32], y[i : i + 32]) for i in range(0, 128, 32)]


def optimizer(params):
    return torch.optim.AdamW(params, lr=1e-3)


def train_step(model, batch, optimizer):
    x, y = batch
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.float16):
        loss = nn.functional.cross_entropy(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss
