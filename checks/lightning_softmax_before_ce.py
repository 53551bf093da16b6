"""Broken: a LightningModule whose training_step applies a softmax before F.cross_entropy (a double softmax).

Bug: `F.cross_entropy` applies log_softmax itself; `training_step` feeds it `self(x).softmax(dim=1)`, probabilities in
[0, 1], so the loss saturates near log(C) - 1/C and its gradient is tiny. `forward` returns logits (inference code that
calls the model directly looks right): the bug lives only in the training step, which nncheck reads as the loss.
Symptom in a long run: the loss falls a little, then plateaus high; the model never becomes confident.
Source: Islam et al. (FSE 2019), "wrong loss input"; PyTorch docs (CrossEntropyLoss: "the input is expected to contain
the unnormalized logits"); the same bug as checks/lf_softmax_before_cross_entropy.py inside Lightning.
"""

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

EXPECT = {"loss-function": "fail"}


class Classifier(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        probs = self(x).softmax(dim=1)
        loss = F.cross_entropy(probs, y)  # BUG: cross_entropy expects logits
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


class Blobs(L.LightningDataModule):
    def setup(self, stage: str) -> None:
        g = torch.Generator().manual_seed(0)
        w = torch.randn(20, 5, generator=g)
        x = torch.randn(256, 20, generator=g)
        self.train = TensorDataset(x, (x @ w).argmax(dim=1))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=32, shuffle=True)


def model() -> L.LightningModule:
    return Classifier()


def data() -> L.LightningDataModule:
    return Blobs()
