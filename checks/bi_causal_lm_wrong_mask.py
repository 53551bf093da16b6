"""Broken: a causal language model (`causal = True`) whose attention mask is the wrong way round (hides the past).

Bug: the mask puts -inf BELOW the diagonal (`torch.tril(..., diagonal=-1)`) instead of above it, so position t
sees positions >= t (itself and the future) and none of the past.
Symptom in a long run: the training loss drops far below what next-token prediction allows (the model copies the
token it is asked to predict from the future), validation perplexity looks great, and generation produces garbage
because at inference the future is not there.
Source: Karpathy, nanoGPT / "Let's build GPT" (the causal mask); Karpathy, "A Recipe for Training Neural Networks"
("use backprop to chart dependencies": autoregressive models must not see the future); Humbatova et al. (ICSE
2020), "Model / Missing or wrong masking".
"""

import torch
from torch import nn

EXPECT = {"batch-isolation": "fail"}

VOCAB, SEQ_LEN, D_MODEL, BATCH = 16, 17, 32, 16
causal = True


class TinyLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(VOCAB, D_MODEL)
        self.pos = nn.Embedding(SEQ_LEN, D_MODEL)
        layer = nn.TransformerEncoderLayer(
            D_MODEL, nhead=2, dim_feedforward=4 * D_MODEL, dropout=0.0, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
        self.head = nn.Linear(D_MODEL, VOCAB)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        t = input_ids.shape[1]
        h = self.tok(input_ids) + self.pos(torch.arange(t, device=input_ids.device))
        # BUG: -inf below the diagonal; should be torch.triu(torch.full((t, t), float("-inf")), diagonal=1)
        mask = torch.tril(torch.full((t, t), float("-inf"), device=input_ids.device), diagonal=-1)
        h = self.blocks(h, mask=mask)
        return self.head(h)


def model() -> nn.Module:
    return TinyLM()


def data():
    g = torch.Generator().manual_seed(0)
    n = 8 * BATCH
    start = torch.randint(0, VOCAB, (n, 1), generator=g)
    stride = torch.randint(1, 4, (n, 1), generator=g)
    ids = (start + stride * torch.arange(SEQ_LEN)) % VOCAB
    return [{"input_ids": ids[i : i + BATCH]} for i in range(0, n, BATCH)]


def forward(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    ids = batch["input_ids"]
    return model(ids[:, :-1]), ids[:, 1:]


def optimizer(params):
    return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
