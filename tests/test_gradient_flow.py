"""The gradient-flow probe: parameters without gradient, outside the optimizer or hidden from parameters() fail;
vanishing gradients warn; legitimate patterns (zero init, ReZero, frozen parts, unused embedding rows, a teacher
kept out of parameters(), convenience lists of registered modules) pass."""

from __future__ import annotations

import pytest
import torch
from helpers import CHECKS, SEEDS, broken_files, rel, run_file
from hint_paths import bad_paths
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import nncheck

PROBE = "gradient-flow"


def _run_file(path, seed):
    return run_file(path, seed=seed, budget="fast", only=[PROBE]).result(PROBE)


@pytest.mark.parametrize("path", broken_files(PROBE), ids=rel)
def test_broken_setups_explain_themselves(path):
    r = _run_file(path, 0)
    assert r.hint and r.measured and r.expected, f"{rel(path)}: {r.status.value}: {r.message}"
    # every module path in the texts evaluates on the setup's model
    texts = [r.message, r.hint or "", *r.notes]
    assert not bad_paths(path, texts), bad_paths(path, texts)


def test_messages_name_the_culprit():
    r = _run_file(CHECKS / "gradient_flow_layer_in_list.py", 0)
    assert "`model.hidden[0]`, `model.hidden[1]`" in r.message and "nn.ModuleList" in r.hint
    r = _run_file(CHECKS / "gradient_flow_tensor_attribute.py", 0)
    assert "`model.log_temp`" in r.message and "nn.Parameter" in r.hint
    r = _run_file(CHECKS / "gradient_flow_optimizer_subset.py", 0)
    assert r.measured["not_in_optimizer"] == ["2.weight", "2.bias"]
    r = _run_file(CHECKS / "gradient_flow_no_grad_in_forward.py", 0)
    assert "torch.no_grad()" in r.message and "backbone.0.weight" in r.measured["no_gradient"]
    r = _run_file(CHECKS / "gradient_flow_detached_branch.py", 0)
    assert "cut after `model.context[0]`" in r.message
    r = _run_file(CHECKS / "gradient_flow_deep_sigmoid.py", 0)
    assert "vanishing" in r.message and r.series["grad_ratio"]["kind"] == "bar"
    assert len(r.measured["modules"]) == 20


# ------------------------------------------------------------------------------------------- API-level cases
def _data(n_in: int = 6, n_classes: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, n_in, generator=g)
    y = torch.randint(0, n_classes, (64,), generator=g)
    return [(x[:32], y[:32]), (x[32:], y[32:])]


def _check(model, data=None, **kw):
    return nncheck.check(model=model, data=data or _data(), only=[PROBE], budget="fast", **kw)[PROBE]


class _Cut(nn.Module):
    """A two-layer net whose first layer's output goes through `how` on its way to the head."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.first = nn.Linear(6, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.how == "no_grad":
            with torch.no_grad():
                h = self.first(x)
        else:
            h = self.first(x)
            h = {"detach": h.detach, "data": lambda: h.data, "long": lambda: h.long().float()}[self.how]()
        return self.head(h)


@pytest.mark.parametrize("how", ["detach", "data", "no_grad", "long"])
def test_every_way_of_cutting_the_graph_fails_naming_the_layer(how):
    r = _check(lambda: _Cut(how))
    assert r.status.value == "fail", r.message
    assert r.measured["no_gradient"] == ["first.weight", "first.bias"]


def test_round_gives_zero_gradient_and_fails():
    class Rounded(_Cut):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.first(x).round())

    r = _check(lambda: Rounded("round"))
    assert r.status.value == "fail" and r.measured["zero_gradient"] == ["first.weight", "first.bias"]


def test_unused_layer_fails():
    class Unused(_Cut):
        def __init__(self) -> None:
            super().__init__("detach")
            self.spare = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.relu(self.first(x)))

    r = _check(Unused)
    assert r.status.value == "fail" and "never called" in r.message


def test_zero_initialised_output_layer_passes():
    def model() -> nn.Module:
        m = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
        nn.init.zeros_(m[2].weight)
        nn.init.zeros_(m[2].bias)
        return m

    r = _check(model)
    assert r.status.value == "pass", r.message


def test_rezero_residual_passes():
    class ReZero(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = nn.Linear(6, 16)
            self.branch = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16))
            self.alpha = nn.Parameter(torch.zeros(1))
            self.head = nn.Linear(16, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.inp(x)
            return self.head(h + self.alpha * self.branch(h))

    r = _check(ReZero)
    assert r.status.value == "pass", r.message


def test_frozen_backbone_passes_and_is_listed():
    def model() -> nn.Module:
        m = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
        m[0].requires_grad_(False)
        return m

    r = _check(model, optimizer=lambda ps: torch.optim.Adam([p for p in ps if p.requires_grad], lr=1e-3))
    assert r.status.value == "pass", r.message
    assert r.measured["frozen"] == ["0.weight", "0.bias"] and "frozen" in r.notes[0]


def test_teacher_outside_parameters_and_convenience_list_pass():
    class Student(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(6, 16)
            self.b = nn.Linear(16, 3)
            self.layers = [self.a, self.b]  # a convenience list of registered modules: fine
            self._teacher = [nn.Linear(6, 3)]  # deliberately hidden, used without gradient

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                t = self._teacher[0](x)
            return self.b(torch.relu(self.a(x))) + 0 * t

    r = _check(Student)
    assert r.status.value == "pass", r.message
    assert any("_teacher[0]" in n for n in r.notes)


def test_large_vocabulary_embedding_with_unused_rows_passes():
    class Bag(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(5000, 16)
            self.head = nn.Linear(16, 3)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.head(self.emb(ids).mean(dim=1))

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 5000, (64, 4), generator=g)
    y = torch.randint(0, 3, (64,), generator=g)
    r = _check(Bag, data=[(ids[:32], y[:32]), (ids[32:], y[32:])])
    assert r.status.value == "pass", r.message


def test_adam_tiny_lr_and_weight_decay_pass():
    def model() -> nn.Module:
        return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))

    for opt in (lambda ps: torch.optim.Adam(ps, lr=1e-7), lambda ps: torch.optim.SGD(ps, lr=1e-3, weight_decay=0.1)):
        r = _check(model, optimizer=opt)
        assert r.status.value == "pass", r.message


@settings(max_examples=6, deadline=None)
@given(depth=st.integers(1, 4), width=st.integers(4, 32), act=st.sampled_from([nn.ReLU, nn.Tanh, nn.GELU]))
def test_plain_mlps_pass(depth, width, act):
    def model() -> nn.Module:
        layers: list[nn.Module] = [nn.Linear(6, width), act()]
        for _ in range(depth - 1):
            layers += [nn.Linear(width, width), act()]
        return nn.Sequential(*layers, nn.Linear(width, 3))

    r = _check(model)
    assert r.status.value == "pass", r.message


@settings(max_examples=6, deadline=None)
@given(n_hidden=st.integers(1, 3), hidden_at=st.integers(0, 2), as_dict=st.booleans())
def test_any_layer_in_a_plain_container_fails_naming_it(n_hidden, hidden_at, as_dict):
    hidden_at %= n_hidden

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = nn.Linear(6, 8)
            self.registered = nn.ModuleList(nn.Linear(8, 8) for i in range(n_hidden) if i != hidden_at)
            layer = nn.Linear(8, 8)
            self.extra = {"h": layer} if as_dict else [layer]
            self.out = nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.inp(x))
            for m in [*self.registered, *(self.extra.values() if as_dict else self.extra)]:
                h = torch.relu(m(h))
            return self.out(h)

    r = _check(Net)
    assert r.status.value == "fail"
    assert r.measured["hidden"][0]["attribute"] == ("model.extra['h']" if as_dict else "model.extra[0]")
    assert ("nn.ModuleDict" if as_dict else "nn.ModuleList") in r.hint


# ---------------------------------------------------------------------------------------------- fix round
BLOCKED = {
    "act_dead_relu_negative_bias.py": ("every unit of the ReLU `model[1]` is dead", "model[0].bias.zero_()"),
    "lo_dropout_p1_keep_prob.py": ("the dropout `model[2]` has p=1", "`model[2] = nn.Dropout(p=0.1)`"),
    "gradient_flow_embedding_all_padding.py": ("embedding `model.emb` is its padding_idx (0)", "`model.emb`"),
}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", sorted(BLOCKED))
def test_zero_gradient_names_the_blocking_module(name, seed):
    # a dead ReLU / dropout p=1 / all-padding embedding explains the zero gradient: no straight-through lead
    r = _run_file(CHECKS / name, seed)
    cause, fix = BLOCKED[name]
    assert r.status.value == "fail" and cause in r.message, r.message
    assert fix in r.hint and "straight-through" not in r.hint, r.hint


def test_zero_gradient_without_a_blocker_keeps_the_piecewise_constant_lead():
    class Rounded(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Linear(6, 8)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            return self.head(self.enc(x).round())

    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)) for _ in range(2)]
    r = nncheck.check(model=Rounded, data=data, only=[PROBE])[PROBE]
    assert r.status.value == "fail" and "straight-through" in r.hint and "`model.enc`" in r.hint, r.hint


@pytest.mark.parametrize("seed", SEEDS)
def test_frozen_output_layer_warns_naming_it(seed):
    r = _run_file(CHECKS / "gradient_flow_frozen_head.py", seed)
    assert r.status.value == "warn" and "output layer `model[4]`" in r.message, r.message
    assert "for p in model[4].parameters(): p.requires_grad_(True)" in r.hint


class _FrozenBackbone(nn.Module):
    """A frozen 'pretrained' CNN (eval mode, no_grad) and a trainable head."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )  # fmt: skip
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.head = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))

    def train(self, mode=True):
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, x):
        with torch.no_grad():
            f = self.backbone(x)
        return self.head(f)


@pytest.mark.parametrize("seed", SEEDS)
def test_frozen_backbone_with_trainable_head_passes(seed):
    g = torch.Generator().manual_seed(seed)
    data = [(torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 4, (16,), generator=g)) for _ in range(2)]
    r = nncheck.check(
        model=_FrozenBackbone,
        data=data,
        optimizer=lambda ps: torch.optim.Adam([p for p in ps if p.requires_grad], lr=1e-3),
        only=[PROBE],
        seed=seed,
    )[PROBE]
    assert r.status.value == "pass", r.message


def test_tied_output_layer_is_not_a_frozen_head():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(20, 8)
            self.out = nn.Linear(8, 20, bias=False)
            self.out.weight = self.emb.weight

        def forward(self, ids):
            return self.out(self.emb(ids).mean(1))

    g = torch.Generator().manual_seed(0)
    data = [(torch.randint(0, 20, (16, 5), generator=g), torch.randint(0, 20, (16,), generator=g)) for _ in range(2)]
    r = nncheck.check(model=Tied, data=data, only=[PROBE])[PROBE]
    assert r.status.value == "pass", r.message
