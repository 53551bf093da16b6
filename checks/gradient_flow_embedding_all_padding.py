"""Broken: every token id is the Embedding's padding_idx (a vocabulary lookup with the wrong key type).

Bug: the tokeniser looks words up in a `{str: id}` vocabulary with int keys, so `vocab.get(w, 0)` returns the pad
id 0 for every word. The Embedding has `padding_idx=0`: its output is the all-zero padding row everywhere, that row
never gets a gradient, and the masked mean pools nothing. The model's output ignores its input.
Symptom in a long run: the loss converges to the label prior's entropy and stays there; the embedding table never
changes; no error anywhere.
Source: Humbatova et al. (ICSE 2020) taxonomy, "Training data / Preprocessing of training data" (wrong
tokenisation); Islam et al. (FSE 2019), "data bugs"; held-out evaluation .notes/heldout/b_embedding_all_padding.py.
"""

import torch
from torch import nn

EXPECT = {"gradient-flow": "fail", "batch-isolation": "fail"}

VOCAB, SEQ, N_CLASSES, BATCH = 50, 12, 3, 32


class BagClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 32, padding_idx=0)
        self.head = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, N_CLASSES))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != 0).float()[..., None]
        h = (self.emb(ids) * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return self.head(h)


def model() -> nn.Module:
    return BagClassifier()


def data():
    g = torch.Generator().manual_seed(0)
    n = 8 * BATCH
    y = torch.randint(0, N_CLASSES, (n,), generator=g)
    words = torch.randint(1, VOCAB, (n, SEQ), generator=g)
    words[:, :4] = y[:, None] * 10 + 1 + torch.randint(0, 5, (n, 4), generator=g)
    vocab = {str(i): i for i in range(1, VOCAB)}
    ids = torch.tensor([[vocab.get(w, 0) for w in row.tolist()] for row in words])  # BUG: keys are str, w is int
    return [(ids[i : i + BATCH], y[i : i + BATCH]) for i in range(0, n, BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
