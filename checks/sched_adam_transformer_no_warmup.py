"""Broken (advisory): a tiny transformer LM trained by AdamW with a cosine decay but no warm-up.

Bug: Adam's adaptive LR has a large variance in its first steps (its second-moment estimate rests on a few
gradients); transformers trained at the full LR from step 0 are prone to early divergence, which a linear warm-up
(or RAdam) avoids. This tiny model trains anyway: the lr-schedule probe warns (advisory), it does not fail.
Source: Vaswani et al. 2017 (section 5.3, warm-up over 4000 steps); Liu et al. 2020, "On the Variance of the Adaptive
Learning Rate and Beyond" (arXiv:1908.03265).
"""

import torch
from torch import nn

EXPECT = {"lr-schedule": "warn"}

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


nncheck = {"total_steps": 20_000}


def scheduler(opt):
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=20_000)  # BUG: no warm-up
