"""Correct: a Hugging Face `DistilBertModel` encoder (tiny config, random init) with a plain PyTorch head on the
first token, as in the "custom head on a pretrained encoder" pattern.

What it is: `model.encoder` is `DistilBertModel`, `model.head` an `nn.Sequential(nn.Linear, nn.ReLU, nn.Linear)` on the
hidden state of the first token; batches are `((input_ids, attention_mask), labels)` with padding.
Why it is right: the padding is masked, the head reads the encoder's final (LayerNorm-ed) hidden state, AdamW.
A false alarm it guards against: under Hugging Face's init (std 0.02) a residual branch (`attention.out_lin`,
`ffn.lin2`) outputs values ~100x smaller than a layer fed from a LayerNorm (`head[0]`); the activations probe used to
compare them across depth ("std grows 131x from ...out_lin to model.head[0]") and to suggest Kaiming-initialising
the embeddings. A LayerNorm re-standardises the signal, so scales are compared only between layers with no
normalisation between them.
Source: https://huggingface.co/docs/transformers/model_doc/distilbert (DistilBertModel); the custom-head pattern of
e.g. https://huggingface.co/docs/transformers/main/en/custom_models.
"""

import torch
from torch import nn
from transformers import DistilBertConfig, DistilBertModel

CORRECT = True

VOCAB, SEQ, BATCH, CLASSES, PAD = 96, 16, 16, 4, 0


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        config = DistilBertConfig(
            vocab_size=VOCAB, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=64,
            pad_token_id=PAD,
        )
        self.encoder = DistilBertModel(config)
        self.head = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, CLASSES))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(h[:, 0])


def model():
    return Classifier()


def data():
    g = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(8):
        ids = torch.randint(1, VOCAB, (BATCH, SEQ), generator=g)
        lengths = torch.randint(SEQ // 2, SEQ + 1, (BATCH,), generator=g)
        mask = (torch.arange(SEQ)[None] < lengths[:, None]).long()
        ids = ids * mask + PAD * (1 - mask)
        labels = ids[:, 0] % CLASSES  # the class of the first token
        batches.append(((ids, mask), labels))
    return batches


def optimizer(params):
    return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
