"""PyTorch Lightning setups: configure_optimizers' return forms, an epoch-interval scheduler, the training_step loss,
and clear errors for what nncheck cannot run (the corpus runs examples/lightning_module.py, checks/lightning_*.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import nncheck
from nncheck.context import Context
from nncheck.lightning import EveryN, split_configuration
from nncheck.setup import SetupError, setup_from_kwargs

L = pytest.importorskip("lightning")


class Net(L.LightningModule):
    def __init__(self, conf: str = "dict", manual: bool = False, direct: bool = False) -> None:
        super().__init__()
        self.conf, self.direct = conf, direct
        self.automatic_optimization = not manual
        self.body = nn.Linear(8, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).relu())

    def training_step(self, batch, batch_idx):
        x, y = batch
        out = self.head(self.body(x).relu()) if self.direct else self(x)
        loss = F.cross_entropy(out, y)
        self.log("loss", loss)
        return {"loss": loss}

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        if self.conf == "plain":
            return opt
        if self.conf == "lists":
            return [opt], [sched]
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


class Data(L.LightningDataModule):
    def setup(self, stage: str) -> None:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(96, 8, generator=g)
        self.ds = TensorDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long())

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.ds, batch_size=16)


def context(**kw) -> Context:
    ctx = Context(setup_from_kwargs(model=lambda: Net(**kw), data=Data, settings={"total_steps": 60}))
    ctx.preflight(time_steps=False)
    return ctx


def test_configure_optimizers_forms():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    assert split_configuration(opt) == (opt, None, {})
    assert split_configuration(([opt], [sched])) == (opt, sched, {})
    assert split_configuration({"optimizer": opt, "lr_scheduler": sched}) == (opt, sched, {})
    assert split_configuration([{"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}]) == (
        opt,
        sched,
        {"interval": "step"},
    )


def test_epoch_interval_steps_once_per_epoch_and_the_loss_is_training_step():
    ctx = context()
    assert ctx.loss_name == "training_step" and len(ctx.batches(8)) == 6
    curve = ctx.lr_curve()
    assert curve is not None and curve.horizon == 60
    lrs = curve.group(0)
    # StepLR(step_size=2) stepped once per epoch of 6 batches: the LR halves every 12 steps
    assert lrs[0] == lrs[11] == pytest.approx(0.1)
    assert lrs[12] == pytest.approx(0.05) and lrs[24] == pytest.approx(0.025)
    opt = ctx.optimizer(ctx.fresh_model())
    assert type(opt).__name__ == "SGD" and opt.param_groups[0]["lr"] == pytest.approx(0.1)
    out, y = ctx.forward(ctx.fresh_model(), ctx.batch())
    assert math.isclose(float(ctx.loss(out, y).detach()), float(F.cross_entropy(out, y).detach()), rel_tol=1e-6)


def test_plain_optimizer_has_no_schedule_and_lists_step_per_epoch():
    assert context(conf="plain").lr_curve() is None
    ctx = context(conf="lists")  # Lightning's default interval is "epoch"
    _, sched = ctx._configured(ctx.fresh_model())
    assert isinstance(sched, EveryN) and sched.n == 6


def test_what_nncheck_cannot_run_is_a_setup_error():
    with pytest.raises(SetupError, match="manual optimisation"):
        context(manual=True)
    with pytest.raises(SetupError, match=r"does not call `self\(x\)`"):
        context(direct=True)


def test_the_whole_battery_runs_without_a_trainer():
    report = nncheck.check(model=Net, data=Data(), settings={"total_steps": 60}, budget="fast")
    statuses = {r.id: r.status.value for r in report.setups[0].results}
    assert "error" not in statuses.values(), report.setups[0].text()
    assert statuses["lr-schedule"] in ("pass", "fail", "warn")


class SteppingNet(Net):
    """A training_step that steps the scheduler itself under automatic optimisation (Lightning steps it too)."""

    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        self.lr_schedulers().step()
        return out


def test_a_scheduler_stepped_inside_training_step_fails_train_step_and_is_put_back():
    report = nncheck.check(model=SteppingNet, data=Data(), settings={"total_steps": 60}, only=["train-step"])
    r = report["train-step"]
    assert r.status.value == "fail" and "self.lr_schedulers().step()" in r.message, r.message
    assert r.measured["scheduler_steps_per_training_step"] == 1 and "'interval': 'step'" in r.hint
    ctx = context()
    ctx.batch_loss(ctx.pristine_model(), ctx.batch())
    assert "lr_schedulers" not in vars(ctx.loss_fn.template)  # type: ignore[attr-defined]  # its own method again
    ok = nncheck.check(model=Net, data=Data(), settings={"total_steps": 60}, only=["train-step"])
    assert ok["train-step"].status.value == "skip"
