"""input-independent: real inputs must beat blanked inputs; input-ignoring models fail, shuffled labels warn."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import SEEDS, broken_files, rel, run_file
from torch import nn

import nncheck
from nncheck.probes.input_independent import advantage, blank, identical, rel_gap

PID = "input-independent"


# ---------------------------------------------------------------------------------------------- pure helpers
def test_blank_float_int_bool():
    x = torch.randn(4, 3)
    assert torch.equal(blank(x), torch.zeros(4, 3))
    tokens = torch.tensor([[5, 5, 2], [5, 1, 5]])
    assert torch.equal(blank(tokens), torch.full((2, 3), 5))  # the most frequent token
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert torch.equal(blank(mask), torch.ones(2, 3, dtype=torch.long))  # masks keep their 'keep' value
    b = torch.tensor([True, False])
    assert torch.equal(blank(b), b)


def test_gap_and_advantage():
    assert rel_gap(1.0, 2.0) == pytest.approx(0.5)
    assert rel_gap(math.nan, 1.0) == -math.inf
    assert rel_gap(1.0, math.inf) == math.inf
    assert advantage(0.02, -0.1) == pytest.approx(0.12)  # A's handicap at init is credited back
    assert advantage(0.02, 0.1) == pytest.approx(0.02)  # a head start at init is not
    assert identical([1.0, 0.5], [1.0, 0.5 + 1e-9])
    assert not identical([1.0, 0.5], [1.0, 0.49])


# ---------------------------------------------------------------------------------------------- corpus
@pytest.mark.parametrize("path", broken_files(PID), ids=rel)
def test_broken_setups_explain_and_plot(path):
    r = run_file(path, budget="full", only=[PID]).result(PID)
    assert r.hint and r.measured and r.expected, r.message
    assert "real inputs (A), train" in r.series["loss"]["curves"]


def test_input_ignoring_model_stops_early_with_identical_losses():
    path = next(p for p in broken_files(PID) if p.name == "ii_input_zeroed_in_forward.py")
    r = run_file(path, only=[PID]).result(PID)
    assert r.status.value == "fail"
    assert r.measured["identical_losses"] is True
    assert r.measured["stopped_early"] == "identical losses"
    assert r.measured["steps"] <= 20
    # the re-run line for the probes that explain a vanished signal, as the user runs it
    assert f"run `nncheck run {path} --only activations,gradient-flow`" in r.hint, r.hint


@pytest.mark.parametrize("seed", SEEDS)
def test_a_train_step_that_blanks_its_inputs_fails_in_the_fast_budget(seed):
    # the blank copy steps with the setup's train_step too, and runs its first steps although the losses at init
    # (nncheck's forward of the real batch) differ: the step zeroes the inputs before the model
    path = next(p for p in broken_files(PID) if p.name == "ts_input_keep_drop_swapped.py")
    r = run_file(path, seed=seed, budget="fast", only=[PID]).result(PID)
    assert r.status.value == "fail", r.message
    assert r.measured["identical_losses"] is True and r.measured["steps"] == 5


def _zeroing_step(model, batch, optimizer):
    x, y = batch
    optimizer.zero_grad(set_to_none=True)
    loss = nn.functional.mse_loss(model(x * 0), y)
    loss.backward()
    optimizer.step()
    return loss


@pytest.mark.parametrize(("step", "want"), [(None, "pass"), (_zeroing_step, "fail")])
def test_a_single_batch_side_by_side_run_uses_the_train_step(step, want):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    report = nncheck.check(
        model=lambda: nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1)),
        data=[(x, x.sum(1, keepdim=True))],
        optimizer=lambda p: torch.optim.Adam(p, lr=1e-2),
        train_step=step,
        only=[PID],
        budget="full",
    )
    assert report[PID].status.value == want, report[PID].message


# ---------------------------------------------------------------------------------------------- API paths
def _dict_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 6, generator=g)
    y = (x[:, 0] > 0).long()
    return [{"features": x[i : i + 32], "label": y[i : i + 32]} for i in range(0, 128, 32)]


class _DictNet(nn.Module):
    def __init__(self, ignore: bool) -> None:
        super().__init__()
        self.ignore = ignore
        self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features * 0 if self.ignore else features)


def _dict_forward(model, batch):
    # the integer labels live in the batch: map_inputs blanks them too, so the probe must take targets from the
    # unperturbed batch
    return model(features=batch["features"]), batch["label"]


@pytest.mark.parametrize("ignore, want", [(False, "pass"), (True, "fail")])
def test_dict_batches_with_custom_forward(ignore, want):
    report = nncheck.check(
        model=lambda: _DictNet(ignore),
        data=_dict_data,
        forward=_dict_forward,
        optimizer=lambda p: torch.optim.Adam(p, lr=1e-2),
        only=[PID],
        budget="fast",
    )
    r = report[PID]
    assert r.status.value == want, r.message


def test_single_batch_is_split_into_train_and_heldout():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    y = x.sum(1, keepdim=True)
    report = nncheck.check(
        model=lambda: nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1)),
        data=[(x, y)],
        optimizer=lambda p: torch.optim.Adam(p, lr=1e-2),
        only=[PID],
        budget="full",
    )
    r = report[PID]
    assert r.status.value == "pass", r.message
    assert r.measured["train_batches"] == 1 and "heldout_advantage" in r.measured


# ---------------------------------------------------------------------------------------------- fix round
P, D, C = 4, 32, 4


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(D)
        self.attn = nn.MultiheadAttention(D, 2, dropout=0.1, batch_first=True)
        self.ln2 = nn.LayerNorm(D)
        self.mlp = nn.Sequential(nn.Linear(D, 2 * D), nn.GELU(), nn.Dropout(0.1), nn.Linear(2 * D, D))
        self.drop = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.drop(self.attn(h, h, h, need_weights=False)[0])
        return x + self.drop(self.mlp(self.ln2(x)))


class ViT(nn.Module):
    """A correct tiny ViT (patches, cls token, pre-LN blocks, label smoothing, AdamW groups)."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(1, D, P, stride=P)
        self.cls = nn.Parameter(torch.zeros(1, 1, D))
        self.pos = nn.Parameter(torch.randn(1, 17, D) * 0.02)
        self.blocks = nn.Sequential(Block(), Block())
        self.norm = nn.LayerNorm(D)
        self.head = nn.Linear(D, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.patch(x).flatten(2).transpose(1, 2)
        h = torch.cat([self.cls.expand(h.shape[0], -1, -1), h], 1) + self.pos
        return self.head(self.norm(self.blocks(h))[:, 0])


def quadrants():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 1, 16, 16, generator=g) * 0.5
    y = torch.randint(0, C, (256,), generator=g)
    for i, c in enumerate(y.tolist()):
        r, s = divmod(c, 2)
        x[i, 0, r * 8 : r * 8 + 8, s * 8 : s * 8 + 8] += 1.0
    return [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]


def adamw_groups(params):
    params = list(params)
    decay = [p for p in params if p.ndim >= 2 and p.shape[0] != 1]
    rest = [p for p in params if not (p.ndim >= 2 and p.shape[0] != 1)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}], lr=1e-3)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_correct_vit_whose_heldout_loss_dips_early_passes(seed):
    """It warned "labels may be misaligned" (held-out advantage -0.11 at step 25 with 3 training batches); with the
    memorisation stop not before step 60 and the confirmation run on 7 batches it passes."""
    r = nncheck.check(
        model=ViT,
        data=quadrants,
        loss=nn.CrossEntropyLoss(label_smoothing=0.1),
        optimizer=adamw_groups,
        only=[PID],
        budget="full",
        seed=seed,
    )[PID]
    assert r.status.value == "pass", r.message
    if "confirm_heldout_advantage" in r.measured:
        assert r.measured["confirm_train_batches"] == 7 and r.measured["confirm_heldout_advantage"] >= -0.03


@pytest.mark.parametrize("seed", SEEDS)
def test_shuffled_labels_are_confirmed_on_every_cached_batch(seed):
    path = next(p for p in broken_files(PID) if p.name == "ii_labels_shuffled.py")
    r = run_file(path, seed=seed, budget="full", only=[PID]).result(PID)
    assert r.status.value == "warn", r.message
    assert r.measured["confirm_train_batches"] == 7 and r.measured["confirm_steps"] == 180
    assert r.measured["confirm_heldout_advantage"] < -0.03 and "confirmed on 7 training batches" in r.message


def test_suggested_commands_for_an_api_setup_are_python_calls():
    report = nncheck.check(
        model=lambda: _DictNet(True),
        data=_dict_data,
        forward=_dict_forward,
        optimizer=lambda p: torch.optim.Adam(p, lr=1e-2),
        only=[PID],
        seed=1,
    )
    r = report[PID]
    assert r.status.value == "fail" and r.measured["identical_losses"], r.message
    assert "run `nncheck.check(..., only=['activations', 'gradient-flow'], seed=1)`" in r.hint, r.hint


@pytest.mark.parametrize("seed", SEEDS)
def test_the_fast_budget_is_inconclusive_rather_than_wrong(seed):
    """The fast budget stops at 10 steps: shuffled labels (a warn under the full budget) end as a skip that points to
    the full budget; models that ignore their input still fail at step 5 (identical losses)."""
    shuffled = next(p for p in broken_files(PID) if p.name == "ii_labels_shuffled.py")
    r = run_file(shuffled, seed=seed, budget="fast", only=[PID]).result(PID)
    assert r.status.value == "skip" and "inconclusive" in r.message and "--budget" not in r.message, r.message
    zeroed = next(p for p in broken_files(PID) if p.name == "ii_input_zeroed_in_forward.py")
    r = run_file(zeroed, seed=seed, budget="fast", only=[PID]).result(PID)
    assert r.status.value == "fail" and r.measured["steps"] == 5 and r.measured["identical_losses"], r.message


def test_a_fast_learner_passes_early_against_the_best_constant():
    """examples/regression.py beats the best constant prediction (the target mean) within the trace's first steps: no
    blank copy trains beyond the 5 steps of the identical-losses check."""
    r = run_file("examples/regression.py", budget="full", only=[PID]).result(PID)
    assert r.status.value == "pass" and "best constant" in r.message, r.message
    assert r.measured["heldout_gap_to_constant"] >= 0.03 and r.measured["train_gap_to_constant"] >= 0.05
