"""Broken: the classifier ends in `nn.Softmax(dim=1)` and is trained with CrossEntropyLoss (a double softmax).

Bug: CrossEntropyLoss applies log-softmax itself; fed probabilities in [0, 1], the "logits" it sees differ by at most
1, so the loss cannot fall below -log(e / (e + C - 1)) = 1.10 nats for 5 classes, whatever the weights, and the
gradients are squashed by the extra softmax.
Symptom in a long run: the loss falls a little and plateaus far above 0; accuracy may creep up but the model never
becomes confident, and training is slow and stalls. The loss at init looks right (log C), so only training shows it.
Source: Islam et al. (FSE 2019), "API misuse / wrong loss input"; Humbatova et al. (ICSE 2020) taxonomy, "Model /
Layers / Missing or redundant softmax"; the PyTorch forums' most frequent CrossEntropyLoss question.
"""

import torch
from torch import nn

EXPECT = {"overfit-batch": "fail"}

N_FEATURES, N_CLASSES, BATCH = 20, 5, 32


def model() -> nn.Module:
    return nn.Sequential(
        nn.Linear(N_FEATURES, 64),
        nn.ReLU(),
        nn.Linear(64, N_CLASSES),
        nn.Softmax(dim=1),  # BUG: CrossEntropyLoss expects raw logits
    )


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_FEATURES, N_CLASSES, generator=g)
    x = torch.randn(8 * BATCH, N_FEATURES, generator=g)
    y = (x @ w).argmax(dim=1)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


loss = nn.CrossEntropyLoss()


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
