"""Correct: a Hugging Face `GPT2LMHeadModel` (tiny config, random init) trained as a causal language model with
nncheck's default forward: dict batches `{"input_ids", "attention_mask", "labels": input_ids}`.

What it is: as in Hugging Face's causal-LM recipe, `labels` are the inputs themselves and the model shifts them
(position t predicts token t + 1); nncheck recognises the model's own loss as the next-token cross-entropy of
`output.logits`. Unpadded sequences of one length carry an all-ones `attention_mask`, as the tokenizer returns it.
`causal = True`: output position t may depend on input positions <= t only (GPT-2 masks attention causally).
Why it is right: the causal mask is built into the model, the labels are shifted by the model, the LM-head is tied to
the token embedding (no bias, as GPT-2), AdamW.
False alarm it guards against: the data probe warned "a batch of inputs is constant" because the all-ones mask was
the only input left once the input ids (equal to the labels) were set aside.
Source: https://huggingface.co/docs/transformers/tasks/language_modeling; Radford et al. 2019 (GPT-2).
"""

import torch
from transformers import GPT2Config, GPT2LMHeadModel

CORRECT = True
causal = True

VOCAB, SEQ, BATCH = 64, 16, 16


def model():
    config = GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=2, bos_token_id=0,
                        eos_token_id=0)
    return GPT2LMHeadModel(config)


def data():
    # sequences from a fixed rule (next = 5 * current + 3 mod V) with a random start: a learnable language
    g = torch.Generator().manual_seed(4)
    batches = []
    for _ in range(8):
        start = torch.randint(0, VOCAB, (BATCH, 1), generator=g)
        ids = [start]
        for _ in range(SEQ - 1):
            ids.append((5 * ids[-1] + 3) % VOCAB)
        ids = torch.cat(ids, 1)
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()})
    return batches


def optimizer(params):
    return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
