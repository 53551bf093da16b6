"""Broken: the ViT of hf_vit_classifier.py used as a multi-label tagger (several of 4 tags per image, multi-hot float
targets) trained with `nn.CrossEntropyLoss()`.

Bug: CrossEntropyLoss accepts float targets as class *probabilities* (one class per sample, a distribution summing to
1); multi-hot rows with two 1s are not a distribution, so the loss pushes the softmax to split its mass among the
tags and can never say "both". Multi-label needs a sigmoid per tag: `nn.BCEWithLogitsLoss()`.
Symptom in a long run: the loss plateaus above 0, per-tag probabilities never exceed ~1/k for images with k tags,
thresholding at 0.5 misses most tags.
Caught by loss-function: "targets are multi-hot: use BCEWithLogitsLoss".
Source: https://pytorch.org/docs/stable/generated/torch.nn.CrossEntropyLoss.html (probabilities as targets);
https://pytorch.org/docs/stable/generated/torch.nn.BCEWithLogitsLoss.html (multi-label classification).
"""

import torch
from torch import nn
from transformers import ViTConfig, ViTModel

EXPECT = {"loss-function": "fail"}

SIZE, BATCH, TAGS = 16, 16, 4


class Tagger(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        config = ViTConfig(image_size=SIZE, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=64)
        self.vit = ViTModel(config, add_pooling_layer=False)
        self.head = nn.Linear(32, TAGS)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.vit(pixel_values=pixel_values).last_hidden_state[:, 0])


def model():
    return Tagger()


def data():
    # a bright square in each tagged quadrant
    g = torch.Generator().manual_seed(17)
    batches = []
    for _ in range(8):
        tags = (torch.rand(BATCH, TAGS, generator=g) < 0.4).float()
        x = torch.randn(BATCH, 3, SIZE, SIZE, generator=g) * 0.5
        for k in range(TAGS):
            r, q = divmod(k, 2)
            x[:, :, r * 8 : r * 8 + 8, q * 8 : q * 8 + 8] += 1.5 * tags[:, k, None, None, None]
        batches.append(((x - x.mean()) / x.std(), tags))
    return batches


loss = nn.CrossEntropyLoss()  # BUG: multi-hot targets need nn.BCEWithLogitsLoss()


def optimizer(params):
    return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05)
