"""initial-loss: correct setups start near an uninformed model's loss; logits blown up at init fail."""

from __future__ import annotations

import pytest
import torch
from helpers import SEEDS, broken_files, correct_files, rel, run_file
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import nncheck

PID = "initial-loss"


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("path", correct_files(), ids=rel)
def test_correct_setups_pass(path, seed):
    r = run_file(path, seed=seed, budget="fast", only=[PID]).result(PID)
    assert r.status.value == "pass", f"{rel(path)} seed {seed}: {r.status.value}: {r.message}"


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("path", broken_files(PID), ids=rel)
def test_broken_setups_fail(path, seed):
    r = run_file(path, seed=seed, budget="fast", only=[PID]).result(PID)
    assert r.status.value == "fail", f"{rel(path)} seed {seed}: {r.message}"
    assert "weight.mul_(" in r.hint and r.measured["ratio_to_zero"] > 2


@settings(max_examples=10, deadline=None)
@given(scale=st.sampled_from([1.0, 30.0]), classes=st.integers(3, 20), seed=st.integers(0, 1000))
def test_verdict_follows_the_logit_scale(scale, classes, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(128, 10, generator=g)
    y = torch.randint(0, classes, (128,), generator=g)

    def model() -> nn.Module:
        net = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, classes))
        with torch.no_grad():
            net[-1].weight.mul_(scale)
        return net

    data = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 128, 32)]
    r = nncheck.check(model=model, data=data, only=[PID], seed=seed)[PID]
    assert r.status.value == ("pass" if scale == 1.0 else "fail"), r.message
