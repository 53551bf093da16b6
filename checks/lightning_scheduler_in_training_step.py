"""Broken: a LightningModule that steps its OneCycleLR inside training_step under automatic optimisation.

Bug: `self.lr_schedulers().step()` in training_step (copied from a manual-optimisation example) while
configure_optimizers also returns the scheduler with `interval="step"`: Lightning runs training_step inside
`optimizer.step(closure)`, before the update, and steps the scheduler itself after it, so the schedule steps before
the optimizer and twice per batch: OneCycleLR peaks at 15% of the run instead of 30%, anneals to ~0 by half of it
and raises "Tried to step N times" at the halfway point.
Symptom in a long run: training crashes halfway with a ValueError from OneCycleLR (or, with a cosine schedule, the LR
is ~0 for the second half of the run).
Source: Lightning docs, "Optimization / Learning rate scheduling" (in automatic optimisation Lightning calls the
configured scheduler's step(); stepping it yourself belongs to manual optimisation); PyTorch docs, torch.optim "How
to adjust learning rate" (scheduler.step() after optimizer.step()).
Needs the `lightning` extra: `pip install torch==2.13.0 -e ".[lightning]"`.
"""

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

EXPECT = {"train-step": "fail"}

EPOCHS, BATCH = 20, 32
N_TRAIN = 512
nncheck = {"total_steps": EPOCHS * N_TRAIN // BATCH}


class Classifier(L.LightningModule):
    def __init__(self, features: int = 20, classes: int = 5, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(features, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.lr_schedulers().step()  # BUG: Lightning steps it too (interval="step"), after the optimizer
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.01)
        steps = EPOCHS * N_TRAIN // BATCH
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.hparams.lr, total_steps=steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class Blobs(L.LightningDataModule):
    def setup(self, stage: str) -> None:
        g = torch.Generator().manual_seed(0)
        w = torch.randn(20, 5, generator=g)
        x = torch.randn(N_TRAIN, 20, generator=g)
        self.train = TensorDataset(x, (x @ w).argmax(dim=1))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=BATCH, shuffle=True)


def model() -> L.LightningModule:
    return Classifier()


def data() -> L.LightningDataModule:
    return Blobs()
