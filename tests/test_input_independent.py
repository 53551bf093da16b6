"""input-independent: real inputs must beat blanked inputs; input-ignoring models fail, shuffled labels warn."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import EXAMPLES, SEEDS, broken_files, rel, run_file
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import nncheck
from nncheck.context import Context
from nncheck.probes.input_independent import BlankArm, advantage, blank, identical, rel_gap
from nncheck.setup import load_setup, setup_from_kwargs

PID = "input-independent"


# ---------------------------------------------------------------------------------------------- pure helpers
def test_blank_float_int_bool():
    x = torch.randn(4, 3)
    assert torch.equal(blank(x), torch.zeros(4, 3))
    tokens = torch.tensor([[5, 5, 2], [5, 1, 5]])
    assert torch.equal(blank(tokens), torch.full((2, 3), 5))  # the most frequent token
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert torch.equal(blank(mask), torch.ones(2, 3, dtype=torch.long))  # masks keep their 'keep' value
    b = torch.tensor([True, False])
    assert torch.equal(blank(b), b)


def test_gap_and_advantage():
    assert rel_gap(1.0, 2.0) == pytest.approx(0.5)
    assert rel_gap(math.nan, 1.0) == -math.inf
    assert rel_gap(1.0, math.inf) == math.inf
    assert advantage(0.02, -0.1) == pytest.approx(0.12)  # A's handicap at init is credited back
    assert advantage(0.02, 0.1) == pytest.approx(0.02)  # a head start at init is not
    assert identical([1.0, 0.5], [1.0, 0.5 + 1e-9])
    assert not identical([1.0, 0.5], [1.0, 0.49])


# ---------------------------------------------------------------------------------------------- corpus
@pytest.mark.parametrize("path", broken_files(PID), ids=rel)
def test_broken_setups_explain_and_plot(path):
    r = run_file(path, budget="full", only=[PID]).result(PID)
    assert r.hint and r.measured and r.expected, r.message
    assert "real inputs (A), train" in r.series["loss"]["curves"]


def test_input_ignoring_model_stops_early_with_identical_losses():
    path = next(p for p in broken_files(PID) if p.name == "ii_input_zeroed_in_forward.py")
    r = run_file(path, only=[PID]).result(PID)
    assert r.status.value == "fail"
    assert r.measured["identical_losses"] is True
    assert r.measured["stopped_early"] == "identical losses"
    assert r.measured["steps"] <= 20
    # the re-run line for the probes that explain a vanished signal, as the user runs it
    assert f"run `nncheck run {path} --only activations,gradient-flow`" in r.hint, r.hint


@pytest.mark.parametrize("seed", SEEDS)
def test_a_train_step_that_blanks_its_inputs_fails_in_the_fast_budget(seed):
    # the blank copy steps with the setup's train_step too, and runs its first steps although the losses at init
    # (nncheck's forward of the real batch) differ: the step zeroes the inputs before the model
    path = next(p for p in broken_files(PID) if p.name == "ts_input_keep_drop_swapped.py")
    r = run_file(path, seed=seed, budget="fast", only=[PID]).result(PID)
    assert r.status.value == "fail", r.message
    assert r.measured["identical_losses"] is True and r.measured["steps"] == 5


def _zeroing_step(model, batch, optimizer):
    x, y = batch
    optimizer.zero_grad(set_to_none=True)
    loss = nn.functional.mse_loss(model(x * 0), y)
    loss.backward()
    optimizer.step()
    return loss


@pytest.mark.parametrize(("step", "want"), [(None, "pass"), (_zeroing_step, "fail")])
def test_a_single_batch_side_by_side_run_uses_the_train_step(step, want):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    report = nncheck.check(
        model=lambda: nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1)),
        data=[(x, x.sum(1, keepdim=True))],
        optimizer=lambda p: torch.optim.Adam(p, lr=1e-2),
        train_step=step,
        only=[PID],
        budget="full",
    )
    assert report[PID].status.value == want, report[PID].message


# ---------------------------------------------------------------------------------------------- API paths
def _dict_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 6, generator=g)
    y = (x[:, 0] > 0).long()
    return [{"features": x[i : i + 32], "label": y[i : i + 32]} for i in range(0, 128, 32)]


class _DictNet(nn.Module):
    def __init__(self, ignore: bool) -> None:
        super().__init__()
        self.ignore = ignore
        self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features * 0 if self.ignore else features)


def _dict_forward(model, batch):
    # the integer labels live in the batch: map_inputs blanks them too, so the probe must take targets from the
    # unperturbed batch
    return model(features=batch["features"]), batch["label"]


@pytest.mark.parametrize("ignore, want", [(False, "pass"), (True, "fail")])
def test_dict_batches_with_custom_forward(ignore, want):
    report = nncheck.check(
        model=lambda: _DictNet(ignore),
        data=_dict_data,
        forward=_dict_forward,
        optimizer=lambda p: torch.optim.Adam(p, lr=1e-2),
        only=[PID],
        budget="fast",
    )
    r = report[PID]
    assert r.status.value == want, r.message


def test_single_batch_is_split_into_train_and_heldout():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    y = x.sum(1, keepdim=True)
    report = nncheck.check(
        model=lambda: nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1)),
        data=[(x, y)],
        optimizer=lambda p: torch.optim.Adam(p, lr=1e-2),
        only=[PID],
        budget="full",
    )
    r = report[PID]
    assert r.status.value == "pass", r.message
    assert r.measured["train_batches"] == 1 and "heldout_advantage" in r.measured


# ---------------------------------------------------------------------------------------------- fix round
P, D, C = 4, 32, 4


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(D)
        self.attn = nn.MultiheadAttention(D, 2, dropout=0.1, batch_first=True)
        self.ln2 = nn.LayerNorm(D)
        self.mlp = nn.Sequential(nn.Linear(D, 2 * D), nn.GELU(), nn.Dropout(0.1), nn.Linear(2 * D, D))
        self.drop = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.drop(self.attn(h, h, h, need_weights=False)[0])
        return x + self.drop(self.mlp(self.ln2(x)))


class ViT(nn.Module):
    """A correct tiny ViT (patches, cls token, pre-LN blocks, label smoothing, AdamW groups)."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(1, D, P, stride=P)
        self.cls = nn.Parameter(torch.zeros(1, 1, D))
        self.pos = nn.Parameter(torch.randn(1, 17, D) * 0.02)
        self.blocks = nn.Sequential(Block(), Block())
        self.norm = nn.LayerNorm(D)
        self.head = nn.Linear(D, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.patch(x).flatten(2).transpose(1, 2)
        h = torch.cat([self.cls.expand(h.shape[0], -1, -1), h], 1) + self.pos
        return self.head(self.norm(self.blocks(h))[:, 0])


def quadrants():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 1, 16, 16, generator=g) * 0.5
    y = torch.randint(0, C, (256,), generator=g)
    for i, c in enumerate(y.tolist()):
        r, s = divmod(c, 2)
        x[i, 0, r * 8 : r * 8 + 8, s * 8 : s * 8 + 8] += 1.0
    return [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]


def adamw_groups(params):
    params = list(params)
    decay = [p for p in params if p.ndim >= 2 and p.shape[0] != 1]
    rest = [p for p in params if not (p.ndim >= 2 and p.shape[0] != 1)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}], lr=1e-3)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_correct_vit_whose_heldout_loss_dips_early_passes(seed):
    """It warned "labels may be misaligned" (held-out advantage -0.11 at step 25 with 3 training batches); with the
    memorisation stop not before step 60 and the confirmation run on 7 batches it passes."""
    r = nncheck.check(
        model=ViT,
        data=quadrants,
        loss=nn.CrossEntropyLoss(label_smoothing=0.1),
        optimizer=adamw_groups,
        only=[PID],
        budget="full",
        seed=seed,
    )[PID]
    assert r.status.value == "pass", r.message
    if "confirm_heldout_advantage" in r.measured:
        assert r.measured["confirm_train_batches"] == 7 and r.measured["confirm_heldout_advantage"] >= -0.03


@pytest.mark.parametrize("seed", SEEDS)
def test_shuffled_labels_are_confirmed_on_every_cached_batch(seed):
    path = next(p for p in broken_files(PID) if p.name == "ii_labels_shuffled.py")
    r = run_file(path, seed=seed, budget="full", only=[PID]).result(PID)
    assert r.status.value == "warn", r.message
    assert r.measured["confirm_train_batches"] == 7 and r.measured["confirm_steps"] == 180
    assert r.measured["confirm_heldout_advantage"] < -0.03 and "confirmed on 7 training batches" in r.message


def test_suggested_commands_for_an_api_setup_are_python_calls():
    report = nncheck.check(
        model=lambda: _DictNet(True),
        data=_dict_data,
        forward=_dict_forward,
        optimizer=lambda p: torch.optim.Adam(p, lr=1e-2),
        only=[PID],
        seed=1,
    )
    r = report[PID]
    assert r.status.value == "fail" and r.measured["identical_losses"], r.message
    assert "run `nncheck.check(..., only=['activations', 'gradient-flow'], seed=1)`" in r.hint, r.hint


@pytest.mark.parametrize("seed", SEEDS)
def test_the_fast_budget_is_inconclusive_rather_than_wrong(seed):
    """The fast budget stops at 10 steps: shuffled labels (a warn under the full budget) end as a skip that points to
    the full budget; models that ignore their input still fail at step 5 (identical losses)."""
    shuffled = next(p for p in broken_files(PID) if p.name == "ii_labels_shuffled.py")
    r = run_file(shuffled, seed=seed, budget="fast", only=[PID]).result(PID)
    assert r.status.value == "skip" and "inconclusive" in r.message and "--budget" not in r.message, r.message
    zeroed = next(p for p in broken_files(PID) if p.name == "ii_input_zeroed_in_forward.py")
    r = run_file(zeroed, seed=seed, budget="fast", only=[PID]).result(PID)
    assert r.status.value == "fail" and r.measured["steps"] == 5 and r.measured["identical_losses"], r.message


def test_a_fast_learner_passes_early_against_the_best_constant():
    """examples/regression.py beats the best constant prediction (the target mean) within the trace's first steps: no
    blank copy trains beyond the 5 steps of the identical-losses check."""
    r = run_file("examples/regression.py", budget="full", only=[PID]).result(PID)
    assert r.status.value == "pass" and "best constant" in r.message, r.message
    assert r.measured["heldout_gap_to_constant"] >= 0.03 and r.measured["train_gap_to_constant"] >= 0.05


# ---------------------------------------------------------------------------------------------- cheap blank copy
def _blank_arms(make, data, loss=None, optimizer=None, train_step=None):
    """The shared trace of a setup and two blank copies mirroring it: the first as the probe builds it, the second
    forced to whole batches (``cheap = False``)."""
    setup = setup_from_kwargs(make, data, loss=loss, optimizer=optimizer, train_step=train_step)
    ctx = Context(setup)
    ctx.preflight(time_steps=False)
    trace = ctx.trace(0)
    cheap = BlankArm(ctx, trace)
    whole = BlankArm(ctx, trace)
    whole.cheap = False
    return ctx, cheap, whole


def _mlp_data(batch: int, kind: str, n_in: int = 5, n: int = 4):
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        x = torch.randn(batch, n_in, generator=g)
        y = torch.randint(0, 3, (batch,), generator=g) if kind == "ce" else torch.randn(batch, 2, generator=g)
        out.append((x, y))
    return out


def _mlp(width: int, batch_norm: bool, layer_norm: bool, act: type[nn.Module], kind: str, n_in: int = 5):
    def make() -> nn.Module:
        layers: list[nn.Module] = [nn.Linear(n_in, width)]
        if batch_norm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(act())
        if layer_norm:
            layers.append(nn.LayerNorm(width))
        layers.append(nn.Linear(width, 3 if kind == "ce" else 2))
        return nn.Sequential(*layers)

    return make


def _same_training(cheap: BlankArm, whole: BlankArm, ctx: Context, steps: int = 10) -> None:
    """Train both copies ``steps`` steps: equal training losses at every step and equal held-out losses at every
    checkpoint (rtol 1e-4), the cheap copy at under half the cost."""
    s0 = ctx.steps_spent
    cheap.extend(ctx, steps)
    s1 = ctx.steps_spent
    whole.extend(ctx, steps)
    s2 = ctx.steps_spent
    assert cheap.losses == pytest.approx(whole.losses, rel=1e-4)
    assert sorted(cheap.heldout_losses) == sorted(whole.heldout_losses) == [0, 5, 10]
    for k, v in whole.heldout_losses.items():
        assert cheap.heldout_losses[k] == pytest.approx(v, rel=1e-4), k
    # a cheap step costs CHEAP_SAMPLES / batch of a step (batch >= 8: at most 1/4); measured 1.6-2.7 vs 10.7
    assert s1 - s0 < 0.5 * (s2 - s1)


OPTIMIZERS = {
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2),
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
}


@settings(max_examples=15, deadline=None)
@given(
    width=st.integers(1, 16),
    layer_norm=st.booleans(),
    act=st.sampled_from([nn.ReLU, nn.Tanh, nn.GELU]),
    batch=st.integers(8, 32),
    kind=st.sampled_from(["ce", "mse"]),
    opt=st.sampled_from(sorted(OPTIMIZERS)),
)
def test_a_cheap_blank_copy_trains_as_on_whole_batches(width, layer_norm, act, batch, kind, opt):
    """Without BatchNorm the forward is per sample: the first output of CHEAP_SAMPLES blanked samples, repeated to the
    batch size, gives the whole blanked batch's loss and gradient (measured over 768 such MLPs: rel diff <= 6e-7)."""
    loss = nn.CrossEntropyLoss() if kind == "ce" else nn.MSELoss()
    make = _mlp(width, False, layer_norm, act, kind)
    ctx, cheap, whole = _blank_arms(make, _mlp_data(batch, kind), loss=loss, optimizer=OPTIMIZERS[opt])
    assert cheap.cheap, "a per-sample MLP on constant inputs runs cheap"
    _same_training(cheap, whole, ctx)


@settings(max_examples=10, deadline=None, derandomize=True)
@given(
    width=st.integers(4, 16), layer_norm=st.booleans(), batch=st.integers(8, 32), kind=st.sampled_from(["ce", "mse"])
)
def test_a_batchnorm_model_never_runs_the_blank_copy_cheap(width, layer_norm, batch, kind):
    """BatchNorm1d (train mode, CPU) over identical samples outputs normalised rounding noise whose size depends on
    the batch size (max |out| 1.4e-5 for 2 and 8 rows, 4.3e-5 for 13, 7.5e-5 for 32): the init check at CHEAP_RTOL
    cannot see it, but a ReLU after it gates on its sign and Adam normalises the noise gradients, so cheap and
    whole-batch copies drifted apart (up to 39% within 10 steps, e.g. width 4, batch 22, CE, Adam). B runs on whole
    batches with any BatchNorm."""
    loss = nn.CrossEntropyLoss() if kind == "ce" else nn.MSELoss()
    make = _mlp(width, True, layer_norm, nn.ReLU, kind)
    ctx, cheap, whole = _blank_arms(make, _mlp_data(batch, kind), loss=loss, optimizer=OPTIMIZERS["adam"])
    assert not cheap.cheap
    cheap.extend(ctx, 5)
    whole.extend(ctx, 5)
    assert cheap.losses == whole.losses


def test_a_batchnorm2d_cnn_runs_the_blank_copy_on_whole_batches():
    ctx = Context(load_setup(str(EXAMPLES / "cnn_bn.py")))
    ctx.preflight(time_steps=False)
    trace = ctx.trace(0)
    assert not BlankArm(ctx, trace).cheap


def _ce_step(model, batch, optimizer):
    x, y = batch
    optimizer.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss


class _TupleOut(nn.Module):
    """Logits and features: the output is not one tensor per sample."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 8), nn.ReLU())
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = self.body(x)
        return self.head(h), h


class _PerPosition(nn.Module):
    """Adds a term that depends on the sample's position in the batch: the first sample's output is not every
    sample's, even for identical inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))

    def forward(self, x):
        pos = torch.arange(x.shape[0], dtype=x.dtype).unsqueeze(1)
        return self.net(x) + pos * torch.tensor([0.05, 0.0, -0.05])


class _ManualBatchNorm(nn.Module):
    """A hand-written batch normalisation (not an nn.BatchNorm): batch statistics no module type reveals."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(5, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = self.a(x)
        h = (h - h.mean(0)) / (h.var(0, unbiased=False) + 1e-5).sqrt()
        return self.b(torch.relu(h))


def _with_dropout() -> nn.Module:
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 3))


@pytest.mark.parametrize(
    "case",
    [
        dict(make=_mlp(8, False, False, nn.ReLU, "ce"), train_step=_ce_step),
        dict(make=_TupleOut, loss=lambda out, y: nn.functional.cross_entropy(out[0], y)),
        dict(make=_PerPosition),
        dict(make=_ManualBatchNorm),
        dict(make=_with_dropout),
    ],
    ids=["train_step", "tuple_output", "batch_position_term", "manual_batch_norm", "dropout"],
)
def test_the_blank_copy_runs_whole_batches_when_a_cut_batch_is_not_the_same(case):
    ctx, arm, whole = _blank_arms(data=_mlp_data(16, "ce"), optimizer=OPTIMIZERS["adam"], **case)
    assert not arm.cheap
    arm.extend(ctx, 5)
    whole.extend(ctx, 5)
    assert arm.losses == whole.losses  # both whole-batch copies, step for step


def test_the_cheap_blank_copy_costs_a_fraction_of_a_step():
    """examples/gru_classifier.py (batch 32), full budget, only this probe: the probe pays for the shared trace (copy
    A, 50 steps + its checkpoints: ~59.7 step equivalents) and for copy B: 4.75 (its init forwards 1.42, 50 cheap
    steps and checkpoints 3.33). Measured: 64.4 steps for a 50-step run; with B forced to whole batches 136.7 (60
    steps: B then waits for the baseline steps). Two whole-batch copies cost >= 2x the run's steps; 1.5x leaves room
    for the trace's evaluations."""
    r = run_file("examples/gru_classifier.py", budget="full", only=[PID]).result(PID)
    assert r.status.value == "pass", r.message
    assert "train_loss_blank" in r.measured  # the side-by-side run decided (no early pass against the constant)
    assert r.steps < 1.5 * r.measured["steps"], (r.steps, r.measured["steps"])


def test_the_fast_budget_can_pass_clearly_beside_a_cheap_blank_copy(monkeypatch):
    """The cheap copy B trains beside the trace from step 0, so a clear pass at the fast budget's 10 steps is possible;
    with B on whole batches the fast budget leaves a clear pass to the full budget (an inconclusive skip)."""
    path = "checks/data_classes_shuffled_ok.py"
    r = run_file(path, budget="fast", only=[PID]).result(PID)
    assert r.status.value == "pass", r.message
    assert r.measured["stopped_early"] == "clear pass" and r.measured["steps"] == 10
    assert r.measured["train_advantage"] >= 0.05 and r.measured["heldout_advantage"] >= 0.03
    monkeypatch.setattr(BlankArm, "_cheap_agrees", lambda self, ctx, real: False)
    r = run_file(path, budget="fast", only=[PID]).result(PID)
    assert r.status.value == "skip" and "inconclusive" in r.message, r.message
