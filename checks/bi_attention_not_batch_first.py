"""Broken: nn.MultiheadAttention without `batch_first=True` attends across the batch instead of across time.

Bug: nn.MultiheadAttention defaults to (length, batch, embed). Fed (B, T, E) token embeddings, it treats the batch
as the sequence, so every sample attends to every other sample of its batch at the same position.
Symptom in a long run: training loss falls (the model can copy information between samples), validation with a
different batch composition or batch size 1 is much worse; results change with the shuffle seed.
Source: Humbatova et al. (ICSE 2020) taxonomy, "Model / Layer properties"; Islam et al. (FSE 2019) "API misuse";
Karpathy, "A Recipe for Training Neural Networks" ("use backprop to chart dependencies").
"""

import torch
from torch import nn

EXPECT = {"batch-isolation": "fail"}

VOCAB, N_CLASSES, T, D, BATCH = 32, 4, 10, 16, 32


class AttnClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(VOCAB, D)
        self.attn = nn.MultiheadAttention(D, num_heads=2)  # BUG: needs batch_first=True for (B, T, D) inputs
        self.head = nn.Linear(D, N_CLASSES)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.tok(tokens)
        h, _ = self.attn(h, h, h, need_weights=False)
        return self.head(h.mean(dim=1))


def model() -> nn.Module:
    return AttnClassifier()


def data():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, VOCAB, (8 * BATCH, T), generator=g)
    y = (tokens < 8).sum(dim=1).clamp(max=N_CLASSES - 1)
    return [(tokens[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(tokens), BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
