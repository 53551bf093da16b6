"""batch-isolation: per-sample gradient isolation (eval, then train mode) and causal leakage along time."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from helpers import CHECKS, SEEDS, broken_files, correct_files, rel, run_file
from hint_paths import bad_paths
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import nncheck

PID = "batch-isolation"


def _check(model, data, **kw):
    return nncheck.check(model=model, data=data, only=[PID], **kw)[PID]


def _xy(n=16, f=6, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, f, generator=g)
    return [(x, torch.randint(0, classes, (n,), generator=g))]


# ---------------------------------------------------------------------------------------------- corpus
@pytest.mark.parametrize("path", broken_files(PID), ids=rel)
def test_broken_setups_explain_with_module_paths_that_evaluate(path):
    r = run_file(path, budget="fast", only=[PID]).result(PID)
    assert r.hint and r.measured and r.expected, r.message
    # hints are pasted by users: `model[0].bias`, never `model.0.bias` or a bare `0`
    bad = bad_paths(path, [r.message, r.hint or "", *r.notes])
    assert not bad, bad


def test_causal_lm_is_checked_and_leak_is_located():
    lm = next(p for p in correct_files() if p.name == "tiny_lm.py")
    r = run_file(lm, only=[PID]).result(PID)
    assert r.status.value == "pass"
    assert r.measured["causal"]["checked"] and not r.measured["causal"]["leak"]
    assert "embedding tok" in r.measured["leaves"][0]
    broken = next(p for p in broken_files(PID) if p.name == "bi_causal_lm_no_mask.py")
    r = run_file(broken, only=[PID]).result(PID)
    assert r.measured["causal"]["leak"] and r.measured["causal"]["first_leaking_position"] == 0
    assert r.measured["causal"]["leaks_from_position"] > 0


def test_gru_mixup_names_the_gru():
    path = next(p for p in broken_files(PID) if p.name == "bi_gru_not_batch_first.py")
    r = run_file(path, only=[PID]).result(PID)
    assert r.measured["eval"]["where"]["at_or_before"] == "gru"
    assert "batch_first=True" in r.hint


# ---------------------------------------------------------------------------------------------- modes
class _TrainOnlyCentering(nn.Module):
    """Centres over the batch in training mode only (a hand-made batch statistic, not a BatchNorm)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))

    def forward(self, x):
        if self.training:
            x = x - x.mean(0)
        return self.net(x)


def test_train_only_leak_without_batchnorm_fails():
    r = _check(_TrainOnlyCentering, _xy())
    assert r.status.value == "fail"
    assert not r.measured["eval"]["leak"] and r.measured["train"]["leak"]


class _TrainOnlyStraightThroughMean(nn.Module):
    """Adds `m - m.detach()` (zero) of the batch mean in training mode only: the same output values as eval mode,
    but a gradient that crosses the batch."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = torch.relu(self.a(x))
        if self.training:
            m = h.mean(0, keepdim=True)
            h = h + (m - m.detach())
        return self.b(h)


def test_a_train_only_leak_with_eval_mode_values_is_still_measured():
    """The train-mode shortcut needs the eval-mode values *and* the same autograd graph: equal values alone would
    miss this leak."""
    r = _check(_TrainOnlyStraightThroughMean, _xy())
    assert r.status.value == "fail"
    assert r.measured["train"]["leak"] and "same_outputs_as_eval" not in r.measured["train"]


def test_batchnorm_train_mode_leak_is_expected():
    r = _check(lambda: nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)), _xy())
    assert r.status.value == "pass"
    assert r.measured["train"]["leak"] and r.measured["train"]["expected_from_batchnorm"] == ["1"]
    assert any("BatchNorm" in n for n in r.notes)


def test_softmax_outputs_still_get_gradient():
    # output[i].sum() == 1 for every input: a plain sum would see no dependence at all
    r = _check(
        lambda: nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3), nn.Softmax(dim=-1)),
        _xy(),
        loss=lambda out, y: nn.functional.nll_loss(out.clamp_min(1e-9).log(), y),
    )
    assert r.status.value == "pass", r.message


def test_input_ignored_fails_as_dead():
    class Dead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(6, 3)

        def forward(self, x):
            return self.lin(x) * 0 + self.lin.bias

    r = _check(Dead, _xy())
    assert r.status.value == "fail" and r.measured["eval"]["dead_samples"]


def test_softmax_over_batch_fails():
    r = _check(
        lambda: nn.Sequential(nn.Linear(6, 3), nn.Softmax(dim=0)),
        _xy(),
        loss=lambda out, y: nn.functional.nll_loss(out.clamp_min(1e-9).log(), y),
    )
    assert r.status.value == "fail"


# ---------------------------------------------------------------------------------------------- input kinds
class _DictNet(nn.Module):
    def __init__(self, mix: bool) -> None:
        super().__init__()
        self.mix = mix
        self.a = nn.Linear(4, 8)
        self.b = nn.Linear(3, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, num, extra):
        h = self.a(num) + self.b(extra.flip(0) if self.mix else extra)
        return self.head(torch.relu(h))


@pytest.mark.parametrize("mix, want", [(False, "pass"), (True, "fail")])
def test_dict_inputs_every_float_tensor_is_checked(mix, want):
    g = torch.Generator().manual_seed(0)
    data = [
        (
            {"num": torch.randn(8, 4, generator=g), "extra": torch.randn(8, 3, generator=g)},
            torch.randint(0, 2, (8,), generator=g),
        )
    ]
    r = _check(lambda: _DictNet(mix), data)
    assert r.status.value == want, r.message
    assert len(r.measured["leaves"]) == 2


@pytest.mark.parametrize("mix, want", [(False, "pass"), (True, "fail")])
def test_integer_inputs_without_embedding_use_perturbation(mix, want):
    class OneHot(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(5, 2)

        def forward(self, x):
            h = nn.functional.one_hot(x, 5).float().mean(1)
            return self.lin(h - h.mean(0) if mix else h)

    g = torch.Generator().manual_seed(0)
    data = [(torch.randint(0, 5, (8, 4), generator=g), torch.randint(0, 2, (8,), generator=g))]
    r = _check(OneHot, data)
    assert r.status.value == want, r.message
    assert r.measured["eval"]["method"] == "perturbation"


class _Frozen(nn.Module):
    """A frozen feature extractor run under torch.no_grad(): no gradient reaches the input, yet it is used."""

    def __init__(self, mix: bool) -> None:
        super().__init__()
        self.mix = mix
        self.backbone = nn.Sequential(nn.Linear(6, 16), nn.ReLU())
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        with torch.no_grad():
            h = self.backbone(x)
            if self.mix:
                h = h - h.mean(0)
        return self.head(h)


@pytest.mark.parametrize("mix, want", [(False, "pass"), (True, "fail")])
def test_frozen_backbone_under_no_grad_is_checked_by_perturbation(mix, want):
    r = _check(lambda: _Frozen(mix), _xy())
    assert r.status.value == want, r.message
    assert r.measured["eval"]["method"] == "perturbation"


# ---------------------------------------------------------------------------------------------- property
ACTIVATIONS = [nn.ReLU, nn.Tanh, nn.GELU, nn.Sigmoid, nn.LeakyReLU, nn.SiLU]


@settings(max_examples=15, deadline=None)
@given(
    widths=st.lists(st.integers(1, 12), min_size=1, max_size=3),
    act=st.sampled_from(ACTIVATIONS),
    layer_norm=st.booleans(),
    dropout=st.booleans(),
    batch=st.integers(2, 9),
    n_in=st.integers(1, 6),
)
def test_any_mlp_without_batchnorm_is_isolated(widths, act, layer_norm, dropout, batch, n_in):
    def make():
        layers: list[nn.Module] = []
        d = n_in
        for w in widths:
            layers += [nn.Linear(d, w), act()]
            if layer_norm:
                layers.append(nn.LayerNorm(w))
            if dropout:
                layers.append(nn.Dropout(0.5))
            d = w
        layers.append(nn.Linear(d, 3))
        return nn.Sequential(*layers)

    r = _check(make, _xy(n=batch, f=n_in), budget="fast")
    assert not r.measured["eval"]["leak"], r.message
    if r.status.value == "fail":  # only when tiny ReLU layers leave every probed sample without gradient
        assert len(r.measured["eval"]["dead_samples"]) == len(r.measured["eval"]["samples"]), r.message
    else:
        assert r.status.value == "pass", r.message
        assert not r.measured["train"]["leak"]


def test_in_place_ops_on_inputs_and_embedding_outputs_work():
    class InPlace(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tok = nn.Embedding(10, 8)
            self.pos = nn.Parameter(torch.randn(5, 8))
            self.head = nn.Linear(8, 3)

        def forward(self, ids):
            h = self.tok(ids)
            h += self.pos  # in place on the embedding output
            return self.head(h.relu_().mean(1))

    g = torch.Generator().manual_seed(0)
    data = [(torch.randint(0, 10, (6, 5), generator=g), torch.randint(0, 3, (6,), generator=g))]
    r = _check(InPlace, data)
    assert r.status.value == "pass", r.message


# ---------------------------------------------------------------------------------------------- blockers
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    "name, cause",
    [
        ("act_dead_relu_negative_bias.py", "every unit of the ReLU `model[1]` is dead"),
        ("gradient_flow_embedding_all_padding.py", "embedding `model.emb` is its padding_idx (0)"),
    ],
)
def test_ignored_input_names_the_blocking_module(name, cause, seed):
    # not "the input is overwritten or detached": a dead ReLU / an all-padding embedding cuts the dependence
    r = run_file(CHECKS / name, seed=seed, budget="fast", only=[PID]).result(PID)
    assert r.status.value == "fail" and cause in r.message, r.message
    assert "overwritten or detached" not in r.hint, r.hint


# ---------------------------------------------------------------------------------------------- padding (issue 11)
class _Pooler(nn.Module):
    """Embeds tokens and averages them over the sequence, over the real tokens only when ``masked``."""

    def __init__(self, masked: bool) -> None:
        super().__init__()
        self.masked = masked
        self.emb, self.head = nn.Embedding(20, 8), nn.Linear(8, 3)

    def forward(self, input_ids, attention_mask):
        h = self.emb(input_ids)
        if self.masked:
            m = attention_mask[..., None].float()
            return self.head((h * m).sum(1) / m.sum(1))
        return self.head(h.mean(1))  # the padding is averaged in


def _padded():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 20, (8, 6), generator=g)
    mask = (torch.arange(6)[None] < torch.tensor([6, 3, 4, 6, 2, 5, 6, 3])[:, None]).long()
    ids = ids * mask
    return [({"input_ids": ids, "attention_mask": mask}, ids[:, 0] % 3)]


def test_padded_positions_must_not_reach_the_output():
    r = _check(lambda: _Pooler(masked=True), _padded())
    assert r.status.value == "pass" and r.measured["padding"]["checked"], r.message
    r = _check(lambda: _Pooler(masked=False), _padded())
    assert r.status.value == "fail" and "padding leak" in r.message and "attention_mask" in r.hint


def test_batchnorm_without_running_stats_is_named():
    def model():
        bn = nn.BatchNorm1d(16, track_running_stats=False)
        return nn.Sequential(nn.Linear(6, 16), bn, nn.ReLU(), nn.Linear(16, 3))

    r = _check(model, _xy())
    assert r.status.value == "fail"
    assert "model[1]" in r.message and "track_running_stats=False" in r.hint
    assert r.hint.startswith("BatchNorm `model[1]` keeps no running statistics"), r.hint


@dataclass
class _Out:
    logits: torch.Tensor
    box: torch.Tensor


class _TwoOutputs(nn.Module):
    """Two heads on one trunk; only the second one mixes the batch (when ``mix``); returned as ``kind``."""

    def __init__(self, kind: str, mix: bool) -> None:
        super().__init__()
        self.kind, self.mix = kind, mix
        self.trunk, self.cls, self.reg = nn.Linear(6, 16), nn.Linear(16, 3), nn.Linear(16, 2)

    def forward(self, x):
        h = torch.relu(self.trunk(x))
        box = self.reg(h - h.mean(0) if self.mix else h)
        logits = self.cls(h)
        if self.kind == "tuple":
            return logits, box
        if self.kind == "dict":
            return {"logits": logits, "box": box}
        return _Out(logits, box)


@pytest.mark.parametrize("kind", ["tuple", "dict", "dataclass"])
@pytest.mark.parametrize("mix", [False, True])
def test_every_output_tensor_of_a_multi_output_model_is_checked(kind, mix):
    x, y = _xy(n=16)[0]
    key = 0 if kind == "tuple" else "logits"

    def loss(out, target):
        logits = out.logits if kind == "dataclass" else out[key]
        return nn.functional.cross_entropy(logits, target)

    r = _check(lambda: _TwoOutputs(kind, mix), [(x, y)], loss=loss)
    assert r.status.value == ("fail" if mix else "pass"), r.message
    if not mix:
        box = {"tuple": "output[1]", "dict": "output['box']", "dataclass": "output.box"}[kind]
        assert box in r.message, r.message


# ---------------------------------------------------------------------------------------------- costs
def _bn_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def _dropout_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3))


@pytest.mark.parametrize(
    "model, same",
    [(_dropout_mlp, True), (_bn_mlp, False), (_TrainOnlyCentering, False)],
    ids=["dropout", "batchnorm", "train_only_branch"],
)
def test_train_mode_is_measured_again_only_when_it_computes_otherwise(model, same):
    """A train-mode forward with dropout modules off that equals the eval-mode one bit for bit reuses the eval
    measurement (measured["train"]["same_outputs_as_eval"]); BatchNorm's batch statistics and an `if self.training:`
    branch that changes the output are measured in train mode."""
    r = _check(model, _xy(), budget="fast")
    assert r.measured["train"].get("same_outputs_as_eval", False) is same, r.measured["train"]
    if not same:
        assert r.measured["train"]["leak"]  # the batch statistic was measured, not copied from eval mode


def test_mlp_example_reuses_the_eval_measurement_for_train_mode():
    r = run_file("examples/mlp.py", budget="fast", only=[PID]).result(PID)
    assert r.status.value == "pass", r.message
    assert r.measured["train"]["same_outputs_as_eval"] is True and not r.measured["train"]["leak"]


@pytest.mark.parametrize(
    "name, leaks_from", [("bi_causal_lm_no_mask.py", 4), ("bi_causal_mask_off_by_one.py", 1)], ids=lambda v: str(v)
)
def test_causal_leaks_are_found_on_the_first_sample_alone(name, leaks_from):
    r = run_file(CHECKS / name, budget="fast", only=[PID]).result(PID)
    assert r.status.value == "fail", r.message
    causal = r.measured["causal"]
    assert causal["leak"] and causal["first_leaking_position"] == 0 and causal["leaks_from_position"] == leaks_from


def test_causal_check_on_one_sample_is_cheap():
    """examples/tiny_lm.py (batch 16): each causal position's backward runs through one sample's forward. Measured
    (fast): 3.02 steps; with the causal check on the whole batch's forward 8.0 (10 when train mode was measured
    again too)."""
    r = run_file("examples/tiny_lm.py", budget="fast", only=[PID]).result(PID)
    assert r.status.value == "pass", r.message
    assert r.measured["causal"]["checked"] and not r.measured["causal"]["leak"]
    assert r.measured["causal"]["positions_checked"] > 0
    assert r.steps < 6, r.steps
