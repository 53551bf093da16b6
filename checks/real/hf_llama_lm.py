"""Correct: a Llama-style causal LM (Hugging Face `LlamaForCausalLM`, tiny config, random init: RMSNorm, rotary
embeddings, SwiGLU, grouped-query attention) on right-padded batches, with nncheck's default forward.

What it is: dict batches `{"input_ids", "attention_mask", "labels"}` whose labels are the inputs with -100 on the
padded positions (Hugging Face's `DataCollatorForLanguageModeling` does this); the model shifts them itself.
`causal = True`.
Why it is right: the padded positions are masked in attention and ignored in the loss (-100), the model is causal,
AdamW with weight decay.
Source: https://huggingface.co/docs/transformers/model_doc/llama; Touvron et al. 2023 (LLaMA).
"""

import torch
from transformers import LlamaConfig, LlamaForCausalLM

CORRECT = True
causal = True

VOCAB, SEQ, BATCH, PAD = 64, 16, 16, 0


def model():
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, pad_token_id=PAD, bos_token_id=1, eos_token_id=2,
    )
    return LlamaForCausalLM(config)


def data():
    g = torch.Generator().manual_seed(5)
    batches = []
    for _ in range(8):
        start = torch.randint(3, VOCAB, (BATCH, 1), generator=g)
        ids = [start]
        for _ in range(SEQ - 1):
            ids.append(3 + (7 * ids[-1] + 1) % (VOCAB - 3))
        ids = torch.cat(ids, 1)
        lengths = torch.randint(SEQ // 2, SEQ + 1, (BATCH,), generator=g)
        mask = (torch.arange(SEQ)[None] < lengths[:, None]).long()
        ids = ids * mask + PAD * (1 - mask)
        labels = ids.masked_fill(mask == 0, -100)
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return batches


def optimizer(params):
    return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
