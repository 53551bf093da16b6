"""Correct: a stock Hugging Face `DistilBertForSequenceClassification` (tiny config, random init) with dict batches
holding `labels` and nncheck's default forward.

What it is: the model computes its own cross-entropy from `labels`; nncheck reads `output.logits` for the probes that
need logits (the cross-entropy of the logits reproduces `output.loss`).
Why it is right: padded positions are masked, labels are in [0, num_labels), AdamW.
A false alarm it guards against: the activations probe measured 43.9x "std growth" between a residual branch output
(`attention.out_lin`, tiny under the std-0.02 init) and `pre_classifier`, which reads the final LayerNorm-ed hidden
state: layers separated by a normalisation layer are not compared.
Source: https://huggingface.co/docs/transformers/model_doc/distilbert#transformers.DistilBertForSequenceClassification
"""

import torch
from transformers import DistilBertConfig, DistilBertForSequenceClassification

CORRECT = True

VOCAB, SEQ, BATCH, CLASSES, PAD = 96, 16, 16, 2, 0


def model():
    config = DistilBertConfig(
        vocab_size=VOCAB, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=64,
        num_labels=CLASSES, pad_token_id=PAD,
    )
    return DistilBertForSequenceClassification(config)


def data():
    g = torch.Generator().manual_seed(2)
    batches = []
    for _ in range(8):
        ids = torch.randint(1, VOCAB, (BATCH, SEQ), generator=g)
        lengths = torch.randint(SEQ // 2, SEQ + 1, (BATCH,), generator=g)
        mask = (torch.arange(SEQ)[None] < lengths[:, None]).long()
        ids = ids * mask + PAD * (1 - mask)
        labels = (ids[:, 0] >= VOCAB // 2).long()  # the first token in the upper half of the vocabulary
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return batches


def optimizer(params):
    return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
