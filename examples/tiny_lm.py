"""A correct tiny decoder-only transformer language model with dict batches and a causal mask.

Shows a user the three things a language model setup needs:
- batches are dicts (``{"input_ids": LongTensor (B, T)}``), as a Hugging Face style DataLoader yields them;
- a custom ``forward(model, batch)`` builds the next-token targets from the inputs themselves
  (inputs ``ids[:, :-1]``, targets ``ids[:, 1:]``) and returns ``(logits (B, T, V), targets (B, T))``;
- ``causal = True`` tells nncheck that position t may depend only on positions <= t, which the causal attention
  mask guarantees (batch-isolation then checks that no future token leaks into the past).
Synthetic data: each sequence counts up modulo V from a random start with a random stride in {1, 2, 3}, so the next
token is predictable from the previous two.
"""

import torch
from torch import nn

CORRECT = True
EXPECT: dict[str, str] = {}

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
        self.norm = nn.LayerNorm(D_MODEL)
        self.head = nn.Linear(D_MODEL, VOCAB)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        t = input_ids.shape[1]
        h = self.tok(input_ids) + self.pos(torch.arange(t, device=input_ids.device))
        mask = nn.Transformer.generate_square_subsequent_mask(t, device=input_ids.device)
        h = self.blocks(h, mask=mask, is_causal=True)
        return self.head(self.norm(h))  # (B, T, V)


def model() -> nn.Module:
    return TinyLM()


def data():
    g = torch.Generator().manual_seed(0)
    n = 16 * BATCH
    start = torch.randint(0, VOCAB, (n, 1), generator=g)
    stride = torch.randint(1, 4, (n, 1), generator=g)
    ids = (start + stride * torch.arange(SEQ_LEN)) % VOCAB
    return [{"input_ids": ids[i : i + BATCH]} for i in range(0, n, BATCH)]


def forward(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    ids = batch["input_ids"]
    return model(ids[:, :-1]), ids[:, 1:]


def optimizer(params):
    return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
