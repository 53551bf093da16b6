"""Multi-output models and models that compute their own loss (issue 11): trees of outputs, loss terms recognised as
heads, the default forward on Hugging Face-style dict batches, and the batch-dimension check of the setup.

Pure PyTorch stand-ins for Hugging Face models (a dataclass output with ``loss`` and ``logits``) keep these tests
free of the `real` extra; checks/real/ runs the real ones."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nncheck
from nncheck.losses import ShiftedSequenceCrossEntropy, identify_terms, match_own_loss
from nncheck.setup import SetupError
from nncheck.tensors import map_tensors, named_tensors, path_name


@dataclass
class Output:
    """A Hugging Face-style ``ModelOutput``: the loss when labels were given, and the logits."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None


class OwnLossLM(nn.Module):
    """A causal LM that shifts its labels and computes its own loss, as Hugging Face's ``...ForCausalLM`` do."""

    def __init__(self, vocab: int = 64, dim: int = 16) -> None:
        super().__init__()
        self.emb, self.head = nn.Embedding(vocab, dim), nn.Linear(dim, vocab)
        self.rnn = nn.GRU(dim, dim, batch_first=True)

    def forward(self, input_ids, attention_mask=None, labels=None):
        logits = self.head(self.rnn(self.emb(input_ids))[0])
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))
        return Output(logits=logits, loss=loss)


def _lm_batches(n=4, b=8, t=10, vocab=64):
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        ids, step = torch.randint(0, vocab, (b, 1), generator=g), torch.randint(1, 8, (b, 1), generator=g)
        seq = torch.cat([(ids + k * step) % vocab for k in range(t)], 1)
        out.append({"input_ids": seq, "attention_mask": torch.ones_like(seq), "labels": seq.clone()})
    return out


def test_tree_helpers_keep_dataclass_outputs_and_name_their_tensors():
    out = Output(logits=torch.zeros(2, 3), loss=torch.tensor(1.0))
    mapped = map_tensors(out, lambda t: t + 1)
    assert isinstance(mapped, Output) and float(mapped.loss) == 2.0
    assert [p for p, _ in named_tensors(out)] == [("logits",), ("loss",)]
    assert path_name(out, ("logits",)) == "output.logits"
    assert path_name((torch.zeros(1), {"box": torch.zeros(1)}), (1, "box")) == "output[1]['box']"


def test_own_loss_is_recognised_as_the_next_token_cross_entropy_of_the_logits():
    model, batch = OwnLossLM(), _lm_batches(1)[0]
    out = model(**batch)
    loss, name = match_own_loss(out, batch["labels"])
    assert isinstance(loss.inner, ShiftedSequenceCrossEntropy) and "next-token" in name
    assert torch.allclose(loss(out, batch["labels"]), out.loss)


def test_hugging_face_style_setup_runs_without_forward_or_loss():
    report = nncheck.check(
        model=OwnLossLM,
        data=_lm_batches(),
        causal=True,
        only=["data", "initial-loss", "last-layer-bias", "batch-isolation", "loss-function"],
    )
    for r in report.results:
        assert r.status.value in ("pass", "skip"), (r.id, r.message)
    il = report["initial-loss"]
    assert "output.logits" in il.message and "model.head" in il.message  # the head and its layer are found
    assert report["batch-isolation"].measured["causal"]["checked"]
    # labels equal to the inputs are fine for a loss that shifts them; the all-ones mask is no constant batch
    assert "constant" not in report["data"].message and "shift" not in report["data"].message


class TwoHead(nn.Module):
    def __init__(self, centred: bool = False) -> None:
        super().__init__()
        self.trunk, self.cls, self.reg = nn.Linear(6, 16), nn.Linear(16, 3), nn.Linear(16, 1)
        self.centred = centred

    def forward(self, x):
        h = torch.relu(self.trunk(x))
        if self.centred:
            h = h - h.mean(0)
        return self.cls(h), self.reg(h)


def _two_head_data(scale: float = 1.0):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=g)
    return [(x[i : i + 16], (x[i : i + 16, :3].argmax(1), scale * x[i : i + 16, 3])) for i in range(0, 64, 16)]


def _two_head_loss(out, y):
    return F.cross_entropy(out[0], y[0]) + 0.5 * F.mse_loss(out[1].squeeze(-1), y[1])


def test_loss_terms_are_heads_with_their_weights():
    model = TwoHead()
    x, y = _two_head_data()[0]
    heads = identify_terms(_two_head_loss, model(x), y)
    assert [(h.name, h.kind, h.weight, h.target_path) for h in heads] == [
        ("output[0]", "ce", 1.0, (0,)),
        ("output[1]", "mse", 0.5, (1,)),
    ]
    out = model(x)
    assert torch.allclose(heads[1].loss(heads[1].tensor(out), heads[1].target(y)), F.mse_loss(out[1].squeeze(-1), y[1]))


def test_two_head_model_is_checked_head_by_head():
    report = nncheck.check(
        model=TwoHead,
        data=_two_head_data(),
        loss=_two_head_loss,
        only=["initial-loss", "last-layer-bias", "batch-isolation", "loss-function"],
    )
    for r in report.results:
        assert r.status.value == "pass", (r.id, r.message)
    assert set(report["initial-loss"].measured["heads"]) == {"output[0]", "output[1]"}
    assert "model.cls" in report["initial-loss"].message and "model.reg" in report["initial-loss"].message
    assert "output[0], output[1]" in report["batch-isolation"].message


def test_centring_over_the_batch_inside_a_two_head_model_fails_batch_isolation():
    r = nncheck.check(
        model=lambda: TwoHead(centred=True), data=_two_head_data(), loss=_two_head_loss, only=["batch-isolation"]
    )["batch-isolation"]
    assert r.status.value == "fail" and "mean(0)" in r.hint


def test_multi_task_terms_of_different_orders_warn_with_the_weight_to_use():
    r = nncheck.check(model=TwoHead, data=_two_head_data(scale=1000.0), loss=_two_head_loss, only=["loss-function"])[
        "loss-function"
    ]
    ratio = r.measured["loss_term_ratio"]
    assert r.status.value == "warn" and f"differ by {ratio:.3g}x at init" in r.message, r.message
    assert ratio > 100 and "output[1] (mse, weight 0.5)" in r.message, r.measured
    # the weight that makes the small term (cross-entropy, weight 1) as large as the other at init: 1 x the ratio
    assert f"equal at init with weight {ratio:.3g} on output[0]" in r.hint, r.hint
    assert f"{0.5 / ratio:.3g} on output[1]" in r.hint, r.hint


def test_heads_named_in_the_setup_are_judged():
    def hand_written(out, y):  # the terms are not torch loss calls on the outputs: nothing to recognise
        nll = out[0].log_softmax(1).gather(1, y[0][:, None]).mean().neg()
        return nll + ((out[1].squeeze(-1) - y[1]) ** 2).mean()

    r = nncheck.check(model=TwoHead, data=_two_head_data(), loss=hand_written, only=["initial-loss"])["initial-loss"]
    assert r.status.value == "skip" and "heads" in r.message
    heads = {"heads": {0: nn.CrossEntropyLoss(), 1: (1, lambda o, t: F.mse_loss(o.squeeze(-1), t))}}
    r = nncheck.check(model=TwoHead, data=_two_head_data(), loss=hand_written, settings=heads, only=["initial-loss"])[
        "initial-loss"
    ]
    assert r.status.value == "pass" and set(r.measured["heads"]) == {"output[0]", "output[1]"}


def test_a_view_that_changes_the_batch_size_names_the_view():
    class LeNetOn28(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5)
            self.fc = nn.Linear(400, 10)

        def forward(self, x):
            x = F.max_pool2d(torch.relu(self.conv1(x)), 2)
            x = F.max_pool2d(torch.relu(self.conv2(x)), 2)  # 16x4x4 = 256 per sample on 28x28 inputs
            return self.fc(x.view(-1, 400))  # BUG: 25 samples of 256 values become 16 rows of 400

    data = [(torch.randn(25, 1, 28, 28), torch.randint(0, 10, (25,)))]
    with pytest.raises(SetupError) as e:
        nncheck.check(model=LeNetOn28, data=data, only=["initial-loss"])
    msg = str(e.value)
    assert "16 rows" in msg and "batch of 25" in msg and "output layer's width" not in msg
    # the user's own line, with its file and line number, and the shapes it turns one into the other
    assert "`return self.fc(x.view(-1, 400))` (tests/test_heads.py:" in msg, msg
    assert "(25, 16, 4, 4) tensor into (16, 400)" in msg and "one sample holds 256 values there, not 400" in msg
    assert "nn.Linear(256, ...)" in msg
    with pytest.raises(SetupError) as e:  # with a loss of the user's too: named before the loss's shape error
        nncheck.check(model=LeNetOn28, data=data, loss=nn.CrossEntropyLoss(), only=["initial-loss"])
    assert "changes the batch dimension" in str(e.value) and "x.view(-1, 400)" in str(e.value)
    with pytest.raises(SetupError) as e:  # a forward of the user's and the default loss: the same sentence
        nncheck.check(model=LeNetOn28, data=data, forward=lambda m, b: (m(b[0]), b[1]), only=["initial-loss"])
    assert "x.view(-1, 400)" in str(e.value) and "output layer's width" not in str(e.value)


def test_a_reduction_over_the_batch_that_drops_it_is_named():
    class PoolsTheBatch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 5)

        def forward(self, x):
            return self.fc(x).mean(0, keepdim=True)  # BUG: one row for the whole batch

    data = [(torch.randn(12, 8), torch.randint(0, 5, (12,)))]
    with pytest.raises(SetupError) as e:
        nncheck.check(model=PoolsTheBatch, data=data, only=["initial-loss"])
    msg = str(e.value)
    assert "returns 1 rows" in msg and "`return self.fc(x).mean(0, keepdim=True)`" in msg, msg
    assert "(12, 5) tensor into (1, 5)" in msg


def test_an_all_ones_mask_next_to_input_ids_equal_to_the_labels_is_no_constant_batch():
    """GPT-2 style: a custom forward returning (logits, labels = input_ids); the mask is all ones (no padding)."""

    def forward(model, batch):
        out = model(batch["input_ids"], attention_mask=batch["attention_mask"])
        return out.logits[:, :-1], batch["input_ids"][:, 1:]

    r = nncheck.check(model=OwnLossLM, data=_lm_batches(), forward=forward, only=["data"])["data"]
    assert r.status.value == "pass", r.message
    assert not any("constant" in n for n in r.notes)
