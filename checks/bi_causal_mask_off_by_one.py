"""Bug: a causal LM whose attention mask is built with `torch.triu(..., diagonal=2)`: position t also attends to
token t+1, which is its own target.
Symptom in a long run: the training loss falls to almost 0 within a few hundred steps, validation perplexity looks
superb, and generation produces garbage (at inference the future token is not there).
Source: Humbatova et al. ICSE 2020 (model / layer properties: wrong masking); a classic off-by-one in hand-made
causal masks. batch-isolation's causal test must name the first leaking position.
"""

import torch
from torch import nn

EXPECT = {"batch-isolation": "fail"}

V, T, D = 16, 17, 32
causal = True


class LM(nn.Module):
    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(V, D)
        self.pos = nn.Embedding(T, D)
        layer = nn.TransformerEncoderLayer(D, 2, 4 * D, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(D, V)

    def forward(self, ids):
        t = ids.shape[1]
        mask = torch.triu(torch.full((t, t), float("-inf")), diagonal=2)  # BUG: diagonal=1
        h = self.tok(ids) + self.pos(torch.arange(t))
        return self.head(self.blocks(h, mask=mask))


def model():
    return LM()


def data():
    g = torch.Generator().manual_seed(0)
    n = 256
    start = torch.randint(0, V, (n, 1), generator=g)
    stride = torch.randint(1, 4, (n, 1), generator=g)
    ids = (start + stride * torch.arange(T)) % V
    return [{"ids": ids[i : i + 16]} for i in range(0, n, 16)]


def forward(model, batch):
    ids = batch["ids"]
    return model(ids[:, :-1]), ids[:, 1:]


def optimizer(params):
    return torch.optim.AdamW(params, lr=1e-3)
