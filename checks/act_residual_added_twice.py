"""Broken: a pre-LN residual block adds its input twice (`x + f(ln(x)) + x`): the residual stream doubles per block.

Bug: a refactor that moved the skip connection out of the branch left it in both places, so each of the 8 blocks
returns about 2x its input: the stream std grows 2^8 = 256x from the first block to the last. The final LayerNorm
rescales it before the head, so the loss looks normal at init, but every block's contribution is drowned by the
ever larger stream (later blocks barely change the output) and Adam's updates to the early blocks are amplified.
Symptom in a long run: training is much slower than the same network with single skips, deeper stacks train worse
than shallow ones, and the activations (and the loss) blow up when the final LayerNorm is removed or in float16.
Source: Humbatova et al. (ICSE 2020) taxonomy, "Model / Wrong network architecture" (wrong layer connection);
Xiong et al. 2020 (pre-LN stream growth); held-out evaluation .notes/heldout/b_residual_double.py.
"""

import torch
from torch import nn

EXPECT = {"activations": "warn"}

N_FEATURES, N_CLASSES, WIDTH, DEPTH, BATCH = 20, 5, 32, 8, 32


class Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.f = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.f(self.ln(x)) + x  # BUG: the residual is added twice; meant x + self.f(self.ln(x))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(N_FEATURES, WIDTH)
        self.blocks = nn.Sequential(*[Block(WIDTH) for _ in range(DEPTH)])
        self.ln = nn.LayerNorm(WIDTH)
        self.head = nn.Linear(WIDTH, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.ln(self.blocks(self.inp(x))))


def model() -> nn.Module:
    return Net()


def data():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(N_CLASSES, N_FEATURES, generator=g)
    y = torch.randint(0, N_CLASSES, (8 * BATCH,), generator=g)
    x = mu[y] + torch.randn(8 * BATCH, N_FEATURES, generator=g)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
