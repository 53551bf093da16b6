"""Broken: a causal LM's forward returns the inputs as targets (no shift by one position).

Bug: `return model(ids), ids` instead of `return model(ids[:, :-1]), ids[:, 1:]`: the target at position t is the
token the model reads at position t, which the causal mask lets it see.
Symptom in a long run: the training loss drops to ~0 within a few hundred steps (the model learns to copy), perplexity
looks superb, and generation produces the prompt's last token forever.
Source: Humbatova et al. (ICSE 2020) taxonomy, "Training data quality / Wrong labels"; a recurring nanoGPT /
HuggingFace forum question ("loss goes to zero immediately": labels not shifted in a custom loop).
"""

import torch
from torch import nn

EXPECT = {"data": "fail"}
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
        mask = nn.Transformer.generate_square_subsequent_mask(t)
        h = self.tok(ids) + self.pos(torch.arange(t))
        return self.head(self.blocks(h, mask=mask, is_causal=True))


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
    return model(ids), ids  # BUG: should be model(ids[:, :-1]), ids[:, 1:]


def optimizer(params):
    return torch.optim.AdamW(params, lr=1e-3)
