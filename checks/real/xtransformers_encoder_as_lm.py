"""Broken: the language model of xtransformers_decoder_lm.py built with x-transformers' `Encoder` (bidirectional
attention) instead of `Decoder` (causal attention).

Bug: no causal mask: position t attends to the tokens after it, including the token it must predict.
Symptom in a long run: the training loss falls to near 0 within a few hundred steps (the model copies the next
token), generation produces garbage.
Caught by batch-isolation (the setup declares `causal = True`): output position t depends on input positions > t.
Source: https://github.com/lucidrains/x-transformers (README: `Decoder` for autoregressive models, `Encoder` for
BERT-like ones).
"""

from x_transformers import Encoder, TransformerWrapper
from xtransformers_decoder_lm import VOCAB, data, optimizer  # the same data and optimizer

EXPECT = {"batch-isolation": "fail"}
causal = True


def model():
    # BUG: Encoder attends both ways; an autoregressive LM needs Decoder
    return TransformerWrapper(num_tokens=VOCAB, max_seq_len=64, attn_layers=Encoder(dim=32, depth=2, heads=2))


__all__ = ["data", "model", "optimizer"]
