"""A correct bag-of-words text classifier with ``nn.EmbeddingBag`` fed flat tokens + offsets.

Shows a user how to check an EmbeddingBag model (the PyTorch text-classification tutorial's model). The model takes
the tuple ``(tokens, lengths)``: ``tokens`` is ``(B, L)`` padded with ``PAD = 0`` and ``lengths`` is ``(B,)``; its
``forward`` packs them into the flat ``tokens`` + ``offsets`` form that ``nn.EmbeddingBag`` wants. Keeping the batch
per-sample (every tensor has the batch size first) is what lets nncheck, and a user's own tooling, slice a batch
into samples; a batch of one flat token tensor cannot be split into samples without its offsets.
Synthetic data: 4 classes, each with 5 keyword tokens; a text of class c holds 1-3 of c's keywords among random
filler tokens, in random order, with a random length.
"""

import torch
from torch import nn

CORRECT = True
EXPECT: dict[str, str] = {}

PAD, VOCAB, N_CLASSES, MAX_LEN, BATCH = 0, 64, 4, 12, 32
N_KEYWORDS = 5  # per class: tokens 1..20 are keywords, 21..63 filler


class BagClassifier(nn.Module):
    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(VOCAB, dim, mode="mean")
        self.head = nn.Linear(dim, N_CLASSES)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        keep = torch.arange(tokens.shape[1], device=tokens.device) < lengths[:, None]
        flat = tokens[keep]  # all texts back to back
        offsets = torch.cumsum(lengths, 0) - lengths  # where each text starts in `flat`
        return self.head(self.bag(flat, offsets))


def model() -> nn.Module:
    return BagClassifier()


def data():
    g = torch.Generator().manual_seed(0)
    n = 16 * BATCH
    y = torch.randint(0, N_CLASSES, (n,), generator=g)
    lengths = torch.randint(4, MAX_LEN + 1, (n,), generator=g)
    tokens = torch.randint(1 + N_CLASSES * N_KEYWORDS, VOCAB, (n, MAX_LEN), generator=g)
    n_kw = torch.randint(1, 4, (n,), generator=g)
    for i in range(n):
        kw = 1 + y[i] * N_KEYWORDS + torch.randint(0, N_KEYWORDS, (int(n_kw[i]),), generator=g)
        pos = torch.randperm(int(lengths[i]), generator=g)[: len(kw)]
        tokens[i, pos] = kw
    tokens[torch.arange(MAX_LEN) >= lengths[:, None]] = PAD
    return [((tokens[i : i + BATCH], lengths[i : i + BATCH]), y[i : i + BATCH]) for i in range(0, n, BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
