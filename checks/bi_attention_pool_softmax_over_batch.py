"""Bug: attention pooling over tokens applies `nn.Softmax(dim=0)` to (B, T, 1) scores: the weights are normalised
over the batch instead of over the tokens, so every sample's pooled vector depends on the other samples.
Symptom in a long run: training works at one batch size and degrades at another; evaluation with batch size 1
gives different predictions than in a batch.
Source: Islam et al. FSE 2019 (API misuse: wrong dim argument); DeepCrime's "change activation function" mutants.
"""

import torch
from torch import nn

EXPECT = {"batch-isolation": "fail"}

V, T = 40, 10


class AttnPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, 32)
        self.score = nn.Linear(32, 1)
        self.softmax = nn.Softmax(dim=0)  # BUG: dim=1 (tokens)
        self.head = nn.Linear(32, 3)

    def forward(self, ids):
        h = self.emb(ids)
        w = self.softmax(self.score(h))  # (B, T, 1)
        return self.head((w * h).sum(1))


def model():
    return AttnPool()


def data():
    g = torch.Generator().manual_seed(0)
    n = 256
    y = torch.randint(0, 3, (n,), generator=g)
    ids = torch.randint(3, V, (n, T), generator=g)
    pos = torch.randint(0, T, (n,), generator=g)
    ids[torch.arange(n), pos] = y  # one key token carries the class
    return [(ids[i : i + 32], y[i : i + 32]) for i in range(0, n, 32)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
