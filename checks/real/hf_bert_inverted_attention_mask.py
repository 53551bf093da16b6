"""Broken: the BERT classifier of hf_bert_classifier.py with an inverted attention mask: the collate function builds
`attention_mask = (ids == PAD)` (1 on the padding) instead of `(ids != PAD)`.

Bug: Hugging Face's convention is 1 = attend, 0 = padding; inverted, every real token is masked out and the model
attends to the padding, so a sentence's prediction depends on how much padding its batch added.
Symptom in a long run: training still lowers the loss a little (the [CLS] position and the padding carry some
signal), accuracy stays far below what the model should reach, and predictions change with the batch's padding.
Caught by batch-isolation: the output of a sample must not depend on its padded positions (attention_mask == 0).
Source: https://huggingface.co/docs/transformers/glossary#attention-mask; a frequent mistake when porting
PyTorch's `key_padding_mask` (True = padding) to Hugging Face models (1 = token).
"""

from hf_bert_classifier import data as padded_batches
from hf_bert_classifier import model as bert
from hf_bert_classifier import optimizer  # noqa: F401  (the same optimizer)

EXPECT = {"batch-isolation": "fail"}


def model():
    return bert()


def data():
    batches = []
    for b in padded_batches():
        real = b["attention_mask"]
        # BUG: the mask marks the padding (PyTorch's key_padding_mask convention), not the tokens
        batches.append({**b, "attention_mask": 1 - real})
    return batches
