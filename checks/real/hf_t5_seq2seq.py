"""Correct: a Hugging Face `T5ForConditionalGeneration` (tiny config, random init) trained on a copy-and-reverse
task with dict batches `{"input_ids", "attention_mask", "labels"}` and nncheck's default forward.

What it is: the model builds `decoder_input_ids` by shifting `labels` right (the decoder start token is the pad id)
and computes the cross-entropy of its logits against `labels` (-100 ignored); nncheck recognises that loss on
`output.logits`. Encoder inputs are padded and masked.
Why it is right: teacher forcing with the model's own shift, padded source positions masked, labels unshifted
(T5 shifts them), AdamW.
Source: https://huggingface.co/docs/transformers/model_doc/t5#training; Raffel et al. 2020 (T5).
"""

import torch
from transformers import T5Config, T5ForConditionalGeneration

CORRECT = True

VOCAB, SRC, TGT, BATCH, PAD = 64, 12, 8, 16, 0


def model():
    config = T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=2,
        pad_token_id=PAD, eos_token_id=1, decoder_start_token_id=PAD, relative_attention_num_buckets=8,
    )
    return T5ForConditionalGeneration(config)


def data():
    g = torch.Generator().manual_seed(6)
    batches = []
    for _ in range(8):
        src = torch.randint(2, VOCAB, (BATCH, SRC), generator=g)
        lengths = torch.randint(TGT, SRC + 1, (BATCH,), generator=g)
        mask = (torch.arange(SRC)[None] < lengths[:, None]).long()
        src = src * mask + PAD * (1 - mask)
        labels = src[:, :TGT].flip(1)  # the first TGT tokens, reversed
        batches.append({"input_ids": src, "attention_mask": mask, "labels": labels})
    return batches


def optimizer(params):
    return torch.optim.AdamW(params, lr=1e-3)
