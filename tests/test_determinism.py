"""determinism: correct setups are reproducible under one seed; broken ones (checks/determinism_*.py) fail and
name which of model / data / training broke."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import SEEDS, broken_files, rel, run_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import nncheck
from nncheck.context import Context
from nncheck.probes.determinism import (
    Params,
    bitwise_equal,
    deterministic_mode_run,
    entropy_sources,
    measure,
)
from nncheck.setup import setup_from_kwargs

PID = "determinism"
BROKEN = broken_files(PID)
# which part each broken setup breaks
BROKEN_PART = {
    "determinism_numpy_init.py": "model",
    "determinism_python_random_features.py": "model",
    "determinism_unseeded_shuffle.py": "data",
    "determinism_entropy_loader.py": "data",
    "determinism_clock_noise.py": "training",
}


def batches(n: int = 4, d: int = 6, c: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(16, d, generator=g), torch.randint(0, c, (16,), generator=g)) for _ in range(n)]


def test_corpus_has_broken_setups():
    assert len(BROKEN) >= 2


@pytest.mark.parametrize("path", BROKEN, ids=rel)
def test_broken_setup_names_what_broke(path):
    r = run_file(path, budget="fast", only=[PID]).result(PID)
    assert r.hint
    part = BROKEN_PART.get(path.name)
    if part:
        assert r.measured["broken"] == [part], r.measured
        assert "Suspect lines" in r.hint, r.hint  # the entropy source in the file is named


def test_full_budget_names_model_tensors():
    path = next(p for p in BROKEN if p.name == "determinism_numpy_init.py")
    r = run_file(path, only=[PID]).result(PID)
    assert r.status.value == "fail"
    assert r.measured["model_differing_tensors"] == ["0.weight", "2.weight"]
    assert r.measured["steps"] == 5


def test_module_instance_is_deterministic_by_construction():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    r = nncheck.check(model=net, data=batches(), only=[PID]).result(PID)
    assert r.status.value == "pass"
    assert "deterministic by construction" in r.measured["model"]


def test_module_level_loader_with_seeded_generator_passes():
    """The same DataLoader object returned twice reshuffles per epoch by design: its generator is rewound."""
    x, y = batches(1, c=3)[0]
    loader = DataLoader(TensorDataset(x, y), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(3))
    r = nncheck.check(model=lambda: nn.Linear(6, 3), data=loader, only=[PID]).result(PID)
    assert r.status.value == "pass", r.message


def test_unseeded_dropout_noise_from_numpy_generator_fails():
    class NumpyNoise(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(6, 3)
            self.rng = np.random.default_rng()  # entropy

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            noise = torch.as_tensor(self.rng.normal(size=tuple(x.shape)), dtype=x.dtype)
            return self.fc(x + 0.1 * noise)

    r = nncheck.check(model=NumpyNoise, data=batches(), only=[PID]).result(PID)
    assert r.status.value == "fail"
    assert r.measured["broken"] == ["training"]
    assert r.measured["nondeterministic_op"] is None  # no torch op to blame: an RNG the seed does not reach
    assert r.measured["equal_with_deterministic_algorithms"] is False
    # a module instance is deep-copied with its generator's state: deterministic by construction
    r = nncheck.check(model=NumpyNoise(), data=batches(), only=[PID]).result(PID)
    assert r.status.value == "pass", r.message


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    width=st.integers(2, 16),
    p=st.floats(0.0, 0.6),
    norm=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_models_with_global_rng_randomness_pass(width, p, norm, seed):
    """Dropout, BatchNorm and init drawn from torch's global RNG are reproducible under the seed."""

    def model() -> nn.Module:
        layers: list[nn.Module] = [nn.Linear(6, width)]
        if norm:
            layers.append(nn.BatchNorm1d(width))
        layers += [nn.ReLU(), nn.Dropout(p), nn.Linear(width, 3)]
        return nn.Sequential(*layers)

    r = nncheck.check(model=model, data=batches(), only=[PID], seed=seed, budget="fast").result(PID)
    assert r.status.value == "pass", r.message


def test_deterministic_mode_run_restores_flags():
    ctx = Context(setup_from_kwargs(lambda: nn.Linear(6, 3), batches()))
    ctx.preflight(time_steps=False)
    for flag in (False, True):
        torch.use_deterministic_algorithms(flag, warn_only=True)
        try:
            deterministic_mode_run(ctx, ctx.batches(2), 2, twice=True)
            assert torch.are_deterministic_algorithms_enabled() is flag
            assert torch.is_deterministic_algorithms_warn_only_enabled()
        finally:
            torch.use_deterministic_algorithms(False)


class _NoDeterministicKernel(nn.Module):
    """Stands for a CUDA op without a deterministic implementation (CPU ops all have one)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.are_deterministic_algorithms_enabled():
            raise RuntimeError("scatter_add_cuda_kernel does not have a deterministic implementation, but you set ...")
        return x


def test_deterministic_mode_run_names_the_op_and_the_innermost_module():
    def model() -> nn.Module:
        return nn.Sequential(nn.Linear(6, 8), nn.Sequential(nn.ReLU(), _NoDeterministicKernel()), nn.Linear(8, 3))

    ctx = Context(setup_from_kwargs(model, batches()))
    ctx.preflight(time_steps=False)
    op = deterministic_mode_run(ctx, ctx.batches(2), 2, twice=True)
    assert op.op == "scatter_add_cuda_kernel" and op.module == "model[1][1]", op
    assert not torch.are_deterministic_algorithms_enabled()


def test_bitwise_equal():
    a = torch.tensor([1.0, float("nan")])
    assert bitwise_equal(a, a.clone())
    assert not bitwise_equal(a, torch.tensor([1.0 + 1e-7, float("nan")]))
    assert not bitwise_equal(torch.zeros(2), torch.zeros(2, dtype=torch.float64))
    assert bitwise_equal(torch.tensor([True, False]), torch.tensor([True, False]))
    assert not bitwise_equal(torch.tensor([0.0]), torch.tensor([-0.0]))


def test_entropy_sources_ignore_comments_and_docstrings(tmp_path):
    f = tmp_path / "s.py"
    f.write_text(
        '"""np.random.default_rng() in a docstring"""\n# random.Random()\nimport random\nr = random.Random()\n'
    )
    assert entropy_sources(str(f)) == [f"{f}:4: `r = random.Random()` (random.Random() without a seed)"]
    assert entropy_sources("<api>") == []


# ---------------------------------------------------------------------------------------------- fix round
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("budget", ["fast", "full"])
def test_nan_loss_is_not_blamed_on_seeding(budget, seed):
    """A NaN cascade gives "nan vs nan": not a reproducibility bug. Training is skipped with a pointer."""
    name = "numerics_log_of_zero.py"
    r = run_file(f"checks/{name}", seed=seed, budget=budget, only=[PID]).result(PID)
    assert r.status.value == "pass", r.message
    assert r.measured["training"] == "skipped (non-finite value)"
    assert f"nncheck run checks/{name} --only numerics" in r.message
    assert "unseeded" not in r.message and "random" not in r.message


def test_nan_equals_nan_at_the_same_positions_whatever_its_bits():
    a = torch.tensor([1.0, float("nan"), 3.0])
    b = a.clone()
    b.view(torch.int32)[1] ^= 1 << 31  # -nan: another bit pattern
    assert bitwise_equal(a, b)
    assert not bitwise_equal(a, torch.tensor([1.0, 2.0, float("nan")]))
    assert not bitwise_equal(a, torch.tensor([1.0, float("nan"), 3.0000002]))


def test_no_deterministic_mode_step_on_the_cpu_when_the_runs_agree(monkeypatch):
    """On the CPU only `Tensor.put_` lacks a deterministic kernel: when the two training runs agree, no step under
    torch.use_deterministic_algorithms(True) runs (no op to name)."""
    calls = []
    monkeypatch.setattr("nncheck.probes.determinism.deterministic_mode_run", lambda *a, **k: calls.append(a))

    def mlp() -> nn.Module:
        return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))

    ctx = Context(setup_from_kwargs(mlp, batches()))
    ctx.preflight(time_steps=False)
    ctx.seed_all()
    m = measure(ctx, Params())
    assert m.device == "cpu" and m.training.equal and not m.broken
    assert m.op is None and calls == []
    monkeypatch.undo()
    r = nncheck.check(model=mlp, data=batches(), only=[PID]).result(PID)
    assert r.status.value == "pass" and "nondeterministic_op" not in r.measured, r.measured


def test_runs_that_differ_on_the_cpu_still_rerun_under_deterministic_algorithms():
    path = next(p for p in BROKEN if p.name == "determinism_clock_noise.py")
    r = run_file(path, budget="fast", only=[PID]).result(PID)
    assert r.status.value == "fail" and r.measured["broken"] == ["training"]
    assert "nondeterministic_op" in r.measured and r.measured["equal_with_deterministic_algorithms"] is False
