"""The numerics probe: NaN / inf in data, outputs, loss or gradients fail with the op, module and line (the corpus
verdicts on every seed are tests/test_corpus.py's)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import SEEDS, broken_files, rel, run_file
from hint_paths import bad_paths
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import nncheck

PROBE = "numerics"


def _status(path, seed):
    return run_file(path, seed=seed, budget="fast", only=[PROBE]).result(PROBE)


def test_message_names_op_module_and_line():
    from helpers import CHECKS

    r = _status(CHECKS / "numerics_log_of_zero.py", 0)
    assert "`torch.log`" in r.message and "LogCounts" in r.message and "at init (step 0)" in r.message
    assert "numerics_log_of_zero.py:24" in r.measured["line"]
    assert "log1p" in r.hint
    r = _status(CHECKS / "numerics_zero_sum_division.py", 0)
    assert "div" in r.measured["op"] and "1e-8" in r.hint
    r = _status(CHECKS / "numerics_distance_grad.py", 0)
    assert "gradient" in r.message and r.measured["backward_node"] == "SqrtBackward0"
    assert "1e-12" in r.hint


def test_nan_in_data_is_a_data_error_naming_the_feature():
    from helpers import CHECKS

    r = _status(CHECKS / "numerics_nan_feature.py", 0)
    assert r.message.startswith("data error") and "[7]" in r.message
    assert "nan_to_num" in r.hint


def test_divergence_names_the_step():
    from helpers import CHECKS

    r = _status(CHECKS / "numerics_diverging_sgd.py", 0)
    assert r.measured["step"] > 0 and "learning rate" in r.hint


def _batches(n_features: int, g: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
    x = torch.randn(64, n_features, generator=g)
    y = torch.randint(0, 3, (64,), generator=g)
    return [(x[:32], y[:32]), (x[32:], y[32:])]


@settings(max_examples=8, deadline=None)
@given(
    n_features=st.integers(2, 12),
    column=st.integers(0, 11),
    row=st.integers(0, 31),
    value=st.sampled_from([float("nan"), float("inf"), float("-inf")]),
)
def test_any_nonfinite_input_is_reported_with_its_column(n_features, column, row, value):
    column = column % n_features
    batches = _batches(n_features, torch.Generator().manual_seed(0))
    batches[0][0][row, column] = value
    report = nncheck.check(
        model=lambda: nn.Sequential(nn.Linear(n_features, 8), nn.Tanh(), nn.Linear(8, 3)),
        data=batches,
        only=[PROBE],
        budget="fast",
    )
    r = report[PROBE]
    assert r.status.value == "fail" and r.message.startswith("data error")
    assert r.measured["first"]["features"] == [column]


@settings(max_examples=6, deadline=None)
@given(depth=st.integers(1, 4), width=st.integers(2, 32), act=st.sampled_from([nn.ReLU, nn.Tanh, nn.GELU]))
def test_finite_mlps_pass(depth, width, act):
    def model() -> nn.Module:
        layers: list[nn.Module] = [nn.Linear(5, width), act()]
        for _ in range(depth - 1):
            layers += [nn.Linear(width, width), act()]
        return nn.Sequential(*layers, nn.Linear(width, 3))

    report = nncheck.check(model=model, data=_batches(5, torch.Generator().manual_seed(1)), only=[PROBE])
    assert report[PROBE].status.value == "pass", report[PROBE].message


def test_nonfinite_parameter_at_init_fails():
    def model() -> nn.Module:
        m = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
        with torch.no_grad():
            m[2].bias[1] = float("nan")
        return m

    r = nncheck.check(model=model, data=_batches(5, torch.Generator().manual_seed(1)), only=[PROBE])[PROBE]
    assert r.status.value == "fail" and "`model[2].bias`" in r.message


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("path", broken_files(PROBE), ids=rel)
def test_every_module_path_in_messages_evaluates_on_model(path, seed):
    # hints are pasted by users: `model[0].bias`, never `model.0.bias` or a bare `0`
    r = _status(path, seed)
    assert r.hint and r.measured and r.expected, r.message
    bad = bad_paths(path, [r.message, r.hint or "", *r.notes])
    assert not bad, bad


def test_divergence_hint_reruns_learning_rate_with_this_run_s_options():
    from helpers import CHECKS

    r = run_file(CHECKS / "numerics_diverging_sgd.py", seed=1, budget="fast", only=[PROBE]).result(PROBE)
    assert r.status.value == "fail" and r.measured["stage"] in ("output", "loss", "gradient")
    assert "--only learning-rate --seed 1 --budget fast" in r.hint, r.hint


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_nan_only_under_the_train_steps_autocast_names_the_op(seed):
    # the trace's step runs under float16 autocast; nncheck's float32 replay is finite: replayed under the step's dtype
    path = Path(__file__).parent.parent / "checks" / "ts_amp_scaler_skips.py"
    r = run_file(path, seed=seed, budget="fast", only=["numerics"]).result("numerics")
    assert r.status.value == "fail"
    assert "`Tensor.matmul`" in r.message and "under your train_step's autocast(float16)" in r.message, r.message
    assert r.measured["autocast"] == "float16" and "--only train-step" in r.hint


def test_a_nan_made_by_the_train_step_itself_points_to_the_train_step_probe():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)

    def step(model, batch, opt):  # a loss scale that overflows float32, no autocast
        xb, yb = batch
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(xb), yb) * 1e38 * 1e38
        loss.backward()
        opt.step()
        return loss

    report = nncheck.check(
        model=lambda: nn.Linear(4, 1),
        data=[(x[:32], x[:32, :1]), (x[32:], x[32:, :1])],
        train_step=step,
        only=["numerics"],
    )
    r = report["numerics"]
    assert r.status.value == "fail"
    assert "in your train_step;" in r.message and "float32 forward and backward" in r.message, r.message
    assert "only=['train-step']" in r.hint
