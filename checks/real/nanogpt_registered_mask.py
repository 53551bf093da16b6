"""Correct: a nanoGPT-style causal LM whose attention adds a registered causal mask buffer of 0 / -inf, built with
PyTorch's own `nn.Transformer.generate_square_subsequent_mask(T)`.

What it is: token + learned position embeddings, pre-LN blocks (`x + attn(ln(x))`, `x + mlp(ln(x))`), a final
LayerNorm, an LM head tied to the token embedding; attention scores get `+ self.mask[:T, :T]` before the softmax.
`causal = True`.
Why it is right: additive 0 / -inf masks are the standard way to mask attention (PyTorch's
`generate_square_subsequent_mask`, `F.scaled_dot_product_attention(attn_mask=...)`): exp(-inf) = 0 exactly, the -inf
never reaches the outputs, the loss or a gradient.
False alarm it guards against: the numerics probe failed this model because a buffer holds -inf.
Source: Karpathy, nanoGPT (https://github.com/karpathy/nanoGPT, model.py: `register_buffer("bias", torch.tril(...))`);
https://pytorch.org/docs/stable/generated/torch.nn.Transformer.html (generate_square_subsequent_mask).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

CORRECT = True
causal = True

VOCAB, SEQ, BATCH, DIM, HEADS = 64, 16, 16, 32, 2


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(DIM), nn.LayerNorm(DIM)
        self.qkv, self.proj = nn.Linear(DIM, 3 * DIM), nn.Linear(DIM, DIM)
        self.mlp = nn.Sequential(nn.Linear(DIM, 4 * DIM), nn.GELU(), nn.Linear(4 * DIM, DIM))
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(64))

    def attn(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(DIM, dim=2)
        q, k, v = (z.view(b, t, HEADS, c // HEADS).transpose(1, 2) for z in (q, k, v))
        att = q @ k.transpose(-2, -1) / math.sqrt(c // HEADS) + self.mask[:t, :t]
        y = F.softmax(att, dim=-1) @ v
        return self.proj(y.transpose(1, 2).reshape(b, t, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(VOCAB, DIM), nn.Embedding(64, DIM)
        self.blocks = nn.Sequential(Block(), Block())
        self.ln_f = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, VOCAB, bias=False)
        self.head.weight = self.tok.weight  # weight tying
        for m in self.modules():  # nanoGPT's init
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        return self.head(self.ln_f(self.blocks(x)))


def model():
    return GPT()


def data():
    g = torch.Generator().manual_seed(9)
    batches = []
    for _ in range(8):
        seq = [torch.randint(0, VOCAB, (BATCH, 1), generator=g)]
        for _ in range(SEQ):
            seq.append((5 * seq[-1] + 1) % VOCAB)
        seq = torch.cat(seq, 1)
        batches.append((seq[:, :-1], seq[:, 1:]))
    return batches


def optimizer(params):
    return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.1)
