"""layer-order: dropout -> BatchNorm warns, BatchNorm / dropout on the output and BatchNorm on one sample fail;
correct setups (residual blocks with dropout and BatchNorm in different branches included) never fail."""

from __future__ import annotations

import pytest
import torch
from helpers import CHECKS, broken_files, rel, run_file
from hint_paths import bad_paths
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import nncheck

PID = "layer-order"


def _data(n_features: int = 6, batch: int = 16):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2 * batch, n_features, generator=g)
    y = torch.randint(0, 3, (2 * batch,), generator=g)
    return [(x[:batch], y[:batch]), (x[batch:], y[batch:])]


def _check(model) -> nncheck.Result:
    return nncheck.check(model=model, data=_data(), only=[PID]).result(PID)


class Branches(nn.Module):
    """A residual block: dropout on one branch, BatchNorm on the other, summed (optionally in the other order)."""

    def __init__(self, width: int, p: float, swap: bool) -> None:
        super().__init__()
        self.fc = nn.Linear(width, width)
        self.drop = nn.Dropout(p)
        self.proj = nn.Linear(width, width, bias=False)
        self.bn = nn.BatchNorm1d(width)
        self.swap = swap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.drop(torch.relu(self.fc(x)))
        b = self.bn(self.proj(x))
        return torch.relu(b + a if self.swap else a + b)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(width=st.integers(4, 16), p=st.floats(0.05, 0.7), swap=st.booleans(), blocks=st.integers(1, 3))
def test_dropout_and_batchnorm_in_different_branches_pass(width, p, swap, blocks):
    def model():
        return nn.Sequential(
            nn.Linear(6, width), *(Branches(width, p, swap) for _ in range(blocks)), nn.Linear(width, 3)
        )

    r = _check(model)
    assert r.status.value == "pass", r.message
    assert r.measured["dropout_before_bn"] == []


ACTIVATIONS = [nn.ReLU, nn.GELU, nn.Tanh, nn.Identity]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(width=st.integers(4, 16), p=st.floats(0.05, 0.7), act=st.sampled_from(ACTIVATIONS), act_between=st.booleans())
def test_dropout_feeding_batchnorm_warns_through_elementwise_ops(width, p, act, act_between):
    between = [act()] if act_between else []

    def model():
        return nn.Sequential(
            nn.Linear(6, width, bias=False), nn.Dropout(p), *between, nn.BatchNorm1d(width), nn.Linear(width, 3)
        )

    r = _check(model)
    assert r.status.value == "warn", r.message
    assert r.measured["dropout_before_bn"] == [["model[1]", f"model[{2 + len(between)}]"]]


class Untraceable(nn.Module):
    """Data-dependent control flow defeats torch.fx: the hook graph (tensor identity) must still link the layers."""

    def __init__(self, final_bn: bool) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 8)
        self.drop = nn.Dropout(0.5)
        self.act = nn.ReLU(inplace=True)
        self.bn = nn.BatchNorm1d(8)
        self.head = nn.Linear(8, 3)
        self.out_bn = nn.BatchNorm1d(3) if final_bn else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if float(x.abs().max()) > 1e9:  # not traceable
            x = x.clamp(-1e9, 1e9)
        h = self.bn(self.act(self.drop(self.fc(x))))
        return self.out_bn(self.head(h)).view(x.shape[0], 3)


def test_hook_fallback_links_modules_by_tensor_identity():
    r = _check(lambda: Untraceable(final_bn=False))
    assert r.measured["graph"] == "hooks"
    assert r.status.value == "warn" and r.measured["dropout_before_bn"] == [["model.drop", "model.bn"]], r.message
    r = _check(lambda: Untraceable(final_bn=True))
    assert r.measured["graph"] == "hooks"
    assert r.status.value == "fail" and r.measured["final_op"] == "model.out_bn", r.message


def test_high_dropout_rate_warns_and_bias_before_batchnorm_is_a_note():
    r = _check(lambda: nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.9), nn.Linear(8, 3)))
    assert r.status.value == "warn" and "p >= 0.8" in r.message
    assert r.measured["bias_before_bn"] == ["model[0]"] and any("bias=False" in n for n in r.notes)
    r = _check(lambda: nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 3)))
    assert r.status.value == "pass" and r.notes


def test_batchnorm_on_output_behind_a_reshape_fails():
    r = _check(lambda: nn.Sequential(nn.Linear(6, 3), nn.BatchNorm1d(3), nn.Flatten()))
    assert r.status.value == "fail" and r.measured["final_op"] == "model[1]"
    assert "`model[1]`" in r.hint


def test_model_without_dropout_or_batchnorm_skips():
    r = _check(lambda: nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)))
    assert r.status.value == "skip"


def test_batchnorm_on_output_with_a_custom_loss_only_warns():
    # SimSiam / BYOL projector heads end in BatchNorm on purpose; nncheck cannot judge a loss it does not know
    def cosine_loss(out, y):
        return -torch.nn.functional.normalize(out, dim=1)[:, 0].mean()

    r = nncheck.check(
        model=lambda: nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3, bias=False), nn.BatchNorm1d(3)),
        data=_data(),
        loss=cosine_loss,
        only=[PID],
    ).result(PID)
    assert r.status.value == "warn" and "final output" in r.message, r.message


# ---------------------------------------------------------------------------------------------- fix round: paths
@pytest.mark.parametrize("path", broken_files(PID), ids=rel)
def test_every_module_path_in_messages_evaluates_on_model(path):
    # hints are pasted by users: `model[0].bias`, never `model.0.bias` or a bare `0` (statuses: tests/test_corpus.py)
    r = run_file(path, seed=0, budget="fast", only=[PID]).result(PID)
    assert r.hint and r.measured and r.expected, r.message
    bad = bad_paths(path, [r.message, r.hint or "", *r.notes])
    assert not bad, bad


def test_dropout_p1_fails_and_names_the_drop_probability():
    r = run_file(CHECKS / "lo_dropout_p1_keep_prob.py", seed=0, budget="fast", only=[PID]).result(PID)
    assert r.status.value == "fail" and "`model[2]` (Dropout p=1) has p >= 1" in r.message, r.message
    assert "`model[2] = nn.Dropout(p=0.1)`" in r.hint and "keep_prob" in r.hint


@pytest.mark.parametrize("p", [0.8, 0.95])
def test_dropout_below_one_still_only_warns(p):
    r = _check(lambda: nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(p), nn.Linear(16, 3)))
    assert r.status.value == "warn" and "has p >= 0.8" in r.message, r.message
