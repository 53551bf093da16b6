"""Correct: a Hugging Face `BertForSequenceClassification` (tiny config, random init) fine-tuned on padded token
batches, with nncheck's default forward.

What it is: the batches are dicts `{"input_ids", "attention_mask", "token_type_ids", "labels"}` as a Hugging Face
`DataCollatorWithPadding` yields them; there is no `forward` and no `loss` in this file: nncheck calls
`model(**batch)`, the model computes its own cross-entropy from `labels`, and nncheck recognises it as the
cross-entropy of `output.logits` (it reproduces `output.loss`), so the probes that need logits read `.logits`.
Why it is right: the padding is masked (`attention_mask` 0 on padded positions), labels are class indices in
[0, num_labels), AdamW with weight decay as in the BERT recipe (Devlin et al. 2019, appendix A.3), at 1e-3
because the tiny model starts from random init (5e-5 is the fine-tuning LR of pretrained weights; from scratch the
overfit-batch probe rightly finds it slow: 39% of the initial loss left after 500 steps).
Source: https://huggingface.co/docs/transformers/tasks/sequence_classification (the training loop of the tutorial).
"""

import torch
from transformers import BertConfig, BertForSequenceClassification

CORRECT = True

VOCAB, SEQ, BATCH, CLASSES, PAD = 96, 16, 16, 3, 0


def model():
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, num_labels=CLASSES, pad_token_id=PAD,
    )
    return BertForSequenceClassification(config)


def data():
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(8):
        ids = torch.randint(1, VOCAB, (BATCH, SEQ), generator=g)
        lengths = torch.randint(SEQ // 2, SEQ + 1, (BATCH,), generator=g)
        mask = (torch.arange(SEQ)[None] < lengths[:, None]).long()
        ids = ids * mask + PAD * (1 - mask)
        # the label is the third of the vocabulary most of the real tokens fall in
        thirds = torch.stack([((ids >= 1 + k * VOCAB // 3) & (ids < 1 + (k + 1) * VOCAB // 3) & (mask == 1)).sum(1)
                              for k in range(CLASSES)], 1)
        batches.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids),
                        "labels": thirds.argmax(1)})
    return batches


def optimizer(params):
    return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
