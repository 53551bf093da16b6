"""overfit-batch: correct setups memorise 8 samples; broken ones fail, and the two failure cases are told apart."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import SEEDS, broken_files, correct_files, rel, run_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import nncheck
from nncheck.probes.overfit_batch import _ce_floor

PID = "overfit-batch"
CHECKS = {p.name: p for p in broken_files(PID)}


def result(path, seed: int = 0, budget: str = "fast", **probes):
    sr = run_file(path, seed=seed, budget=budget, only=[PID], probes={PID: probes} if probes else None)
    return sr.result(PID)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("path", correct_files(), ids=rel)
def test_correct_setups_memorise(path, seed):
    r = result(path, seed)
    assert r.status.value == "pass", f"{rel(path)} seed {seed}: {r.message}\n{r.hint}"
    assert len(r.series["loss"]["curves"]["your optimizer"]["y"]) == r.measured["steps"] + 1


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("path", broken_files(PID), ids=rel)
def test_broken_setups_fail(path, seed):
    r = result(path, seed)
    assert r.status.value == "fail", f"{rel(path)} seed {seed}: {r.message}"
    assert r.hint and r.measured["final_ratio"] > 0.15
    assert len(r.series["loss"]["curves"]) == 2  # the user's optimizer and the Adam retry


@pytest.mark.parametrize("seed", SEEDS)
def test_low_lr_is_blamed_on_the_optimizer(seed):
    r = result(CHECKS["ob_sgd_lr_too_low.py"], seed)
    assert r.message.startswith("memorises with Adam 3e-4 but not with your optimizer")
    assert "learning-rate" in r.hint and "SGD(lr=1e-05" in r.hint
    assert r.measured["stopped"] == "stalled" and r.measured["adam_stopped"] == "memorised"


@pytest.mark.parametrize(
    ("name", "suspect"),
    [
        ("ob_softmax_before_cross_entropy.py", "`Softmax`"),
        ("ob_mse_broadcast.py", "broadcast to (8, 8)"),
        ("ob_sigmoid_on_regression.py", "`Sigmoid`"),
    ],
)
def test_broken_model_is_blamed_on_the_model_with_the_suspect(name, suspect):
    r = result(CHECKS[name], 0)
    assert r.message.startswith("cannot memorise 8 samples even with Adam 3e-4")
    assert suspect in r.hint


def test_full_budget_keeps_the_verdicts():
    assert result(CHECKS["ob_sgd_lr_too_low.py"], budget="full").status.value == "fail"
    assert result(correct_files()[0], budget="full").status.value == "pass"


def _mlp_setup(width: int, depth: int, classes: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 12, generator=g)
    y = torch.randint(0, classes, (64,), generator=g)  # random labels: only memorisation can fit them

    def model() -> nn.Module:
        layers: list[nn.Module] = []
        d = 12
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.ReLU()]
            d = width
        return nn.Sequential(*layers, nn.Linear(d, classes))

    return model, [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    width=st.integers(16, 64),
    depth=st.integers(1, 3),
    classes=st.integers(2, 10),
    seed=st.integers(0, 1000),
)
def test_any_small_mlp_memorises_random_labels(width, depth, classes, seed):
    model, data = _mlp_setup(width, depth, classes, seed)
    opt = lambda p: torch.optim.Adam(p, lr=1e-3)  # noqa: E731
    report = nncheck.check(model=model, data=data, optimizer=opt, only=[PID], budget="fast", seed=seed)
    r = report[PID]
    assert r.status.value == "pass", r.message


def test_zero_learning_rate_fails_on_the_optimizer():
    model, data = _mlp_setup(32, 2, 4, 0)
    report = nncheck.check(
        model=model, data=data, optimizer=lambda p: torch.optim.SGD(p, lr=0.0), only=[PID], budget="fast"
    )
    r = report[PID]
    assert r.status.value == "fail" and "not with your optimizer" in r.message
    assert r.measured["steps"] == 100  # stalled at the first check, not 250 steps of nothing


def test_diverging_optimizer_is_reported():
    model, data = _mlp_setup(32, 2, 4, 0)
    report = nncheck.check(
        model=model, data=data, optimizer=lambda p: torch.optim.SGD(p, lr=1e6), only=[PID], budget="fast"
    )
    r = report[PID]
    assert r.status.value == "fail" and "not with your optimizer" in r.message
    assert r.measured["stopped"] == "diverged" and "too high" in r.hint


def test_label_smoothing_floor_is_not_a_false_alarm():
    model, data = _mlp_setup(64, 2, 5, 0)
    report = nncheck.check(
        model=model,
        data=data,
        loss=nn.CrossEntropyLoss(label_smoothing=0.2),
        optimizer=lambda p: torch.optim.Adam(p, lr=1e-3),
        only=[PID],
        budget="full",
    )
    r = report[PID]
    assert r.status.value == "pass", r.message
    assert r.measured["loss_floor"] == pytest.approx(_ce_floor_value(0.2, 5))


def _ce_floor_value(eps: float, c: int) -> float:
    hit, miss = 1 - eps + eps / c, eps / c
    return -(hit * math.log(hit) + (c - 1) * miss * math.log(miss))


def test_ce_floor_without_smoothing_is_zero():
    class Ctx:
        loss_fn = nn.CrossEntropyLoss()

    assert _ce_floor(Ctx(), 10) == 0.0  # type: ignore[arg-type]


def test_already_zero_loss_is_skipped():
    x = torch.randn(16, 4)
    data = [(x, torch.zeros(16, 1))]
    model = nn.Linear(4, 1)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
    report = nncheck.check(model=model, data=data, loss=nn.MSELoss(), only=[PID])
    assert report[PID].status.value == "skip"
