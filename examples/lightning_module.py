"""A correct PyTorch Lightning setup: a LightningModule, a LightningDataModule and a scheduler in configure_optimizers.

nncheck reads the Lightning objects directly (no Trainer is run):
- `model` returns the LightningModule; its `forward` gives the outputs probes look at, its `training_step` is the loss
  (nncheck calls it with the model's output in place of `self(x)`), its `configure_optimizers` the optimizer and the
  scheduler (here AdamW with a OneCycleLR stepped per batch, `interval="step"`);
- `data` returns the LightningDataModule; nncheck calls `prepare_data()`, `setup("fit")` and `train_dataloader()`;
- `nncheck = {"total_steps": ...}` gives the run's length for the schedule (epochs x batches per epoch).
Install the extra: `pip install torch==2.13.0 -e ".[lightning]"`.
"""

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

CORRECT = True
EXPECT: dict[str, str] = {}

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
