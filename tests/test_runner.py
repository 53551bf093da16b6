"""Runner: probes are isolated from each other and from the user's state."""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nncheck.config import Config
from nncheck.context import Context, ProbeSkip
from nncheck.registry import NoParams, Probe, registry
from nncheck.report import Status, passed
from nncheck.runner import BACKSTOP_STEPS, MIN_BACKSTOP_S, backstop_s, run_probe, run_setup
from nncheck.setup import load_setup, setup_from_kwargs

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def tiny_setup(net: nn.Module | None = None):
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(16, 4, generator=g), torch.randint(0, 3, (16,), generator=g)) for _ in range(4)]
    model = net if net is not None else (lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)))
    return setup_from_kwargs(model, batches)


def ready_context() -> Context:
    ctx = Context(tiny_setup())
    ctx.preflight(time_steps=False)
    return ctx


def test_crashing_probe_becomes_error_and_others_run():
    ctx = ready_context()

    def boom(c, p):
        raise ValueError("kaboom")

    r = run_probe(ctx, Probe("boom", "Boom", boom), NoParams(), 10.0)
    assert r.status is Status.ERROR and "ValueError: kaboom" in r.message and r.id == "boom"
    ok = run_probe(ctx, Probe("ok", "Ok", lambda c, p: passed("fine")), {}, 10.0)
    assert ok.status is Status.PASS


def test_probe_skip_and_bad_return():
    ctx = ready_context()

    def skipper(c, p):
        raise ProbeSkip("no BatchNorm in the model")

    r = run_probe(ctx, Probe("s", "S", skipper), NoParams(), 10.0)
    assert r.status is Status.SKIP and "BatchNorm" in r.message
    r = run_probe(ctx, Probe("n", "N", lambda c, p: None), NoParams(), 10.0)
    assert r.status is Status.ERROR


def test_time_budget_cooperative_and_backstop(monkeypatch):
    ctx = ready_context()

    def slow(c, p):
        m = c.fresh_model()
        opt = c.optimizer(m)
        while True:
            c.check_time()
            c.train_step(m, opt, c.batch())

    r = run_probe(ctx, Probe("slow", "Slow", slow), NoParams(), 0.3)
    assert r.status is Status.SKIP and "inconclusive" in r.message and r.measured["inconclusive"] is True
    assert r.duration_s < 5

    monkeypatch.setattr("nncheck.runner.BACKSTOP_GRACE_S", 0.2)

    def stuck(c, p):
        time.sleep(30)  # a user call that never checks the clock
        return passed("never")

    t0 = time.perf_counter()
    r = run_probe(ctx, Probe("stuck", "Stuck", stuck), NoParams(), 0.2)
    assert r.status is Status.SKIP and "inconclusive" in r.message and time.perf_counter() - t0 < 5


def test_backstop_scales_with_the_step_time():
    assert backstop_s(None, 1e-4) == MIN_BACKSTOP_S  # tiny models: the floor
    assert backstop_s(None, 0.1) == BACKSTOP_STEPS * 0.1
    assert backstop_s(7.0, 0.1) == 7.0  # configured: as given


def test_steps_are_counted_per_probe_and_in_total():
    sr = run_setup(load_setup(str(EXAMPLES / "mlp.py")), Config(), {"budget": "fast"})
    by_id = {r.id: r.steps for r in sr.results}
    # a forward counts 1/3, a backward 2/3: training probes run many steps, static ones a few forwards
    assert by_id["overfit-batch"] > 3 and by_id["input-independent"] > 3  # their own runs
    assert by_id["numerics"] >= 3  # the first probe to read the shared training trace runs it
    assert 0 < by_id["initial-loss"] < 3 and by_id["layer-order"] < 2
    assert sr.steps >= sum(by_id.values()) > 0 and sr.step_equivalents == sr.steps
    start, end = sr.step_time_start_s, sr.step_time_end_s
    assert start and end and sr.step_time_s == min(start, end)


def test_a_slower_forward_changes_no_verdict(tmp_path):
    """Budgets are in steps: the same setup with a forward 20 ms slower gives the same verdicts and exit code."""
    slow = tmp_path / "slow_mlp.py"
    slow.write_text(
        (EXAMPLES / "mlp.py").read_text()
        + "\n\nimport time as _time\n_model = model\n\n\ndef model():\n    net = _model()\n"
        "    net.register_forward_pre_hook(lambda m, a: _time.sleep(0.02))\n    return net\n"
    )
    fast_run = run_setup(load_setup(str(EXAMPLES / "mlp.py")), Config(), {"budget": "fast"})
    slow_run = run_setup(load_setup(str(slow)), Config(), {"budget": "fast"})
    assert [(r.id, r.status) for r in slow_run.results] == [(r.id, r.status) for r in fast_run.results]
    assert slow_run.ok == fast_run.ok and slow_run.step_time_s > fast_run.step_time_s + 0.015


def test_probe_sees_seeded_rng_regardless_of_order():
    ctx = ready_context()
    draws = []

    def draw(c, p):
        draws.append(torch.rand(1).item())
        torch.rand(100)  # consume
        return passed("ok")

    p = Probe("d", "D", draw)
    run_probe(ctx, p, {}, 10.0)
    run_probe(ctx, p, {}, 10.0)
    assert draws[0] == draws[1]


def test_user_state_untouched_after_full_battery():
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 3))
    net.eval()
    params_before = {k: v.clone() for k, v in net.state_dict().items()}
    torch.manual_seed(1234)
    np.random.seed(99)
    random.seed(7)
    torch_state = torch.get_rng_state()
    np_state = np.random.get_state()[1].copy()
    py_state = random.getstate()
    det = torch.are_deterministic_algorithms_enabled()
    grad = torch.is_grad_enabled()

    sr = run_setup(tiny_setup(net), Config(), {"budget": "fast"})
    assert sr.error is None
    assert len(sr.results) == len([p for p in registry().values() if p.default])

    assert not net.training
    for k, v in net.state_dict().items():
        assert torch.equal(v, params_before[k]), f"user model tensor {k} changed"
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state)
    assert random.getstate() == py_state
    assert torch.are_deterministic_algorithms_enabled() == det
    assert torch.is_grad_enabled() == grad


def test_step_time_and_equivalents_reported():
    sr = run_setup(tiny_setup(), Config(), {"only": ["initial-loss"]})
    assert sr.step_time_s and sr.step_time_s > 0
    assert sr.step_equivalents and sr.step_equivalents > 0
    d = sr.to_dict()
    assert d["step_time_s"] > 0 and d["duration_s"] > 0


def test_only_and_skip_select_probes():
    ids = list(registry())
    sr = run_setup(tiny_setup(), Config(), {"only": ids[:1]})
    assert [r.id for r in sr.results] == ids[:1]
    if len(ids) > 1:
        sr = run_setup(tiny_setup(), Config(), {"skip": ids[1:]})
        assert [r.id for r in sr.results] == ids[:1]


def test_cpu_threads_are_set_for_the_run_and_restored(monkeypatch):
    """On a shared machine torch's default threads oversubscribe the cores: the run uses auto_threads() (half the
    usable cores, at least 1) or the configured number, and puts the caller's setting back."""
    from nncheck.runner import auto_threads, cpu_threads

    before = torch.get_num_threads()
    seen = []
    with cpu_threads(None):
        seen.append(torch.get_num_threads())
    with cpu_threads(3):
        seen.append(torch.get_num_threads())
    assert seen == [auto_threads(), 3] and torch.get_num_threads() == before
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    assert auto_threads() == 1  # a 2-core machine: one thread


def _count_timing_runs(monkeypatch) -> list[tuple]:
    """Record the calls of Context.measure_step_time (the timing steps of their own)."""
    calls: list[tuple] = []
    original = Context.measure_step_time

    def recording(self, *args, **kwargs):
        calls.append(args)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Context, "measure_step_time", recording)
    return calls


def test_a_full_run_takes_its_step_time_from_the_probes_steps(monkeypatch):
    """No timing steps of their own: the step time at the start and at the end are the fastest steps of the first and
    second half of the whole-batch steps the probes ran (measured: 98.4 steps in all, ~0.5 ms a step)."""
    calls = _count_timing_runs(monkeypatch)
    sr = run_setup(load_setup(str(EXAMPLES / "mlp.py")), Config(), {"budget": "full"})
    assert sr.error is None and calls == []
    start, end = sr.step_time_start_s, sr.step_time_end_s
    assert start and end and sr.step_time_s == min(start, end)


def test_a_run_of_static_probes_times_two_steps_at_the_end(monkeypatch):
    """Fewer than two timed steps (the data probe trains nothing): the end timing runs END_TIMING_STEPS = 2 steps
    without warm-up. Measured: 2.83 steps in all (preflight forward 1/3, data 1/3, 2 timed steps, 1/6 else)."""
    calls = _count_timing_runs(monkeypatch)
    sr = run_setup(load_setup(str(EXAMPLES / "mlp.py")), Config(), {"only": ["data"]})
    assert sr.error is None and calls == [(0, 2)]
    start, end = sr.step_time_start_s, sr.step_time_end_s
    assert start and end and sr.step_time_s == min(start, end)
    assert 2 <= sr.steps < 3.5, sr.steps


def test_only_whole_batch_steps_are_timed():
    ctx = ready_context()
    model = ctx.fresh_model()
    opt = ctx.optimizer(model)
    batch = ctx.batch()
    assert ctx.step_times == []
    ctx.train_step(model, opt, ctx.slice_batch(batch, 8))  # half a batch says nothing about one step
    assert ctx.step_times == []
    ctx.train_step(model, opt, batch)
    ctx.train_step(model, opt, batch)
    assert len(ctx.step_times) == 2 and ctx.step_time_s == max(min(ctx.step_times), 1e-6)
    with pytest.raises(RuntimeError), ctx.timed_step(batch):  # a step that raises is not timed
        raise RuntimeError("boom")
    ctx.train_step(model, opt, ctx.slice_batch(batch, 15))
    assert len(ctx.step_times) == 2


def test_the_outputs_at_init_are_shared_as_copies():
    """Context.init_forward runs the model once per cached batch and hands out copies: a loss that works in place on
    its input (`out.sigmoid_()`) cannot change what the next probe reads."""
    ctx = ready_context()
    before = ctx.steps_spent
    out, y = ctx.init_forward(0)
    once = ctx.steps_spent - before
    out.mul_(0).add_(7.0)
    again, y2 = ctx.init_forward(0)
    assert ctx.steps_spent - before == once > 0  # read from the cache the second time
    assert not torch.equal(again, out) and torch.equal(y2, y)
