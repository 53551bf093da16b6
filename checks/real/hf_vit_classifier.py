"""Correct: a Hugging Face `ViTForImageClassification` (tiny config, random init) on standardised 16x16 images,
dict batches `{"pixel_values", "labels"}`, nncheck's default forward.

What it is: patch embedding (4x4 patches), a [CLS] token, pre-LN transformer encoder, linear classifier on [CLS];
the model computes its own cross-entropy from `labels`, nncheck reads `output.logits`.
Why it is right: inputs standardised per channel (as ViTImageProcessor does with its mean / std), labels in
[0, num_labels), AdamW with weight decay (Dosovitskiy et al. 2021, appendix B.1).
Source: https://huggingface.co/docs/transformers/model_doc/vit; Dosovitskiy et al. 2021 (ViT).
"""

import torch
from transformers import ViTConfig, ViTForImageClassification

CORRECT = True

SIZE, BATCH, CLASSES = 16, 16, 4


def model():
    config = ViTConfig(
        image_size=SIZE, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=CLASSES,
    )
    return ViTForImageClassification(config)


def data():
    # the class is the quadrant holding a bright square
    g = torch.Generator().manual_seed(7)
    batches = []
    for _ in range(8):
        labels = torch.randint(0, CLASSES, (BATCH,), generator=g)
        x = torch.randn(BATCH, 3, SIZE, SIZE, generator=g) * 0.5
        for i, c in enumerate(labels.tolist()):
            r, q = divmod(c, 2)
            x[i, :, r * 8 : r * 8 + 8, q * 8 : q * 8 + 8] += 1.5
        x = (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)
        batches.append({"pixel_values": x, "labels": labels})
    return batches


def optimizer(params):
    return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05)
