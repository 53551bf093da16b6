"""Correct: a Hugging Face `RobertaForSequenceClassification` (tiny config, random init), dict batches with
`labels`, default forward.

What it is: RoBERTa's position ids start after the padding index (`padding_idx + 1`), so the padded positions get the
padding position id; the model computes its own cross-entropy, nncheck reads `output.logits`.
Why it is right: `<pad>` = 1 as in RoBERTa's vocabulary, padded positions masked, labels in [0, num_labels).
Source: https://huggingface.co/docs/transformers/model_doc/roberta; Liu et al. 2019 (RoBERTa).
"""

import torch
from transformers import RobertaConfig, RobertaForSequenceClassification

CORRECT = True

VOCAB, SEQ, BATCH, CLASSES, PAD = 96, 16, 16, 3, 1


def model():
    config = RobertaConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=SEQ + 4, num_labels=CLASSES, pad_token_id=PAD, bos_token_id=0, eos_token_id=2,
    )
    return RobertaForSequenceClassification(config)


def data():
    g = torch.Generator().manual_seed(3)
    batches = []
    for _ in range(8):
        ids = torch.randint(3, VOCAB, (BATCH, SEQ), generator=g)
        ids[:, 0] = 0  # <s>
        lengths = torch.randint(SEQ // 2, SEQ + 1, (BATCH,), generator=g)
        mask = (torch.arange(SEQ)[None] < lengths[:, None]).long()
        ids = ids * mask + PAD * (1 - mask)
        labels = ids[:, 1] % CLASSES  # the class of the first word
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return batches


def optimizer(params):
    return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
