"""The data probe: label range, NaNs, class balance, shuffling, input scale, duplicates, last batch.

The verdicts on the corpus (checks/, examples/, seeds 0-2, both budgets) are tests/test_corpus.py's; these tests are
the probe's own: hand-built data and models, and what a finding says.
"""

from __future__ import annotations

import pytest
import torch
from helpers import broken_files, rel, run_file
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import nncheck
from nncheck.losses import label_problem
from nncheck.probes.data import feature_stats, looks_like_pixels

PID = "data"


def mlp(n_in: int = 16, n_out: int = 4, bn: bool = False):
    def model():
        mid: list[nn.Module] = [nn.BatchNorm1d(32)] if bn else []
        return nn.Sequential(nn.Linear(n_in, 32), *mid, nn.ReLU(), nn.Linear(32, n_out))

    return model


def xy(n: int = 256, n_in: int = 16, n_classes: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, n_in, generator=g), torch.randint(0, n_classes, (n,), generator=g)


def listed(x, y, batch: int = 32):
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, len(x), batch)]


def check(model, data, **kw):
    return nncheck.check(model=model, data=data, only=[PID], budget="fast", **kw)[PID]


# ---------------------------------------------------------------------------------------------- corpus
@pytest.mark.parametrize("path", broken_files(PID), ids=rel)
def test_broken_setups_say_what_was_measured_and_how_to_fix(path):
    r = run_file(path, seed=0, budget="fast", only=[PID]).result(PID)
    assert r.hint and r.measured and r.expected, f"{rel(path)}: {r.status.value}: {r.message}"


# ---------------------------------------------------------------------------------------------- labels
def test_label_problem_messages():
    assert label_problem(torch.tensor([0, 1, 4]), 5) is None
    assert label_problem(torch.tensor([0, -100, 4]), 5) is None  # ignore_index
    one_based = label_problem(torch.tensor([1, 2, 5]), 5)
    assert one_based and "span 1..5" in one_based and "1-based" in one_based and "[0, 5)" in one_based
    narrow = label_problem(torch.tensor([0, 7]), 5)
    assert narrow and "too narrow for 8 classes" in narrow
    negative = label_problem(torch.tensor([-1, 2]), 5)
    assert negative and "negative" in negative


def test_labels_one_based_in_the_first_batch_fail_the_data_probe_not_the_setup():
    """Labels 1..C with label C in the first batch: the loss raises in the core's preflight; the runner gives that
    finding to the data probe (its fail names the 1-based labels and the fix) instead of stopping the setup."""
    x, y = xy(n_classes=5)
    r = nncheck.check(model=mlp(n_out=5), data=listed(x, y + 1), only=[PID]).result(PID)
    assert r.status.value == "fail" and "1-based" in r.message and "y - 1" in r.hint


def test_label_beyond_a_custom_cross_entropy_ignore_index():
    x, y = xy(n_classes=4)
    y[100] = 9  # in batch 3
    y[5] = 255  # ignored
    r = check(mlp(), listed(x, y), loss=nn.CrossEntropyLoss(ignore_index=255))
    assert r.status.value == "fail" and "batch 3" in r.message and "0..9" in r.message


def test_scan_finds_a_bad_label_past_the_cached_batches_and_says_where_it_stopped():
    x, y = xy(n=32 * 20)
    y[32 * 15] = 4
    r = check(mlp(), listed(x, y))
    assert r.status.value == "fail" and "batch 15" in r.message
    r = check(mlp(), listed(x, y), probes={PID: {"max_scan_batches": 10}})
    assert r.status.value == "pass"
    assert any("stopped after 10 batches" in n for n in r.notes)


# ---------------------------------------------------------------------------------------------- shuffling, balance
def test_sorted_binary_bce_targets_fail():
    x, _ = xy()
    y = (torch.arange(256) >= 128).float().unsqueeze(1)
    r = check(mlp(n_out=1), listed(x, y))
    assert r.status.value == "fail" and "not shuffled" in r.message


@settings(max_examples=10, deadline=None, derandomize=True)
@given(n_classes=st.integers(2, 6), batch=st.sampled_from([8, 16, 32]), seed=st.integers(0, 100))
def test_shuffled_loaders_pass(n_classes, batch, seed):
    x, y = xy(n=192, n_classes=n_classes, seed=seed)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True, drop_last=True)
    r = check(mlp(n_out=n_classes), loader)
    assert r.status.value == "pass", r.message


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("classes", "per_class", "batch"), [(10, 16, 32), (8, 8, 16), (12, 20, 40)])
def test_batches_of_two_classes_out_of_many_warn_and_shuffled_ones_pass(classes, per_class, batch, seed):
    # class-sorted data whose classes are smaller than a batch: every batch holds two classes, none a single one
    x, _ = xy(n=classes * per_class, seed=seed)
    y = torch.arange(classes).repeat_interleave(per_class)
    r = check(mlp(n_out=classes), DataLoader(TensorDataset(x, y), batch_size=batch), seed=seed)
    assert r.status.value == "warn", r.message
    assert "hold 2 classes each" in r.message and f"the data holds {classes}" in r.message
    assert "shuffle=True" in r.hint and r.measured["classes_per_batch"][0] == 2
    r = check(mlp(n_out=classes), DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True), seed=seed)
    assert r.status.value == "pass", r.message
    assert r.measured["classes_per_batch"][0] > 2


def test_imbalance_is_a_note_with_a_distribution_plot():
    x, _ = xy()
    y = torch.zeros(256, dtype=torch.long)
    y[torch.randperm(256, generator=torch.Generator().manual_seed(0))[:8]] = 1
    r = check(mlp(n_out=2), listed(x, y))
    assert r.status.value == "pass"
    assert any("imbalance" in n and "last-layer-bias" in n for n in r.notes)
    assert r.series["class_distribution"]["curves"]["labels"]["y"] == [248, 8]


# ---------------------------------------------------------------------------------------------- inputs
def test_input_helpers():
    assert looks_like_pixels(torch.tensor([0.0, 17.0, 255.0]))
    assert not looks_like_pixels(torch.tensor([0.0, 0.5, 1.0]))
    assert not looks_like_pixels(torch.tensor([0.0, 3.0]))  # small counts
    m, s = feature_stats(torch.randn(64, 3, 4, 4) * 20 + torch.tensor([0.0, 50.0, 0.0]).view(1, 3, 1, 1))
    assert m > 40 and s > 15


def test_unnormalised_tabular_features_warn():
    x, y = xy()
    x[:, 3] = x[:, 3] * 50 + 2000  # e.g. a year column
    r = check(mlp(), listed(x, y))
    assert r.status.value == "warn" and "unnormalised" in r.message


def test_integer_token_inputs_are_not_unnormalised():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 500, (128, 6), generator=g)
    y = torch.randint(0, 3, (128,), generator=g)

    class Bag(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.head = nn.Embedding(500, 8), nn.Linear(8, 3)

        def forward(self, t):
            return self.head(self.emb(t).mean(1))

    r = check(Bag, listed(tokens, y))
    assert r.status.value == "pass", r.message


def test_batch_of_duplicates_and_constant_inputs_warn():
    x, y = xy()
    dup = x[torch.arange(256) // 32 * 32]  # each batch: one sample repeated (batches differ)
    r = check(mlp(), listed(dup, y))
    assert r.status.value == "warn" and "repeat" in r.message
    r = check(mlp(), listed(torch.zeros_like(x), y))
    assert r.status.value == "warn" and "constant" in r.message


class _TokenClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb, self.pos, self.head = nn.Embedding(20, 8), nn.Embedding(12, 8), nn.Linear(8, 3)

    def forward(self, input_ids, attention_mask, position_ids, token_type_ids):
        h = (self.emb(input_ids) + self.pos(position_ids)) * attention_mask[..., None] + token_type_ids[..., None]
        return self.head(h.mean(1))


@pytest.mark.parametrize("constant_ids", [False, True])
def test_a_constant_batch_is_judged_on_the_token_ids_not_on_masks_or_position_ids(constant_ids):
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(4):
        ids = torch.full((16, 12), 7) if constant_ids else torch.randint(0, 20, (16, 12), generator=g)
        inputs = {
            "input_ids": ids,
            "attention_mask": torch.ones(16, 12, dtype=torch.long),  # unpadded: all ones
            "position_ids": torch.arange(12).expand(16, 12),  # varies along the sequence, the same for every sample
            "token_type_ids": torch.zeros(16, 12, dtype=torch.long),
        }
        batches.append((inputs, torch.randint(0, 3, (16,), generator=g)))
    r = check(_TokenClassifier, batches)
    constant = "constant" in r.message or any("constant" in n for n in r.notes)
    assert constant == constant_ids, (r.status.value, r.message, r.notes)


def test_nan_inputs_fail():
    x, y = xy()
    x[70, 2] = float("nan")
    r = check(mlp(), listed(x, y))
    assert r.status.value == "fail" and "NaN" in r.message and "batch 2" in r.message


# ---------------------------------------------------------------------------------------------- last batch
@pytest.mark.parametrize(
    ("n", "bn", "drop_last", "expect"),
    [(257, True, False, "warn"), (257, True, True, "pass"), (257, False, False, "pass"), (258, True, False, "pass")],
)
def test_last_batch_of_one_with_batchnorm(n, bn, drop_last, expect):
    x, y = xy(n=n)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, drop_last=drop_last)
    r = check(mlp(bn=bn), loader)
    assert r.status.value == expect, r.message


def test_last_batch_of_one_from_a_generator():
    x, y = xy(n=257)

    def gen():
        yield from listed(x, y)

    r = check(mlp(bn=True), gen())
    assert r.status.value == "warn" and "1 sample" in r.message


# ---------------------------------------------------------------------------------------------- fix round
def autoencoder_data():
    g = torch.Generator().manual_seed(0)
    img = (torch.rand(128, 1, 16, 16, generator=g) > 0.5).float() * 0.8 + 0.1
    return [(img[i : i + 16],) for i in range(0, 128, 16)]


def test_autoencoder_target_is_the_input_is_not_a_duplicate():
    """As in tests/setups/conv_autoencoder.py and vae.py, the input tensor is also the target; it was once dropped
    from the duplicate keys and every sample looked like a repeat ("94% of the samples repeat another sample")."""

    def model():
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1), nn.Sigmoid())

    def forward(m, batch):
        (x,) = batch
        return m(x), x

    r = check(model, autoencoder_data(), forward=forward, loss=nn.MSELoss())
    assert r.status.value == "pass", r.message
    assert r.measured["duplicate_fraction"] == 0.0


def test_labels_out_of_range_later_report_the_whole_span_and_the_concrete_layer():
    """Batches 3.. hold labels up to 4 for a 3-way head: the message gives the span over every batch read, the hint
    the concrete layer to widen."""
    g = torch.Generator().manual_seed(0)
    data = [
        (torch.randn(16, 4, generator=g), torch.randint(0, 3 if i < 3 else 5, (16,), generator=g)) for i in range(6)
    ]

    def model():
        return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))

    r = check(model, data)
    assert r.status.value == "fail" and "span 0..4" in r.message and "batch 3" in r.message
    assert "`model[2]`" in r.hint and "nn.Linear(16, 5)" in r.hint and "->" not in r.hint


def test_a_unique_sample_set_with_repeats_across_batches_passes():
    """Few distinct samples (40 points drawn 256 times): samples repeat across batches, batches do not."""
    g = torch.Generator().manual_seed(0)
    pts = torch.randn(40, 2, generator=g)
    idx = torch.randint(0, 40, (256,), generator=g)
    x, y = pts[idx], (pts[idx, 0] * pts[idx, 1] < 0).long()
    r = check(mlp(n_in=2, n_out=2), listed(x, y))
    assert r.status.value == "pass", r.message
    assert r.measured["repeated_batch_fraction"] == 0.0 and r.measured["repeated_sample_fraction"] > 0.5


def test_sequences_whose_length_varies_per_batch_pass():
    """(B, T) token ids padded per batch and (B, T, F) float sequences: only the batch and length dims change."""
    g = torch.Generator().manual_seed(0)

    class Pool(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.head = nn.Embedding(50, 8), nn.Linear(8, 3)

        def forward(self, t):
            return self.head(self.emb(t).mean(1))

    tokens = [
        (torch.randint(0, 50, (16, 5 + i), generator=g), torch.randint(0, 3, (16,), generator=g)) for i in range(6)
    ]
    assert check(Pool, tokens).status.value == "pass"

    class Gru(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.head = nn.GRU(4, 8, batch_first=True), nn.Linear(8, 3)

        def forward(self, x):
            return self.head(self.rnn(x)[0][:, -1])

    seqs = [(torch.randn(16, 5 + i, 4, generator=g), torch.randint(0, 3, (16,), generator=g)) for i in range(6)]
    assert check(Gru, seqs).status.value == "pass"


@pytest.mark.parametrize("shape", [(16, 3, 8, 8), (16, 3, 12, 12)])
def test_image_channel_count_change_fails_but_size_change_does_not(shape):
    g = torch.Generator().manual_seed(0)

    def model():
        return nn.Sequential(nn.LazyConv2d(4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))

    data = [(torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 2, (16,), generator=g)) for _ in range(4)]
    data[2] = (torch.randn(*shape[:1], 3 if shape[2] == 12 else 1, *shape[2:], generator=g), data[2][1])
    r = check(model, data)
    if shape[2] == 12:  # only the image size changes: multi-scale training is legitimate
        assert r.status.value == "pass", r.message
    else:
        assert r.status.value == "fail" and "batch 2" in r.message and "(16, 3, 8, 8)" in r.message


def test_shifted_lm_targets_pass_and_unshifted_fail():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 20, (64, 9), generator=g)
    data = [{"ids": ids[i : i + 16]} for i in range(0, 64, 16)]

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.head = nn.Embedding(20, 8), nn.Linear(8, 20)

        def forward(self, t):
            return self.head(self.emb(t))

    def shifted(m, b):
        return m(b["ids"][:, :-1]), b["ids"][:, 1:]

    def unshifted(m, b):
        return m(b["ids"]), b["ids"]

    assert check(LM, data, forward=shifted, causal=True).status.value == "pass"
    r = check(LM, data, forward=unshifted, causal=True)
    assert r.status.value == "fail" and "100%" in r.message and "ids[:, 1:]" in r.hint
    assert check(LM, data, forward=unshifted).status.value == "warn"  # not declared causal: maybe a copy task
