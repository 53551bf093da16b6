"""Correct: a custom train step with gradient clipping at a max norm of 1.0 (a common default) on an MLP classifier.

`train_step(model, batch, optimizer)` zeroes the gradients, runs forward and backward, clips the global gradient norm
to 1.0 and steps the optimizer: the shared training trace and the training probes call it instead of nncheck's own
step. The gradient norm of this model is 0.35-0.52 at init (seeds 0-2): clipping at 1.0 is a guard against rare
spikes that does not cut the update (clip ratio 1); train-step passes.
Source: Pascanu et al. 2013, "On the difficulty of training recurrent neural networks" (clipping bounds rare
exploding gradients); torch.nn.utils.clip_grad_norm_.
"""

import torch
from torch import nn

CORRECT = True
EXPECT: dict[str, str] = {}


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 5))


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(20, 5, generator=g)
    x = torch.randn(256, 20, generator=g)
    y = (x @ w).argmax(dim=1)
    return [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]


def optimizer(params):
    return torch.optim.SGD(params, lr=0.1, momentum=0.9)


def train_step(model, batch, optimizer):
    x, y = batch
    optimizer.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
    optimizer.step()
    return loss
