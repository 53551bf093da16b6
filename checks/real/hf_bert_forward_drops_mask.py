"""Broken: the BERT classifier of hf_bert_classifier.py trained with a hand-written forward that forgets to pass the
attention mask: `model(input_ids=batch["input_ids"], labels=batch["labels"])`.

Bug: without `attention_mask` every position attends to the padding tokens, so a sentence's prediction depends on
how many pads its batch appended (the longest sentence of the batch decides).
Symptom in a long run: training works, evaluation with another batch size or padding strategy (dynamic padding,
batch of one) gives different predictions; accuracy drops when sentence lengths vary.
Caught by batch-isolation: the output of a sample must not depend on its padded positions (attention_mask == 0 in
the batch).
Source: https://huggingface.co/docs/transformers/glossary#attention-mask ("...the attention mask is an optional
argument used when batching sequences together"); Hugging Face warns about it only for pad tokens it can recognise.
"""

from hf_bert_classifier import data, optimizer  # noqa: F401  (the same data and optimizer)
from hf_bert_classifier import model as bert

EXPECT = {"batch-isolation": "fail"}


def model():
    return bert()


def forward(net, batch):
    out = net(input_ids=batch["input_ids"], labels=batch["labels"])  # BUG: attention_mask not passed
    return out.logits, batch["labels"]
