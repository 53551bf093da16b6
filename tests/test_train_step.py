"""train-step and the train_step contract: the shared trace and ctx.train_step call the user's step, GradScalers are
put back, and each broken step is named (the corpus covers zero_grad, clipping, a skipping scaler, bf16 AMP)."""

from __future__ import annotations

import torch
from torch import nn

import nncheck
from nncheck.context import Context
from nncheck.setup import setup_from_kwargs

PID = "train-step"


def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 3, generator=g)
    x = torch.randn(128, 8, generator=g)
    y = (x @ w).argmax(dim=1)
    return [(x[i : i + 32], y[i : i + 32]) for i in range(0, 128, 32)]


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))


def sgd(p):
    return torch.optim.SGD(p, lr=0.1)


def result(step, optimizer=sgd):
    report = nncheck.check(model=mlp, data=data, optimizer=optimizer, train_step=step, only=[PID])
    return report.setups[0].result(PID)


def good(model, batch, opt):
    x, y = batch
    opt.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss


def test_skips_without_a_train_step():
    r = nncheck.check(model=mlp, data=data, only=[PID]).setups[0].result(PID)
    assert r.status.value == "skip"


def test_the_trace_and_ctx_train_step_call_the_users_step():
    calls = []

    def step(model, batch, opt):
        calls.append(1)
        return good(model, batch, opt)

    ctx = Context(setup_from_kwargs(model=mlp, data=data, optimizer=sgd, train_step=step))
    ctx.preflight(time_steps=False)
    spent = ctx.steps_spent
    trace = ctx.trace(7)
    assert len(calls) == 7 and trace.updates == 7 and len(trace.losses) == 7
    assert ctx.steps_spent - spent >= 7  # each call counts as one training step (plus the checkpoints' forwards)
    assert set(trace.first_changed) == {n for n, _ in mlp().named_parameters()}
    assert trace.module_order == ["0", "2"]


def test_a_correct_step_passes_and_adam_clipping_only_warns():
    assert result(good).status.value == "pass"

    def clipped(model, batch, opt):
        x, y = batch
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1e-4)
        opt.step()
        return loss

    r = result(clipped, optimizer=lambda p: torch.optim.Adam(p, lr=1e-3))
    assert r.status.value == "warn" and "invariant" in r.message and r.measured["clip_ratios"]


def test_step_before_backward_and_no_step():
    def early(model, batch, opt):
        x, y = batch
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        opt.step()
        loss.backward()
        return loss

    def never(model, batch, opt):
        x, y = batch
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    r = result(early)
    assert r.status.value == "fail" and "before loss.backward()" in r.message
    r = result(never)
    assert r.status.value == "fail" and "never runs" in r.message


def test_step_on_scaled_gradients_and_the_scaler_is_put_back():
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)

    def unscaled(model, batch, opt, scaler=scaler):
        x, y = batch
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        opt.step()  # BUG: not scaler.step(opt); scaler.update()
        return loss

    before = scaler.state_dict()
    r = result(unscaled)
    assert r.status.value == "fail" and "1024" in r.message and "scaler.step" in r.hint
    assert scaler.state_dict() == before


def test_a_step_that_returns_no_loss_is_named():
    def silent(model, batch, opt):
        good(model, batch, opt)

    r = result(silent)
    assert r.status.value == "error" and "must return the step's loss" in r.message


def test_the_battery_leaves_the_users_scaler_as_it_was():
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**20)

    def amp(model, batch, opt, scaler=scaler):
        x, y = batch
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            loss = nn.functional.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss

    before = scaler.state_dict()
    nncheck.check(model=mlp, data=data, optimizer=sgd, train_step=amp, budget="fast")
    assert scaler.state_dict() == before


def _scheduled(first: str):
    """A step that builds a warm-up for the optimizer it is given (built before the first optimizer.step(): that
    construction step is not a scheduler step) and steps it before or after the optimizer."""
    schedules: dict[int, tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]] = {}

    def step(model, batch, opt):
        if id(opt) not in schedules or schedules[id(opt)][0] is not opt:
            schedules[id(opt)] = (opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10)))
        sched = schedules[id(opt)][1]
        x, y = batch
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        if first == "scheduler":
            sched.step()
        opt.step()
        if first == "optimizer":
            sched.step()
        return nn.functional.cross_entropy(model(x), y).detach()

    return step


def test_a_scheduler_stepped_before_the_optimizer_warns_with_the_lrs():
    r = result(_scheduled("scheduler"))
    assert r.status.value == "warn", r.message
    assert "scheduler steps before optimizer.step() in 3 of 3 calls" in r.message
    assert "ran at LR 0.02, the schedule's next value, instead of 0.01" in r.message  # 0.1 x 2/10 instead of 1/10
    assert "optimizer.step(); scheduler.step()" in r.hint
    assert r.measured["scheduler_first_calls"] == 3
    assert result(_scheduled("optimizer")).status.value == "pass"


def test_schedulers_are_put_back_after_the_probe():
    from torch.optim.lr_scheduler import LambdaLR, LRScheduler

    before = (LRScheduler.step, LambdaLR.step)
    result(_scheduled("scheduler"))
    assert (LRScheduler.step, LambdaLR.step) == before
