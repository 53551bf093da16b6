"""Correct: a GRU encoder-decoder (batch_first) that reverses a sequence, with teacher forcing in a custom forward;
the BOS token never occurs as a target. From the held-out evaluation of nncheck.
"""

import torch
from torch import nn

CORRECT = True
EXPECT: dict[str, str] = {}

V, T, H, BOS = 12, 8, 48, 0


class Seq2Seq(nn.Module):
    def __init__(self):
        super().__init__()
        self.src_emb = nn.Embedding(V, 32)
        self.tgt_emb = nn.Embedding(V, 32)
        self.enc = nn.GRU(32, H, batch_first=True)
        self.dec = nn.GRU(32, H, batch_first=True)
        self.head = nn.Linear(H, V)

    def forward(self, src, tgt_in):
        _, h = self.enc(self.src_emb(src))
        o, _ = self.dec(self.tgt_emb(tgt_in), h)
        return self.head(o)


def model():
    return Seq2Seq()


def data():
    g = torch.Generator().manual_seed(0)
    src = torch.randint(1, V, (256, T), generator=g)
    return [(src[i : i + 32], src[i : i + 32].flip(1)) for i in range(0, 256, 32)]


def forward(model, batch):
    src, tgt = batch
    tgt_in = torch.cat([torch.full_like(tgt[:, :1], BOS), tgt[:, :-1]], 1)
    return model(src, tgt_in), tgt


def optimizer(params):
    return torch.optim.Adam(params, lr=3e-3)
