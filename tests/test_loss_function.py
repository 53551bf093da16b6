"""loss-function: double softmax / sigmoid, BCE on logits, NLL on raw scores, MSE on labels, a loss without
gradient are flagged; correct losses (LogSoftmax + NLLLoss, sigmoid + BCELoss, raw logits + CE) pass."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import SEEDS, broken_files, rel, run_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import nncheck

PID = "loss-function"


@pytest.mark.parametrize("path", broken_files(PID), ids=rel)
def test_broken_setups_say_what_was_measured_and_how_to_fix(path):
    # the status on every seed and budget: tests/test_corpus.py
    r = run_file(path, seed=0, budget="fast", only=[PID]).result(PID)
    assert r.hint and r.measured and r.expected, r.message


def _classes(n_classes: int, n_features: int = 8, batch: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2 * batch, n_features, generator=g)
    y = torch.randint(0, n_classes, (2 * batch,), generator=g)
    return [(x[:batch], y[:batch]), (x[batch:], y[batch:])]


def _binary(n_features: int = 8, batch: int = 16):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2 * batch, n_features, generator=g)
    y = (x[:, 0] > 0).float()
    return [(x[:batch], y[:batch]), (x[batch:], y[batch:])]


def _check(model, data, loss=None) -> nncheck.Result:
    return nncheck.check(model=model, data=data, loss=loss, only=[PID]).result(PID)


def _mlp(n_out: int, hidden: int, *tail: nn.Module):
    return lambda: nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Linear(hidden, n_out), *tail)


HEADS = {"raw": ([], "pass"), "softmax": ([nn.Softmax(dim=1)], "fail"), "log_softmax": ([nn.LogSoftmax(dim=1)], "pass")}


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_classes=st.integers(2, 12), hidden=st.integers(4, 32), head=st.sampled_from(sorted(HEADS)), seed=st.integers(0, 5)
)
def test_cross_entropy_fails_on_softmax_outputs_only(n_classes, hidden, head, seed):
    tail, want = HEADS[head]
    r = _check(_mlp(n_classes, hidden, *tail), _classes(n_classes, seed=seed))
    assert r.status.value == want, r.message
    if head == "softmax":
        assert "double softmax" in r.message and "`model[3]`" in r.hint
    if head == "log_softmax":
        assert any("idempotent" in n for n in r.notes)


def test_nll_needs_log_probabilities():
    data = _classes(4)
    assert _check(_mlp(4, 16, nn.LogSoftmax(dim=1)), data, nn.NLLLoss()).status.value == "pass"
    assert _check(_mlp(4, 16), data, nn.NLLLoss()).status.value == "fail"
    r = _check(_mlp(4, 16, nn.Softmax(dim=1)), data, nn.NLLLoss())
    assert r.status.value == "fail" and "probabilities" in r.message


def test_sigmoid_inside_a_user_loss_before_bce_with_logits_fails():
    def loss(out, y):
        return F.binary_cross_entropy_with_logits(torch.sigmoid(out).squeeze(1), y)

    r = _check(_mlp(1, 16), _binary(), loss)
    assert r.status.value == "fail" and "`sigmoid`" in r.message and "sigmoid" in r.hint


def test_sigmoid_then_bce_loss_passes_and_raw_logits_with_bce_with_logits_pass():
    def bce(out, y):
        return F.binary_cross_entropy(out.squeeze(1), y)

    assert _check(_mlp(1, 16, nn.Sigmoid()), _binary(), bce).status.value == "pass"
    assert _check(_mlp(1, 16), _binary()).status.value == "pass"  # inferred BCE-with-logits


def test_bce_on_values_outside_unit_interval_on_a_later_batch_fails():
    # first batch inside [0, 1] (so the setup loads), second batch outside: BCELoss raises there
    x = torch.cat([torch.full((8, 1), 0.5), torch.full((8, 1), 3.0)])
    data = [(x[:8], torch.ones(8, 1)), (x[8:], torch.ones(8, 1))]
    net = nn.Linear(1, 1)
    with torch.no_grad():
        net.weight.fill_(1.0)
        net.bias.zero_()
    r = nncheck.check(model=net, data=data, loss=nn.BCELoss(), only=[PID], budget="full").result(PID)
    assert r.status.value == "fail", r.message


def test_reduction_sum_is_a_note():
    r = _check(_mlp(3, 16), _classes(3), nn.CrossEntropyLoss(reduction="sum"))
    assert r.status.value == "pass" and r.measured["reduction_sum"] == ["cross_entropy"]
    assert any("reduction='sum'" in n for n in r.notes)


def test_detached_loss_term_alone_has_no_gradient():
    def loss(out, y):
        return F.cross_entropy(out, y) * 0.0 + (out.argmax(1) != y).float().mean()

    r = _check(_mlp(3, 16), _classes(3), loss)
    assert r.status.value == "fail" and "zero gradient" in r.message


def test_mse_on_float_regression_targets_passes():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 8, generator=g)
    y = x[:, :2] * 1.7 + 0.3
    r = _check(_mlp(2, 16), [(x[:16], y[:16]), (x[16:], y[16:])])
    assert r.status.value == "pass", r.message


# ---------------------------------------------------------------------------------------------- fix round
@pytest.mark.parametrize("seed", SEEDS)
def test_nan_gradient_is_not_called_a_zero_gradient(seed):
    """checks/numerics_log_of_zero.py: dLoss/d output is NaN; NaN > 0 is False, so it used to count as zero."""
    r = run_file("checks/numerics_log_of_zero.py", seed=seed, budget="fast", only=[PID]).result(PID)
    assert r.status.value == "warn", r.message
    assert "NaN/inf" in r.message and "zero gradient" not in r.message
    assert r.measured["nonfinite_grad_batches"] >= 1 and r.measured["zero_grad_batches"] == 0
    assert "nncheck run checks/numerics_log_of_zero.py --only numerics" in r.hint
    assert "--budget fast" in r.hint and (f"--seed {seed}" in r.hint) == (seed != 0)  # ctx.rerun: the same run


def test_a_finite_zero_gradient_still_fails():
    def loss(out, y):  # connected to the output, but the gradient is exactly 0
        return F.cross_entropy(out.detach(), y) + 0.0 * out.sum()

    r = _check(_mlp(3, 16), _classes(3), loss)
    assert r.status.value == "fail" and "zero gradient" in r.message, r.message


def test_warning_joined_to_a_fail_is_marked_as_a_warning():
    """A fail result must not end with "ignore this warning" as if the whole result were one."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 8, generator=g)
    y = torch.randint(0, 4, (32, 1), generator=g).float()
    data = [(x[:16], y[:16]), (x[16:], y[16:])]

    def loss(out, target):  # MSE on class labels (warn) through a detached output (fail)
        return F.mse_loss(out.detach(), target) + 0.0 * out.sum()

    r = _check(lambda: nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1)), data, loss)
    assert r.status.value == "fail", r.message
    assert "also (warning) MSE on integral targets" in r.message
    assert "Also (warning): For class labels" in r.hint and "this warning does not apply" in r.hint
    assert not r.hint.rstrip().endswith("ignore this warning.")


def test_loss_mixing_the_batch_fails_and_per_sample_losses_are_isolated():
    """checks/lf_softmax_over_batch.py: log_softmax(dim=0) in a hand-written CE."""
    r = run_file("checks/lf_softmax_over_batch.py", seed=0, budget="fast", only=[PID]).result(PID)
    assert r.status.value == "fail" and "mixes the samples" in r.message, r.message
    assert r.measured["isolation_change"] > 1e-3 and "dim=0" in r.hint and "isolation = false" in r.hint
    ok = run_file("examples/mlp.py", seed=0, budget="fast", only=[PID]).result(PID)
    assert ok.measured["isolation_change"] == 0.0


def _info_nce(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Contrastive loss with in-batch negatives: couples the samples on purpose."""
    z = F.normalize(z, dim=1)
    return F.cross_entropy(z @ z.T / 0.1, torch.arange(len(z)))


def test_contrastive_loss_is_flagged_unless_isolation_is_off():
    model, data = _mlp(16, 16), _classes(3)
    r = _check(model, data, _info_nce)
    assert r.status.value == "fail" and "contrastive" in r.hint, r.message
    off = nncheck.check(model=model, data=data, loss=_info_nce, only=[PID], probes={PID: {"isolation": False}})
    assert off.result(PID).status.value == "pass", off.result(PID).message


def test_max_label_values_bounds_what_reads_as_class_labels():
    """4 integral MSE targets pass with max_label_values = 3; 200 distinct counts pass with 150 (all counted)."""
    r = run_file("checks/lf_mse_on_class_labels.py", budget="fast", only=[PID], probes={PID: {"max_label_values": 3}})
    assert r.result(PID).status.value == "pass", r.result(PID).message
    x, y = torch.randn(400, 8, generator=torch.Generator().manual_seed(0)), (torch.arange(400) % 200.0).unsqueeze(1)
    data, probes = [(x[:200], y[:200]), (x[200:], y[200:])], {PID: {"max_label_values": 150}}
    r = nncheck.check(model=_mlp(1, 16), data=data, loss=nn.MSELoss(), only=[PID], probes=probes).result(PID)
    assert r.status.value == "pass", r.message


def test_multi_hot_targets_with_cross_entropy_say_use_bce_with_logits():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 8, generator=g)
    multi_hot = (torch.rand(32, 4, generator=g) < 0.4).float()
    multi_hot[0, :2] = 1.0  # at least one row with two labels
    r = _check(_mlp(4, 16), [(x, multi_hot)], loss=nn.CrossEntropyLoss())
    assert r.status.value == "fail" and "multi-hot" in r.message and "BCEWithLogitsLoss" in r.hint
    soft = torch.softmax(torch.randn(32, 4, generator=g), 1)  # label smoothing / distillation targets: fine
    assert _check(_mlp(4, 16), [(x, soft)], loss=nn.CrossEntropyLoss()).status.value == "pass"
    r = _check(_mlp(4, 16), [(x, soft * 2)], loss=nn.CrossEntropyLoss())
    assert r.status.value == "fail" and "do not sum to 1" in r.message
