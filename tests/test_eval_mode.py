"""eval-mode: randomness left on in eval mode, BatchNorm stuck in train or eval mode, and a mode that never reaches
dropout / BatchNorm are flagged; correct setups pass."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import SEEDS, broken_files, rel, run_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import nncheck

PID = "eval-mode"


@pytest.mark.parametrize("path", broken_files(PID), ids=rel)
def test_broken_setups_say_what_and_how_to_fix(path):
    r = run_file(path, budget="fast", only=[PID]).result(PID)
    assert r.hint and r.measured and r.expected, r.message


def _data(batch: int = 16):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2 * batch, 8, generator=g)
    y = torch.randint(0, 3, (2 * batch,), generator=g)
    return [(x[:batch], y[:batch]), (x[batch:], y[batch:])]


def _check(model) -> nncheck.Result:
    return nncheck.check(model=model, data=_data(), only=[PID]).result(PID)


class Net(nn.Module):
    def __init__(self, width: int, p: float, bn: bool, functional: bool) -> None:
        super().__init__()
        self.fc = nn.Linear(8, width, bias=not bn)
        self.bn = nn.BatchNorm1d(width) if bn else nn.Identity()
        self.drop = nn.Dropout(p)
        self.head = nn.Linear(width, 3)
        self.p, self.functional = p, functional

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.fc(x)))
        h = F.dropout(h, self.p) if self.functional else self.drop(h)  # functional: the missing `training=` bug
        return self.head(h)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(width=st.integers(4, 32), p=st.floats(0.05, 0.9), bn=st.booleans(), functional=st.booleans())
def test_dropout_module_passes_and_functional_dropout_without_training_fails(width, p, bn, functional):
    r = _check(lambda: Net(width, p, bn, functional))
    assert r.status.value == ("fail" if functional else "pass"), r.message
    if functional:
        assert r.measured["random_in"] == ["<model>"] and "training=self.training" in r.hint
    else:
        assert r.measured["eval_vs_eval_diff"] == 0.0 and r.measured["train_vs_eval_diff"] > 0


class Noisy(nn.Module):
    """Gaussian-noise augmentation that forgets to check self.training."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.1 * torch.randn_like(x)


def test_random_op_is_located_in_the_innermost_module():
    r = _check(lambda: nn.Sequential(nn.Linear(8, 16), nn.Sequential(nn.ReLU(), Noisy()), nn.Linear(16, 3)))
    assert r.status.value == "fail" and r.measured["random_in"] == ["1.1"], r.message


class AlwaysEval(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 16)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(16, 3)

    def train(self, mode: bool = True) -> AlwaysEval:
        return super().train(False)  # the mode never reaches the dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(torch.relu(self.fc(x))))


def test_mode_that_never_reaches_dropout_warns():
    r = _check(AlwaysEval)
    assert r.status.value == "warn" and r.measured["train_vs_eval_diff"] == 0.0, r.message
    assert "`model.drop`" in r.message


class FrozenBN(nn.Module):
    """Deliberately frozen BatchNorm (eval mode, no trainable affine): the fine-tuning recipe done right."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 16, bias=False)
        self.bn = nn.BatchNorm1d(16).requires_grad_(False)
        self.head = nn.Linear(16, 3)

    def train(self, mode: bool = True) -> FrozenBN:
        super().train(mode)
        self.bn.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(self.fc(x))))


def test_deliberately_frozen_batchnorm_is_a_note_not_a_failure():
    r = _check(FrozenBN)
    assert r.status.value == "pass" and any("frozen" in n for n in r.notes), r.message
    assert r.measured["bn_static_in_train"] == []


def test_model_without_dropout_or_batchnorm_passes_with_a_note():
    r = _check(lambda: nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)))
    assert r.status.value == "pass" and r.notes


# ---------------------------------------------------------------------------------------------- fix round
@pytest.mark.parametrize("seed", SEEDS)
def test_batchnorm_momentum_zero_fails_with_the_keras_hint(seed):
    """num_batches_tracked counts up with momentum=0, but the statistics never move."""
    path = next(p for p in broken_files(PID) if p.name == "em_batchnorm_momentum_zero.py")
    r = run_file(path, seed=seed, budget="fast", only=[PID]).result(PID)
    assert r.status.value == "fail", r.message
    assert r.measured["bn_momentum_zero"] == ["1"]
    assert "1 - Keras momentum" in r.hint and "0.1 (default) or 0.01" in r.hint and "`model[1]`" in r.hint


@pytest.mark.parametrize("momentum", [0.1, 0.01, None])
def test_batchnorm_with_nonzero_or_cumulative_momentum_passes(momentum):
    r = _check(
        lambda: nn.Sequential(nn.Linear(8, 16, bias=False), nn.BatchNorm1d(16, momentum=momentum), nn.Linear(16, 3))
    )
    assert r.status.value == "pass", r.message


@pytest.mark.parametrize("seed", SEEDS)
def test_bn_forced_to_eval_names_the_override_and_the_line(seed):
    path = next(p for p in broken_files(PID) if p.name == "em_batchnorm_stuck_in_eval.py")
    r = run_file(path, seed=seed, budget="fast", only=[PID]).result(PID)
    assert r.status.value == "fail", r.message
    assert "`Backbone.train()`" in r.hint and "`self.bn.eval()`" in r.hint and "`model[0].bn`" in r.hint
    assert "call `super().train(mode)`" not in r.hint  # it already does: the bug is the .eval() call


def test_module_paths_are_python_expressions():
    r = run_file(next(p for p in broken_files(PID) if p.name == "em_train_override_never_evals.py"), only=[PID])
    text = r.result(PID).message + r.result(PID).hint
    assert "`model[" in text and "`2.bn`" not in text


def test_randomness_in_the_setups_forward_is_not_the_models():
    """A diffusion training step draws its noise and timestep in `forward(model, batch)`: the model itself is
    deterministic in eval mode (checks/real/diffusers_unet2d_noise.py with diffusers' UNet2DModel)."""

    class Denoiser(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(9, 32), nn.ReLU(), nn.Linear(32, 8))

        def forward(self, x, t):
            return self.net(torch.cat([x, t[:, None].float() / 1000], 1))

    def forward(model, x):
        noise = torch.randn_like(x)
        t = torch.randint(0, 1000, (x.shape[0],))
        return model(x + noise, t), noise

    data = [torch.randn(16, 8) for _ in range(2)]
    r = nncheck.check(model=Denoiser, data=data, forward=forward, only=[PID])[PID]
    assert r.status.value == "pass", r.message
