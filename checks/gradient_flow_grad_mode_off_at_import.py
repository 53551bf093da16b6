"""Broken: grad mode is switched off globally when the setup is imported.

Bug: `torch.set_grad_enabled(False)` at module level, left over from an inference or export script (or executed by a
module the training code imports), turns autograd off for the whole process: the forward builds no graph.
Symptom in a long run: the first `loss.backward()` raises "element 0 of tensors does not require grad and does not
have a grad_fn" although every parameter requires grad, which points at the model instead of the global switch.
Source: PyTorch docs of `torch.set_grad_enabled` (it is a global switch when called as a function, not only a context
manager); PyTorch forum threads on that error after importing an evaluation module; nncheck issue 13.
"""

import torch
from torch import nn

EXPECT = {"gradient-flow": "fail"}

N_FEATURES, N_CLASSES, BATCH = 20, 5, 32

torch.set_grad_enabled(False)  # BUG: use `with torch.no_grad():` around the inference code only


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(N_FEATURES, 64), nn.ReLU(), nn.Linear(64, N_CLASSES))


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8 * BATCH, N_FEATURES, generator=g)
    y = (x[:, :N_CLASSES] + 0.5 * torch.randn(8 * BATCH, N_CLASSES, generator=g)).argmax(dim=1)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]
