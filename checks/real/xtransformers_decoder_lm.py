"""Correct: an x-transformers `TransformerWrapper(attn_layers=Decoder(...))` causal language model (tiny config) with
shifted targets.

What it is: `(x, y)` batches with `x = seq[:, :-1]` and `y = seq[:, 1:]` (targets shifted by one, as
x-transformers' `AutoregressiveWrapper` does); the default loss is the sequence cross-entropy of the `(B, T, V)`
logits. `causal = True`.
Why it is right: `Decoder` masks attention causally; targets are the next tokens; Adam.
Source: https://github.com/lucidrains/x-transformers (README, "Decoder-only (GPT-like)").
"""

import torch
from x_transformers import Decoder, TransformerWrapper

CORRECT = True
causal = True

VOCAB, SEQ, BATCH = 64, 16, 16


def model():
    return TransformerWrapper(num_tokens=VOCAB, max_seq_len=64, attn_layers=Decoder(dim=32, depth=2, heads=2))


def data():
    g = torch.Generator().manual_seed(8)
    batches = []
    for _ in range(8):
        start = torch.randint(0, VOCAB, (BATCH, 1), generator=g)
        seq = [start]
        for _ in range(SEQ):
            seq.append((3 * seq[-1] + 7) % VOCAB)
        seq = torch.cat(seq, 1)
        batches.append((seq[:, :-1], seq[:, 1:]))
    return batches


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
