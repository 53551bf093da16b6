"""Correct: an LSTM part-of-speech-style tagger over variable-length sentences, run with
`nn.utils.rnn.pack_padded_sequence` so that the LSTM never reads the padding, with the padded positions ignored in
the loss (`ignore_index=-100`).

What it is: batches `((tokens, lengths), tags)`, tokens right-padded with 0, tags -100 on the padding; the model
embeds, packs (lengths on the CPU, `enforce_sorted=False`), runs a bidirectional `batch_first` LSTM, unpacks to the
batch's length and tags every position; the loss is `nn.CrossEntropyLoss()` on `(B * T, C)` rows.
Why it is right: packing keeps the padding out of both directions of the LSTM, the loss ignores the padded tags,
`batch_first=True` matches the `(B, T)` batches, Adam.
Source: https://pytorch.org/docs/stable/generated/torch.nn.utils.rnn.pack_padded_sequence.html; the PyTorch
sequence-tagging tutorial (https://pytorch.org/tutorials/beginner/nlp/sequence_models_tutorial.html).
"""

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

CORRECT = True

VOCAB, TAGS, SEQ, BATCH, PAD = 50, 5, 12, 16, 0


class Tagger(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 32, padding_idx=PAD)
        self.lstm = nn.LSTM(32, 32, batch_first=True, bidirectional=True)
        self.out = nn.Linear(64, TAGS)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(self.emb(tokens), lengths.cpu(), batch_first=True, enforce_sorted=False)
        h, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=tokens.shape[1])
        return self.out(h)


def model():
    return Tagger()


def data():
    # the tag of a word is its id modulo the tag count, except after word 1 ("the"), which makes the next word tag 0
    g = torch.Generator().manual_seed(14)
    batches = []
    for _ in range(8):
        tokens = torch.randint(1, VOCAB, (BATCH, SEQ), generator=g)
        lengths = torch.randint(4, SEQ + 1, (BATCH,), generator=g)
        lengths[0] = SEQ  # the longest sentence fills the batch (pad_packed_sequence's length)
        real = torch.arange(SEQ)[None] < lengths[:, None]
        tags = tokens % TAGS
        tags[:, 1:][tokens[:, :-1] == 1] = 0
        batches.append(((tokens * real, lengths), tags.masked_fill(~real, -100)))
    return batches


def loss(output, tags):
    return nn.functional.cross_entropy(output.reshape(-1, TAGS), tags.reshape(-1), ignore_index=-100)


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
