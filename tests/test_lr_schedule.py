"""lr-schedule and the scheduler contract: the curve (closed forms agree with stepping, crashes found at their step),
the peak LR the training probes use, the series, clear setup errors and the warning for ignored look-alike names."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import ROOT, run_file
from torch import nn
from torch.optim import lr_scheduler as sched

import nncheck
from nncheck.context import Context
from nncheck.schedule import HEAD_STEPS, lr_curve, sample_steps
from nncheck.setup import SetupError, load_setup, lookalike_warnings, setup_from_kwargs

PID = "lr-schedule"


def make_opt(lr: float = 0.1) -> torch.optim.Optimizer:
    return torch.optim.SGD([nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(3))], lr=lr, momentum=0.9)


def stepped(make, n: int) -> list[float]:
    """The LR of steps 0..n-1 by stepping the scheduler as a training loop does (after each optimizer step)."""
    opt = make_opt()
    s = make(opt)
    out = []
    for _ in range(n):
        out.append(float(opt.param_groups[0]["lr"]))
        opt.step()
        s.step()
    return out


SCHEDULES = {
    "cosine": lambda o: sched.CosineAnnealingLR(o, T_max=700),
    "onecycle": lambda o: sched.OneCycleLR(o, max_lr=0.3, total_steps=3000),
    "lambda": lambda o: sched.LambdaLR(o, lambda k: min(1.0, (k + 1) / 50) * 0.999**k),
    "step": lambda o: sched.StepLR(o, step_size=400, gamma=0.5),
    "linear": lambda o: sched.LinearLR(o, start_factor=0.01, total_iters=300),
    "sequential": lambda o: sched.SequentialLR(
        o, [sched.LinearLR(o, 0.01, total_iters=100), sched.CosineAnnealingLR(o, T_max=2900)], [100]
    ),
}


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_curve_matches_a_training_loop(name):
    make = SCHEDULES[name]
    curve = lr_curve(make_opt, make, 3000)
    truth = stepped(make, 3000)
    assert curve.error is None and curve.steps[-1] == 2999
    for k, row in zip(curve.steps, curve.lrs):
        assert math.isclose(row[0], truth[k], rel_tol=1e-6, abs_tol=1e-12), (name, k, row[0], truth[k])
    assert math.isclose(curve.peaks[0], max(truth[k] for k in curve.steps), rel_tol=1e-9)


def test_samples_cover_the_head_and_the_end():
    s = sample_steps(50_000, 100)
    assert s[:HEAD_STEPS] == list(range(HEAD_STEPS)) and s[-1] == 49_999 and len(s) < HEAD_STEPS + 100


def test_onecycle_past_its_total_steps_crashes_at_the_right_step():
    curve = lr_curve(make_opt, lambda o: sched.OneCycleLR(o, max_lr=0.1, total_steps=1000), 5000)
    assert curve.error_step == 1001 and "total steps" in (curve.error or "")


def test_step_by_step_is_capped():
    curve = lr_curve(make_opt, SCHEDULES["sequential"], 10_000, max_exact=2000)
    assert curve.truncated and curve.steps[-1] == 1999


def setup_with(scheduler, optimizer=None, settings=None):
    def data():
        g = torch.Generator().manual_seed(0)
        x = torch.randn(64, 4, generator=g)
        return [(x[i : i + 16], (x[i : i + 16, 0] > 0).long()) for i in range(0, 64, 16)]

    return setup_from_kwargs(
        model=lambda: nn.Linear(4, 2),
        data=data,
        optimizer=optimizer or (lambda p: torch.optim.SGD(p, lr=0.05)),
        scheduler=scheduler,
        settings=settings,
    )


def test_probes_train_at_the_peak_lr():
    ctx = Context(setup_with(lambda o: sched.OneCycleLR(o, max_lr=0.4, total_steps=1000)))
    ctx.preflight(time_steps=False)
    opt = ctx.optimizer(ctx.fresh_model())
    assert math.isclose(opt.param_groups[0]["lr"], 0.4, rel_tol=1e-3)
    assert ctx.trace(1).group_lrs == [opt.param_groups[0]["lr"]]


def test_no_scheduler_keeps_the_optimizer_lr_and_skips():
    ctx = Context(setup_with(None))
    ctx.preflight(time_steps=False)
    assert ctx.optimizer(ctx.fresh_model()).param_groups[0]["lr"] == 0.05
    report = nncheck.check(model=lambda: nn.Linear(4, 2), data=setup_with(None).data, only=[PID])
    assert report.setups[0].result(PID).status.value == "skip"


def test_scheduler_errors_are_setup_errors():
    for bad, words in [
        (lambda o: 1 / 0, "ZeroDivisionError"),
        (lambda o: 3, "returned int"),
        (lambda o: sched.StepLR(make_opt(), 10), "another optimizer"),
    ]:
        ctx = Context(setup_with(bad))
        with pytest.raises(SetupError, match=words):
            ctx.preflight(time_steps=False)
    with pytest.raises(SetupError, match="total_steps"):
        setup_with(None, settings={"total_steps": 0})


def test_series_and_measured_of_a_decay_that_ends_early():
    r = run_file(ROOT / "checks/sched_cosine_decays_early.py", only=[PID]).result(PID)
    assert r.status.value == "fail" and "step 4," in r.message and "don't trust" in r.hint
    plot = r.series["lr"]
    assert plot["xlabel"] == "optimizer step" and len(plot["curves"]["LR"]["x"]) <= 2 * 400
    assert r.measured["horizon"] == 50_000 and r.measured["peak_lr"] == pytest.approx(1e-3)


def test_undeclared_horizon_warns_instead_of_failing():
    early = lambda o: sched.LambdaLR(o, lambda k: max(0.0, 1 - k / 500))  # noqa: E731 - 0 at 500 of 10,000
    report = nncheck.check(model=lambda: nn.Linear(4, 2), data=setup_with(None).data, scheduler=early, only=[PID])
    r = report.setups[0].result(PID)
    assert r.status.value == "warn" and "total_steps" in r.hint, r.message


def test_warmup_advice_needs_adam_and_attention():
    def attn():
        return nn.Sequential(nn.TransformerEncoderLayer(4, 2, 8, batch_first=True), nn.Flatten(), nn.Linear(12, 2))

    def data():
        g = torch.Generator().manual_seed(0)
        return [(torch.randn(8, 3, 4, generator=g), torch.randint(0, 2, (8,), generator=g)) for _ in range(4)]

    cosine = lambda o: sched.CosineAnnealingLR(o, T_max=1000)  # noqa: E731
    for opt, warn in [(torch.optim.AdamW, True), (torch.optim.RAdam, False), (torch.optim.SGD, False)]:
        r = (
            nncheck.check(model=attn, data=data, optimizer=lambda p, o=opt: o(p, lr=1e-3), scheduler=cosine, only=[PID])
            .setups[0]
            .result(PID)
        )
        assert (r.status.value == "warn") == warn, (opt, r.message)
        assert ("warm-up" in r.message) == warn


def test_lookalike_names_are_named(tmp_path: Path):
    assert lookalike_warnings({"criterion": 1, "loss": 2, "optim": __import__("torch").optim}) == []
    f = tmp_path / "s.py"
    f.write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn
            def model(): return nn.Linear(4, 2)
            def data(): return [(torch.randn(8, 4), torch.randint(0, 2, (8,)))] * 4
            criterion = nn.CrossEntropyLoss()
            def lr_scheduler(opt): return torch.optim.lr_scheduler.StepLR(opt, 10)
            """
        )
    )
    setup = load_setup(f)
    assert setup.scheduler is None and len(setup.warnings) == 2
    assert "`criterion`" in setup.warnings[0] and "`loss = criterion`" in setup.warnings[0]
    report = run_file(f, only=["data"])
    assert any("`lr_scheduler`" in n for n in report.notes)
    g = tmp_path / "t.py"
    g.write_text("import torch\nfrom torch import nn\ndef model(): return nn.Linear(4, 2)\ntrain_loader = []\n")
    with pytest.raises(SetupError, match="`train_loader` looks like `data`"):
        load_setup(g)


def test_a_scheduler_that_is_no_function_is_not_read(tmp_path: Path):
    f = tmp_path / "s.py"
    f.write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn
            def model(): return nn.Linear(4, 2)
            def data(): return [(torch.randn(8, 4), torch.randint(0, 2, (8,)))] * 4
            _opt = torch.optim.SGD(model().parameters(), lr=0.1)
            scheduler = torch.optim.lr_scheduler.StepLR(_opt, 10)
            """
        )
    )
    setup = load_setup(f)
    assert setup.scheduler is None and "StepLR instance" in setup.warnings[0]
    noise = tmp_path / "n.py"
    noise.write_text(f.read_text().replace("torch.optim.lr_scheduler.StepLR(_opt, 10)", "object()"))
    assert load_setup(noise).warnings == []
