"""Broken: the DistilBERT + linear-head classifier of hf_distilbert_linear_head.py meant to be fine-tuned end to end,
whose forward runs the encoder under `torch.no_grad()` (copied from a feature-extraction snippet), while the optimizer
holds every parameter.

Bug: no gradient reaches the encoder: only the head trains, although the optimizer (and the user) update the whole
model. A deliberate linear probe freezes the encoder with `requires_grad_(False)` and gives the optimizer the head
only (see checks/ok_frozen_backbone_linear_probe.py).
Symptom in a long run: accuracy plateaus at what a linear probe on random (or pretrained) features reaches.
Caught by gradient-flow: parameters in the optimizer that never get a gradient.
Source: https://huggingface.co/docs/transformers/main/en/training (fine-tuning updates the whole model); the
`with torch.no_grad(): outputs = model(**inputs)` feature-extraction snippets of the model cards.
"""

import torch
from hf_distilbert_linear_head import Classifier, data, optimizer  # noqa: F401  (the same data and optimizer)

EXPECT = {"gradient-flow": "fail"}


class FrozenByAccident(Classifier):
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # BUG: the encoder should be fine-tuned too
            h = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(h[:, 0])


def model():
    return FrozenByAccident()
