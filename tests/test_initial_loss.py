"""initial-loss: what the corpus test does not check: hints, the logit scale on random models, held-out setups,
the verdict on hand-built measurements."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from helpers import SEEDS, broken_files, rel, run_file
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import nncheck
from nncheck.probes.initial_loss import FinalActivation, Measurement, Params, initial_message, judge

PID = "initial-loss"


@pytest.mark.parametrize("path", broken_files(PID), ids=rel)
def test_broken_setups_fail_with_a_hint_where_to_look(path):
    r = run_file(path, seed=0, budget="fast", only=[PID]).result(PID)
    assert r.status.value == "fail", f"{rel(path)}: {r.message}"
    assert r.measured["ratio_to_zero"] > 2
    if "no module outputs it" in r.message:  # the output is computed in forward(): the hint says where to look
        assert "temperature" in r.hint and "weight.mul_(" not in r.hint
    else:
        assert "weight.mul_(" in r.hint


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


# --- held-out regressions (setups in tests/setups/) ------------------------------------------------------------

SETUPS = Path(__file__).parent / "setups"


def result(path, seed: int, budget: str = "fast"):
    return run_file(path, seed=seed, budget=budget, only=[PID]).result(PID)


@pytest.mark.parametrize("seed", SEEDS)
def test_negative_loss_ratio_is_not_applicable(seed):
    """Held-out a_poisson_counts.py: Poisson NLL is negative at init; a ratio like -2.24x means nothing."""
    r = result(SETUPS / "poisson_counts.py", seed)
    assert r.status.value == "pass" and "not applicable" in r.message, r.message
    assert not re.search(r"-?[\d.]+x\b", r.message) and "ratio_to_zero" not in r.measured


@pytest.mark.parametrize("seed", SEEDS)
def test_sigmoid_output_is_compared_with_its_activation_of_zero(seed):
    """Held-out a_conv_autoencoder.py: MSE after a Sigmoid; the uninformed output is 0.5, not 0 (was warn)."""
    r = result(SETUPS / "conv_autoencoder.py", seed)
    assert r.status.value == "pass", r.message
    assert "a constant 0.5 output (Sigmoid of zero)" in r.message and r.measured["reference_output"] == 0.5


@pytest.mark.parametrize("budget", ["fast", "full"])
@pytest.mark.parametrize("seed", SEEDS)
def test_default_init_regression_is_not_a_flaky_warn(seed, budget):
    """Held-out a_tcn_regression.py: MSE ratios 0.51-1.31 across seeds with a default init (was warn on seed 2)."""
    r = result(SETUPS / "tcn_regression.py", seed, budget)
    assert r.status.value == "pass", r.message


def test_scaled_layer_before_a_sigmoid_is_flagged_with_a_hint_that_helps():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 8, generator=g)
    y = torch.rand(128, 1, generator=g)

    def model() -> nn.Module:
        net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1), nn.Sigmoid())
        with torch.no_grad():
            net[2].weight.mul_(30.0)
        return net

    data = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 128, 32)]
    r = nncheck.check(model=model, data=data, loss=nn.MSELoss(), only=[PID])[PID]
    assert r.status.value in ("warn", "fail"), r.message
    assert "Sigmoid of zero" in r.message and "`model[3]`" in r.hint and "model[2].weight.mul_(0.1)" in r.hint
    assert "on the module your `model()` returns" in r.hint


def test_ratios_use_three_significant_digits():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    y = 1000 + torch.randn(64, 1, generator=g)  # far from 0: the ratio to an all-zero output is ~0.001
    data = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]
    r = nncheck.check(model=lambda: nn.Linear(4, 1), data=data, loss=nn.MSELoss(), only=[PID])[PID]
    ratio = re.search(r"\(([-\d.e+]+)x\)", r.message)
    assert ratio and ratio.group(1) != "0.00" and len(ratio.group(1).lstrip("0.").replace(".", "")) <= 4, r.message
    assert float(ratio.group(1)) == pytest.approx(r.measured["ratio_to_zero"], rel=5e-3)


# --- the verdict on hand-built measurements (no model) ----------------------------------------------------------

SIGMOID = FinalActivation("Sigmoid", "model[3]", 0.5)


@pytest.mark.parametrize(
    ("l0", "kw", "p", "status", "text"),
    [
        (4.2, {}, {}, "fail", "4.2 is 2.1x the loss of an all-zero output (2) (output layer: model.head)"),
        (4.2, {"layer": None}, {}, "fail", "a temperature"),  # no module makes the output: look in forward()
        (
            4.2,
            {"loss_kind": "mse", "layer": "model[2]", "activation": SIGMOID},
            {},
            "fail",
            "model[2].weight.mul_(0.1)",
        ),
        (2.6, {}, {}, "warn", "1.3x the loss of an all-zero output"),
        (2.6, {"loss_kind": "mse"}, {}, "pass", "(1.3x) (output layer: model.head)"),  # within 1.25^2 for MSE
        (0.7, {}, {}, "warn", "below half the best constant prediction's (1.6)"),
        (0.4, {}, {"low_ratio": 0.3}, "warn", "below 0.3x the best constant prediction's"),
        (float("nan"), {}, {}, "fail", "Run `nncheck run x.py --only numerics`"),
        (-0.5, {"l_zero": -0.2}, {}, "pass", "is not applicable: this loss takes negative values"),
    ],
)
def test_judge(l0, kw, p, status, text):
    kw = {"l_zero": 2.0, "l_prior": 1.6, "output_std": 1.0, "batches": 4, "loss_kind": "ce", "log_c": None, **kw}
    m = Measurement(l0=l0, **{"layer": "model.head", "activation": None, **kw})
    r = judge(m, Params(**p), lambda *ids: "nncheck run x.py --only " + ",".join(ids)).result(initial_message(m))
    assert r.status.value == status and (text in r.message or text in r.hint), f"{r.message}\n{r.hint}"
    if math.isfinite(l0) and l0 > 0:
        assert r.measured["ratio_to_zero"] == pytest.approx(l0 / 2.0)
        if status == "fail":  # the expected maximum is the line that was crossed
            assert r.expected["L0_max"] == pytest.approx(4.0)
    else:  # not finite, or negative: no ratio (and no maximum for a loss that takes negative values)
        assert "ratio_to_zero" not in r.measured and ("L0_max" in r.expected) == (l0 != l0)
