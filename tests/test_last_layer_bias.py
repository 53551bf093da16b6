"""last-layer-bias: a strong label prior left out of the output bias fails; balanced labels, a bias already at the
prior, and the sampling noise of a prior estimated on a few batches do not.

The verdicts on the corpus (checks/, examples/, seeds 0-2, both budgets) are tests/test_corpus.py's; these tests are
the probe's own: the line to paste, hand-built models and label priors."""

from __future__ import annotations

import importlib.util
import math
import re

import pytest
import torch
from helpers import SEEDS, broken_files, declared, rel, run_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import nncheck

PID = "last-layer-bias"
CHECKS = {p.name: p for p in broken_files(PID)}
PASTE = re.compile(r"`(with torch\.no_grad\(\): model[^`]*)`")


def result(path, seed: int = 0, budget: str = "fast"):
    return run_file(path, seed=seed, budget=budget, only=[PID]).result(PID)


def check(model, data, budget: str = "fast", **kw):
    return nncheck.check(model=model, data=data, only=[PID], budget=budget, **kw)[PID]


@pytest.mark.parametrize("path", broken_files(PID), ids=rel)
def test_broken_setups_fail_with_a_line_to_paste(path):
    r = result(path)
    assert r.status.value == declared(path).expect[PID], f"{rel(path)}: {r.message}"
    assert PASTE.search(r.hint), r.hint
    assert r.measured["gain"] > 0.1 and r.measured["loss_with_prior_bias"] < r.measured["loss_at_init"]


def _load(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", ["llb_imbalanced_default_bias.py", "llb_bce_rare_positives.py"])
def test_pasting_the_hint_fixes_the_setup(name):
    r = result(CHECKS[name], budget="full")
    line = PASTE.search(r.hint).group(1)
    mod = _load(CHECKS[name])

    def fixed_model() -> nn.Module:
        model = mod.model()
        exec(line, {"torch": torch, "model": model})
        return model

    after = check(fixed_model, mod.data, budget="full", optimizer=mod.optimizer)
    assert after.status.value == "pass", after.message


def test_regression_hint_fills_the_target_mean():
    r = result(CHECKS["llb_regression_target_mean_100.py"])
    assert "model[2].bias.fill_(99." in r.hint and "standardise" in r.hint


def _classifier(classes: int, probs: list[float] | None, seed: int, bias: bool = True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 8, generator=g)
    if probs is None:
        y = torch.randint(0, classes, (256,), generator=g)
    else:
        y = torch.multinomial(torch.tensor(probs), 256, replacement=True, generator=g)
    data = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]
    return (lambda: nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, classes, bias=bias))), data


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(classes=st.integers(2, 40), seed=st.integers(0, 10_000), budget=st.sampled_from(["fast", "full"]))
def test_balanced_labels_never_flagged_despite_a_noisy_prior(classes, seed, budget):
    """With many classes the prior of a few batches is noisy (max/min often >= 3); judged on other batches, writing
    it in gains nothing."""
    model, data = _classifier(classes, None, seed)
    r = check(model, data, budget=budget, seed=seed)
    assert r.status.value == "pass", r.message


def test_output_layer_without_bias_and_strong_prior_warns():
    model, data = _classifier(3, [0.9, 0.05, 0.05], 0, bias=False)
    r = check(model, data)
    assert r.status.value == "warn" and "has no bias" in r.message
    assert "bias=True" in r.hint and "model[2].bias.copy_(torch.tensor([" in r.hint


def test_sequence_outputs_btc():
    """(B, T, C) outputs with (B, T) token targets following a Zipf-like unigram prior."""
    vocab = 12
    probs = [1 / (k + 1) for k in range(vocab)]
    g = torch.Generator().manual_seed(0)
    ids = torch.multinomial(torch.tensor(probs), 64 * 10, replacement=True, generator=g).reshape(64, 10)
    data = [(ids[i : i + 16, :-1], ids[i : i + 16, 1:]) for i in range(0, 64, 16)]

    class LM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(vocab, 16)
            self.head = nn.Linear(16, vocab)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.tanh(self.emb(x)))

    r = check(LM, data)
    assert r.status.value == "warn", r.message  # a Zipf-like prior is moderate: 1 - H(p) / log C ~ 15%
    assert "model.head.bias.copy_(torch.tensor([" in r.hint
    line = PASTE.search(r.hint).group(1)

    def fixed() -> nn.Module:
        model = LM()
        exec(line, {"torch": torch, "model": model})
        return model

    assert check(fixed, data).status.value == "pass"


def test_multilabel_bce_is_per_label():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    rates = torch.tensor([0.5, 0.5, 0.03, 0.5])
    y = (torch.rand(256, 4, generator=g) < rates).float()
    data = [(x[i : i + 64], y[i : i + 64]) for i in range(0, 256, 64)]
    r = check(lambda: nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)), data)
    assert r.status.value in ("warn", "fail"), r.message
    bias = r.measured["ideal_bias"]
    assert abs(bias[0]) < 0.5 and bias[2] < -2.5 and math.isclose(bias[2], min(bias))


def test_custom_loss_is_judged_when_it_is_one_torch_loss_and_skipped_otherwise():
    model, data = _classifier(3, [0.9, 0.05, 0.05], 0)
    r = check(model, data, loss=lambda out, y: nn.functional.cross_entropy(out, y) * 1.0)
    assert r.status.value == "fail", r.message  # the cross-entropy term is recognised
    r = check(model, data, loss=lambda out, y: -out.log_softmax(1).gather(1, y[:, None]).mean())
    assert r.status.value == "skip"


# ---------------------------------------------------------------------------------------------- fix round
class Seq(nn.Module):
    """A tiny decoder: (B, T) token ids -> (B, T, V) logits."""

    def __init__(self, vocab: int, bias: bool = True, tied: bool = False) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, 16)
        self.head = nn.Linear(16, vocab, bias=bias)
        if tied:
            self.head.weight = self.emb.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.emb(x)))


def _specials_data(probs: list[float], vocab: int = 12, seed: int = 0):
    """Targets drawn from classes 2.. with ``probs``; classes 0, 1 (BOS, PAD) never occur as targets."""
    g = torch.Generator().manual_seed(seed)
    tgt = 2 + torch.multinomial(torch.tensor(probs), 256 * 8, replacement=True, generator=g).reshape(256, 8)
    src = torch.randint(2, vocab, (256, 8), generator=g)
    return [(src[i : i + 32], tgt[i : i + 32]) for i in range(0, 256, 32)]


@pytest.mark.parametrize("seed", SEEDS)
def test_classes_that_never_occur_are_left_out_of_the_prior(seed):
    """A seq2seq decoder whose BOS / PAD tokens are never targets (as checks/llb_seq2seq_special_tokens_ok.py), 10
    uniform classes: it once failed with a "gain" of 0.18 nats = log(12/10) from writing -8 into the bias of the two
    unused classes."""
    r = check(lambda: Seq(12), _specials_data([1.0] * 10, seed=seed))
    assert r.status.value == "pass", r.message
    assert r.measured["classes_seen"] == 10
    assert any("classes 0, 1 never occur as targets" in n for n in r.notes)


def test_a_skewed_prior_over_the_seen_classes_still_fails_and_the_paste_line_leaves_unseen_classes():
    probs = [1 / (k + 1) ** 2 for k in range(10)]
    data = _specials_data(probs)
    r = check(lambda: Seq(12), data)
    assert r.status.value in ("warn", "fail"), r.message
    assert r.measured["ideal_bias"][:2] == [None, None]
    line = PASTE.search(r.hint).group(1)
    assert "model.head.bias[[2, 3, 4, 5, 6, 7, 8, 9, 10, 11]] = torch.tensor([" in line

    def fixed() -> nn.Module:
        model = Seq(12)
        exec(line, {"torch": torch, "model": model})
        return model

    assert check(fixed, data).status.value == "pass"


def test_tied_head_without_bias_names_weight_tying():
    """A tied LM head has no bias: bias-free heads are a common design that learns the prior in its first steps, so a
    note names the tying (a warning, with the hint on adding a bias, only when a bias would fail: see below)."""

    def tokens(exponent: float) -> list:
        probs = [1 / (k + 1) ** exponent for k in range(12)]
        g = torch.Generator().manual_seed(0)
        ids = torch.multinomial(torch.tensor(probs), 64 * 10, replacement=True, generator=g).reshape(64, 10)
        return [(ids[i : i + 16, :-1], ids[i : i + 16, 1:]) for i in range(0, 64, 16)]

    r = check(lambda: Seq(12, bias=False, tied=True), tokens(1.0))
    assert r.status.value == "pass" and "has no bias" in r.message, r.message
    r = check(lambda: Seq(12, bias=False, tied=True), tokens(3.0))
    assert r.status.value == "pass", r.message  # the tied head already predicts frequent tokens: a small gain
    assert any("tied to `model.emb`" in n and "bias-free output layer" in n for n in r.notes), r.notes


# ---------------------------------------------------------------------------------------------- severity (issue 11)
def _classes_with_prior(prior, n=512, f=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, f, generator=g)
    y = torch.multinomial(torch.tensor(prior), n, replacement=True, generator=g)
    return [(x[i : i + 32], y[i : i + 32]) for i in range(0, n, 32)]


def test_a_moderate_prior_warns_and_a_strong_one_fails():
    def model():
        return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))

    moderate = nncheck.check(model=model, data=_classes_with_prior([0.8, 0.12, 0.08]), only=[PID])[PID]
    assert moderate.status.value == "warn", moderate.message
    assert moderate.measured["prior_share_of_uninformed_loss"] < 0.5
    strong = nncheck.check(model=model, data=_classes_with_prior([0.96, 0.02, 0.02]), only=[PID])[PID]
    assert strong.status.value == "fail" and strong.measured["prior_share_of_uninformed_loss"] >= 0.5, strong.message


def test_an_output_layer_without_bias_is_measured_and_only_warned_when_badly_hurt():
    def model():
        return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3, bias=False))

    moderate = nncheck.check(model=model, data=_classes_with_prior([0.8, 0.12, 0.08]), only=[PID])[PID]
    assert moderate.status.value == "pass" and any("no bias" in n for n in moderate.notes), moderate.message
    strong = nncheck.check(model=model, data=_classes_with_prior([0.96, 0.02, 0.02]), only=[PID])[PID]
    assert strong.status.value == "warn" and "no bias" in strong.message and "bias=True" in strong.hint


def test_the_message_says_the_cost_in_nats_and_in_steps_of_the_users_optimizer():
    def model():
        return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))

    data = _classes_with_prior([0.8, 0.12, 0.08])
    r = nncheck.check(model=model, data=data, only=[PID], optimizer=lambda p: torch.optim.Adam(p, lr=1e-2))[PID]
    gain = r.measured["gain"]
    assert r.status.value == "warn" and f"{gain:.3f} nats at init above the prior-initialised loss" in r.message
    steps = r.measured["steps_lost"]
    assert steps is not None and 0 < steps <= r.measured["steps_followed"], r.measured
    assert f"your optimizer needs {steps} steps to lower the training loss by as much" in r.message, r.message
    slow = nncheck.check(model=model, data=data, only=[PID], optimizer=lambda p: torch.optim.SGD(p, lr=1e-6))[PID]
    assert slow.status.value == "warn" and slow.measured["steps_lost"] is None, slow.message  # the verdict: the same
    assert "has not lowered the training loss by as much after 100 steps" in slow.message, slow.message


class _SamplingDecoder(nn.Module):
    """A decoder whose output samples noise in train mode (as a VAE's reparameterisation does), its output bias
    already at the label prior: the loss at init and with the prior must see the same noise."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.body, self.out = nn.Linear(8, 16), nn.Linear(16, 32)
        with torch.no_grad():
            self.out.bias.fill_(math.log(rate / (1 - rate)))

    def forward(self, x):
        h = torch.relu(self.body(x))
        if self.training:
            h = h + 2.0 * torch.randn_like(h)
        return self.out(h), h


@pytest.mark.parametrize("seed", SEEDS)
def test_a_model_that_samples_is_judged_on_the_same_noise_with_and_without_the_prior(seed):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(256, 8, generator=g), (torch.rand(256, 32, generator=g) < 0.1).float()
    data = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]

    def summed_bce(out, target):  # summed over the 32 units, as a VAE's reconstruction term, plus a penalty
        recon = nn.functional.binary_cross_entropy_with_logits(out[0], target, reduction="sum") / target.shape[0]
        return recon + 1e-3 * out[1].pow(2).mean()

    r = nncheck.check(model=lambda: _SamplingDecoder(0.1), data=data, loss=summed_bce, only=[PID], seed=seed)[PID]
    assert r.status.value == "pass", r.message
