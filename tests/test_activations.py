"""The activations probe: dead ReLUs, saturated tanh/sigmoid, activation scale across depth, residual stream growth.

The corpus verdicts are tests/test_corpus.py's; here: what the messages and hints name, the unit and depth
measurements, hand-built models on both sides, and families of well-initialised MLPs and pre-LN stacks that pass.
"""

from __future__ import annotations

import pytest
import torch
from helpers import CHECKS, SEEDS, broken_files, rel, run_file
from hint_paths import bad_paths
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import nncheck
from nncheck.probes.activations import LayerStats, depth_ratios, unit_dim

PID = "activations"


def batches_of(n_features: int = 16, n_classes: int = 4, batch: int = 32, n: int = 128, scale: float = 1.0):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, n_features, generator=g) * scale
    y = torch.randint(0, n_classes, (n,), generator=g)
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, n, batch)]


def check(model, data, **kw):
    return nncheck.check(model=model, data=data, only=[PID], budget="fast", **kw)[PID]


@pytest.mark.parametrize("path", broken_files(PID), ids=rel)
def test_broken_setups_explain_themselves(path):
    r = run_file(path, seed=0, budget="fast", only=[PID]).result(PID)
    assert r.hint and r.measured and r.expected, f"{rel(path)}: {r.status.value}: {r.message}"
    # hints are pasted by users: `model[0].bias`, never `model.0.bias` or a bare `0`
    bad = bad_paths(path, [r.message, r.hint or "", *r.notes])
    assert not bad, bad


def test_dead_layer_is_named_and_hint_names_the_bias():
    def model():
        net = nn.Sequential()
        net.add_module("features", nn.Sequential(nn.Linear(16, 32), nn.ReLU()))
        net.add_module("head", nn.Linear(32, 4))
        with torch.no_grad():
            net.features[0].bias.fill_(-10.0)
        return net

    r = check(model, batches_of())
    assert r.status.value == "fail"
    assert "`model.features[1]`" in r.message
    assert "model.features[0].bias.zero_()" in r.hint
    assert r.measured["layers"]["features.1"]["dead_fraction"] == 1.0


def test_mostly_dead_layer_warns():
    def model():
        net = nn.Sequential(nn.Linear(16, 40), nn.ReLU(), nn.Linear(40, 4))
        with torch.no_grad():
            net[0].bias[:30].fill_(-20.0)  # 30 of 40 units dead (75%)
        return net

    r = check(model, batches_of())
    assert r.status.value == "warn"
    assert "75%" in r.message


def test_leaky_relu_is_never_dead():
    def model():
        net = nn.Sequential(nn.Linear(16, 32), nn.LeakyReLU(0.01), nn.Linear(32, 4))
        with torch.no_grad():
            net[0].bias.fill_(-10.0)
        return net

    assert check(model, batches_of()).status.value == "pass"


def test_small_batch_of_8_does_not_look_dead():
    def model():
        return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))

    for seed in SEEDS:
        r = check(model, batches_of(batch=8, n=64), seed=seed)
        assert r.status.value == "pass", r.message


def test_conv_units_are_channels():
    conv = nn.Conv2d(3, 8, 3)
    assert unit_dim(torch.zeros(2, 8, 5, 5), nn.ReLU(), conv) == 1
    assert unit_dim(torch.zeros(2, 8, 5), nn.ReLU(), nn.Conv1d(3, 8, 3)) == 1
    assert unit_dim(torch.zeros(2, 7, 32), nn.ReLU(), nn.Linear(4, 32)) == 2
    assert unit_dim(torch.zeros(2, 32), nn.ReLU(), None) == 1


def test_depth_ratios_find_the_largest_fall_in_depth_order():
    def layer(name, std):
        s = LayerStats(name, "layer", 0, 1, count=2)
        s.sums, s.sqsums = torch.zeros(1, dtype=torch.float64), torch.full((1,), 2 * std * std, dtype=torch.float64)
        return s

    shrink, a, b, grow, _, _ = depth_ratios([layer("a", 1.0), layer("b", 5.0), layer("c", 0.01)])
    assert (a, b) == ("b", "c") and shrink == pytest.approx(500.0)
    assert grow == pytest.approx(5.0)


def test_saturated_sigmoid_warns_and_keeps_series():
    model = lambda: nn.Sequential(nn.Linear(16, 32), nn.Sigmoid(), nn.Linear(32, 4))  # noqa: E731
    r = check(model, batches_of(scale=500.0))
    assert r.status.value == "warn" and "sigmoid `model[1]`" in r.message
    assert r.series["saturated_fraction_per_layer"]["kind"] == "bar"
    assert r.series["std_per_layer"]["curves"]["std"]["x"][0] == "0"


def test_exploding_activations_warn():
    def model():
        layers: list[nn.Module] = []
        for i in range(6):
            layers += [nn.Linear(16 if i == 0 else 64, 64), nn.LeakyReLU(0.2)]
        net = nn.Sequential(*layers, nn.Linear(64, 4))
        for m in net.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=1.0)
        return net

    r = check(model, batches_of())
    assert r.status.value == "warn" and "explode" in r.message


def test_functional_only_model_is_skipped():
    class F(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 16) * 0.1)

        def forward(self, x):
            return torch.relu(x) @ self.w.t()

    assert check(F, batches_of()).status.value == "skip"


@settings(max_examples=12, deadline=None, derandomize=True)
@given(
    depth=st.integers(1, 6),
    width=st.sampled_from([32, 64]),
    act=st.sampled_from(["relu", "tanh"]),
    batch=st.sampled_from([16, 32]),
)
def test_well_initialised_mlps_pass(depth, width, act, batch):
    def model():
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(16 if i == 0 else width, width), nn.ReLU() if act == "relu" else nn.Tanh()]
        net = nn.Sequential(*layers, nn.Linear(width, 4))
        for m in net.modules():
            if isinstance(m, nn.Linear):
                if act == "relu":
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                else:
                    nn.init.xavier_normal_(m.weight, gain=nn.init.calculate_gain("tanh"))
                nn.init.zeros_(m.bias)
        return net

    r = check(model, batches_of(batch=batch))
    assert r.status.value == "pass", r.message


# ---------------------------------------------------------------------------------------------- residual stream
class _PreLN(nn.Module):
    def __init__(self, d: int, twice: bool) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.f = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        self.twice = twice

    def forward(self, x):
        return x + self.f(self.ln(x)) + (x if self.twice else 0)


def _stack(depth: int, twice: bool):
    return lambda: nn.Sequential(
        nn.Linear(16, 32), nn.Sequential(*[_PreLN(32, twice) for _ in range(depth)]), nn.LayerNorm(32),
        nn.Linear(32, 4),
    )  # fmt: skip


@pytest.mark.parametrize("seed", SEEDS)
def test_residual_added_twice_warns_naming_the_blocks(seed):
    r = run_file(CHECKS / "act_residual_added_twice.py", seed=seed, budget="fast", only=[PID]).result(PID)
    assert r.status.value == "warn" and "residual stream explodes across 8 blocks" in r.message, r.message
    assert "`model.blocks[0]` .. `model.blocks[7]`" in r.message and "Block.forward" in r.hint


@settings(max_examples=6, deadline=None)
@given(depth=st.integers(2, 24))
def test_correct_pre_ln_stacks_do_not_warn_on_the_stream(depth):
    r = check(_stack(depth, twice=False), batches_of())
    assert r.status.value == "pass", r.message
    growth = [max(v.values()) / min(v.values()) for v in r.measured["residual_streams"].values()]
    assert growth and max(growth) < 10


def test_residual_stream_is_checked_inside_a_mixed_sequential():
    # a run of repeated blocks between other modules (examples/residual_cnn.py: MaxPool2d, block, block)
    def model():
        return nn.Sequential(nn.Linear(16, 32), *[_PreLN(32, twice=True) for _ in range(10)], nn.Linear(32, 4))

    r = check(model, batches_of())
    assert r.status.value == "warn" and "`model[1]` .. `model[10]`" in r.message, r.message


# ---------------------------------------------------------------------------------------------- transformers (issue 11)
class _PostLN(nn.Module):
    """A post-LN transformer block stack under a transformer's init (std 0.02) and a head fed from the last LayerNorm:
    residual branch outputs are ~100x smaller than the LayerNorm-ed stream by design."""

    def __init__(self, dim: int = 32, depth: int = 2) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, dim)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, 2, 64, dropout=0.0, batch_first=True) for _ in range(depth)
        )
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 3))
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)

    def forward(self, x):
        h = self.emb(x)
        for b in self.blocks:
            h = b(h)
        return self.head(h[:, 0])


def test_residual_branches_are_not_compared_with_layers_behind_a_norm():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 50, (64, 12), generator=g)
    data = [(ids[i : i + 16], ids[i : i + 16, 0] % 3) for i in range(0, 64, 16)]
    r = nncheck.check(model=_PostLN, data=data, only=["activations"])["activations"]
    assert r.status.value == "pass", r.message


class _TinyTokenNet(nn.Module):
    """Embedding -> a projection scaled to nothing -> attention -> head: a real vanishing scale, in a transformer."""

    def __init__(self, attention: bool = True) -> None:
        super().__init__()
        self.emb, self.proj = nn.Embedding(50, 16), nn.Linear(16, 16)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True) if attention else None
        self.mlp, self.act, self.head = nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)
        with torch.no_grad():
            self.proj.weight.mul_(1e-3)

    def forward(self, x):
        h = self.proj(self.emb(x))
        if self.attn is not None:
            h = self.attn(h, h, h, need_weights=False)[0]
        return self.head(self.act(self.mlp(h))[:, 0])


@pytest.mark.parametrize("attention", [True, False])
def test_init_hints_never_suggest_kaiming_for_embeddings_or_transformers(attention):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 50, (64, 12), generator=g)
    data = [(ids[i : i + 16], ids[i : i + 16, 0] % 3) for i in range(0, 64, 16)]
    r = nncheck.check(model=lambda: _TinyTokenNet(attention), data=data, only=["activations"])["activations"]
    assert r.status.value == "warn" and "vanish" in r.message, r.message
    assert "kaiming_normal_(model.emb" not in r.hint and "model.emb.weight" not in r.hint, r.hint
    if attention:  # a transformer keeps its library's init
        assert "N(0, 0.02)" in r.hint and "Re-initialise the hidden layers" not in r.hint, r.hint
    else:  # He init for the Linear layers only, never the embedding
        assert "Re-initialise the hidden layers (model.proj, model.mlp) with He (Kaiming)" in r.hint, r.hint
