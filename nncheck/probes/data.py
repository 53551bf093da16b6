"""data: the batches themselves: label range, non-finite values, class balance, shuffling, input scale,
duplicates, and a last batch of one sample under BatchNorm."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nncheck import losses
from nncheck.context import MAX_CACHED_BATCHES
from nncheck.kit import Context, Findings, ProbeSkip, Result, bar_plot, code_path, forward_hooks, param, probe
from nncheck.losses import is_class_target, label_problem
from nncheck.modelgraph import is_batchnorm, without_dropout
from nncheck.tensors import iter_tensors, named_tensors

# Integer-valued float inputs in [0, 255] with a max above this look like raw 8-bit pixels (torchvision's ToTensor
# divides by 255; a max <= 10 is more likely counts or small categorical codes).
PIXEL_MIN_MAX = 10.0
# The single-class test only applies where shuffled data would rarely give a single-class batch: the expected
# fraction of single-class batches under the label prior (sum over classes of p_c ** batch_size) is below this.
SINGLE_CLASS_EXPECTED = 0.1
# Class imbalance worth a note: the most frequent class is this many times the least frequent one (the regime where
# a prior-initialised output bias matters: Karpathy's recipe, "init well"; Lin et al. 2017, focal loss, §4.1).
IMBALANCE_NOTE = 10.0
# Classes shown in the distribution plot / measured values at most (a vocabulary is summarised).
MAX_CLASSES_SHOWN = 100


@dataclass(frozen=True)
class Params:
    """Parameters of data (`[tool.nncheck.probes.data]`)."""

    input_batches: int = param(
        8,
        fast=4,
        source="The batches the context caches (at most 8): inputs are judged for scale and duplicates on these.",
    )
    # The scan reads the whole data (every label, the last batch); these bound its cost, and the probe says where
    # it stopped.
    max_scan_batches: int = param(
        1000,
        fast=200,
        source="A cost bound: every setup of checks/ and examples/ holds at most 64 batches, read in full.",
    )
    max_scan_s: float = param(
        10.0,
        fast=3.0,
        source="A cost bound on the scan's wall time, for a data() that builds or loads its batches slowly.",
    )
    scale_warn: float = param(
        10.0,
        source=(
            'LeCun et al. 1998, "Efficient BackProp": inputs should have mean ~0 and comparable variance ~1. '
            "Measured, seeds 0-2: the largest feature |mean| or std of every correct setup of checks/ and examples/ "
            "is <= 1.4; checks/data_raw_pixels.py (raw pixels) 108 / 63."
        ),
    )
    dup_warn: float = param(
        0.5,
        source=(
            "Measured, seeds 0-2: at most 25% of a batch's samples repeat another sample of that batch on the "
            "correct setups of checks/ and examples/ (token sequences of examples/tiny_lm.py); 0% on every "
            "float-input setup."
        ),
    )
    # Judged per batch, not per sample: a dataset with few distinct samples repeats samples across batches
    # legitimately (examples/tiny_lm.py: 70% of the samples repeat an earlier batch's, yet no batch repeats).
    # 50% tolerates a data() that wraps into a second epoch early.
    cross_dup_fail: float = param(
        0.5,
        source=(
            "Measured, seeds 0-2: no batch repeats an earlier one on any correct setup of checks/ and examples/; "
            "checks/data_same_batch_repeated.py (`[(x, y)] * 8`): 100%."
        ),
    )
    # |mean| too: a batch of one repeated sample has std 0 but a normal mean. Weights would have to grow 1e3x to use
    # such inputs.
    tiny_std_warn: float = param(
        0.001,
        source=(
            "Standardised features have std ~1 (LeCun et al. 1998). Measured, seeds 0-2: the largest feature "
            "|mean| or std of every correct setup of checks/ and examples/ is > 0.2; "
            "checks/data_inputs_micro_units.py has std ~2e-6, |mean| ~1e-6."
        ),
    )
    # 90% leaves room for padding runs that are not set to ignore_index.
    no_shift_fail: float = param(
        0.9,
        source=(
            "Measured, seeds 0-2: checks/data_lm_targets_not_shifted.py 100%; the correct LMs and seq2seq models "
            "(examples/tiny_lm.py, checks/ok_seq2seq_gru_teacher_forcing.py, checks/llb_seq2seq_special_tokens_ok.py) "
            "<= 16% (chance repeats of a token)."
        ),
    )
    single_class_frac: float = param(
        0.5,
        source=(
            "Measured, seeds 0-2: checks/data_sorted_by_class.py (sorted by class): 12 of 12 batches single-class; "
            "the correct setups of checks/ and examples/: at most 1 of 32 (examples/imbalanced.py, 90% of one "
            "class, where shuffled data gives 3.4%)."
        ),
    )
    few_classes: float = param(
        2.0,
        source=(
            'Issue 12 / Karpathy\'s recipe ("become one with the data"): a batch holding one or two classes while '
            "the data holds many is a class-sorted or bucketed loader; the median batch of the cached batches holds "
            "at most this many classes. Measured, seeds 0-2: checks/data_two_classes_per_batch.py 2 in every batch."
        ),
    )
    class_spread: float = param(
        0.5,
        source=(
            "...and at most this share of the classes a shuffled batch of the same size would hold (the expected "
            "count of distinct classes under the data's label prior, sum_c 1 - (1 - p_c)^B). Measured, seeds 0-2: "
            "checks/data_two_classes_per_batch.py 0.21 (2 of 9.7 classes); the 22 correct setups of checks/, "
            "checks/real/ and examples/ with class targets >= 0.99 (examples/imbalanced.py: 2-3 of 2.53, where "
            "the median alone would flag it); no other broken setup of checks/ below 0.9."
        ),
    )


# ---------------------------------------------------------------------------------------------- pure helpers
def feature_stats(x: torch.Tensor) -> tuple[float, float]:
    """(max |mean|, max std) over features / channels: dim 1 of (B, F) and (B, C, H, W), the last dim of
    (B, T, F) sequences."""
    x = x.detach().double()
    if x.dim() <= 1:
        rows = x.reshape(-1, 1)
    else:
        dim = x.dim() - 1 if x.dim() == 3 else 1
        rows = x.movedim(dim, -1).reshape(-1, x.shape[dim])
    if rows.shape[0] < 2:
        return float(rows.mean(0).abs().max()), 0.0
    return float(rows.mean(0).abs().max()), float(rows.std(0).max())


def looks_like_pixels(x: torch.Tensor) -> bool:
    """Integer-valued floats in [0, 255] with a max above PIXEL_MIN_MAX: raw 8-bit image values."""
    lo, hi = float(x.min()), float(x.max())
    return lo >= 0 and PIXEL_MIN_MAX < hi <= 255 and bool((x == x.round()).all())


def sample_keys(tensors: list[torch.Tensor], batch_size: int) -> list[bytes] | None:
    """One key per sample: a hash of the bytes of that sample in every tensor with the batch dimension (exact
    equality; NaN mapped to 0). None when no tensor has the batch dimension."""
    used = [t for t in tensors if t.dim() > 0 and t.shape[0] == batch_size]
    if not used or batch_size < 1:
        return None
    hashes = [hashlib.blake2b(digest_size=16) for _ in range(batch_size)]
    for t in used:
        rows = torch.nan_to_num(t.detach()).cpu().contiguous().reshape(batch_size, -1)
        if rows.dtype == torch.bfloat16:
            rows = rows.float()
        arr = rows.numpy()
        for i in range(batch_size):
            hashes[i].update(arr[i].tobytes())
    return [h.digest() for h in hashes]


def cross_batch_repeats(keys_per_batch: list[list[bytes]]) -> tuple[float, float]:
    """(fraction of the batches 1.. that repeat an earlier batch exactly, fraction of the samples of batches 1..
    that repeat a sample of an earlier batch)."""
    seen_samples: set[bytes] = set()
    seen_batches: set[tuple[bytes, ...]] = set()
    batch_repeats = sample_repeats = samples = 0
    for i, keys in enumerate(keys_per_batch):
        if i:
            batch_repeats += tuple(keys) in seen_batches
            sample_repeats += sum(k in seen_samples for k in keys)
            samples += len(keys)
        seen_samples.update(keys)
        seen_batches.add(tuple(keys))
    later = len(keys_per_batch) - 1
    return (batch_repeats / later if later > 0 else 0.0), (sample_repeats / samples if samples else 0.0)


def feature_dim(t: torch.Tensor) -> int | None:
    """The dimension a float input's width lives in, when it is unambiguous: dim 1 of (B, F) features and of
    (B, C, H, W) / (B, C, D, H, W) images. (B, T, F) sequences and (B, C, L) signals both have 3 dims, and their
    length legitimately varies per batch, so 3-dim inputs are not judged; integer inputs (token ids, padded per
    batch to the longest sequence) are not judged either."""
    if not t.is_floating_point() or t.dim() not in (2, 4, 5):
        return None
    return 1


def copy_fraction(ids: torch.Tensor, y: torch.Tensor, ignore_index: int) -> float | None:
    """Fraction of the (non-ignored) target positions equal to the token embedded at the same position."""
    if ids.shape != y.shape or ids.dim() != 2:
        return None
    keep = y != ignore_index
    if not bool(keep.any()):
        return None
    return float((ids == y)[keep].double().mean())


def loader_last_batch(data: Any) -> tuple[int, int, bool] | None:
    """(dataset size, batch size, drop_last) of a plain DataLoader (no custom sampler), else None."""
    from torch.utils.data import DataLoader

    if not isinstance(data, DataLoader) or data.batch_size is None:
        return None
    try:
        n = len(data.sampler)  # type: ignore[arg-type]
    except TypeError:
        return None
    return n, int(data.batch_size), bool(data.drop_last)


def _is_target(t: torch.Tensor, y: Any) -> bool:
    """With a custom forward the batch may carry the targets too: leave them out of input statistics."""
    if not isinstance(y, torch.Tensor):
        return False
    return t is y or (t.shape == y.shape and t.dtype == y.dtype and bool(torch.equal(t, y)))


# Keys of a dict batch that describe its layout, not its content (Hugging Face tokenizer outputs and model arguments).
STRUCTURAL_KEYS = ("attention_mask", "padding_mask", "key_padding_mask", "position_ids", "token_type_ids", "mask")


def _structural(path: tuple[Any, ...]) -> bool:
    """An input tensor that is constant by construction in a well-formed batch (an all-ones attention mask of an
    unpadded batch, all-zero token-type ids): a mask, position ids or token-type ids, by its key."""
    return bool(path) and isinstance(path[-1], str) and path[-1].lower().endswith(STRUCTURAL_KEYS)


def _cpu(obj: Iterable[Any]) -> list[Any]:
    return [o.detach().cpu() if isinstance(o, torch.Tensor) else o for o in obj]


# ---------------------------------------------------------------------------------------------- the scan
@dataclass
class Scan:
    """What one pass over the data (bounded) saw."""

    batches: int = 0
    exhausted: bool = False
    stopped_why: str = ""
    last_size: int | None = None
    sizes: list[int] = field(default_factory=list)
    counts: torch.Tensor | None = None  # per-class label counts
    labels_seen: int = 0
    label_lo: int | None = None  # smallest / largest class label over every scanned batch (ignore_index left out)
    label_hi: int | None = None
    bad_batch: int | None = None  # first batch holding a label outside [0, C)
    shapes: dict[int, tuple[int, ...]] = field(default_factory=dict)  # input tensor index -> shape in batch 0
    # the first input whose rank or width changes: (input index, shape in batch 0, batch, shape in that batch)
    shape_change: tuple[int, tuple[int, ...], int, tuple[int, ...]] | None = None
    single_class: int = 0  # batches (>= 2 samples, one label per sample) holding one class
    multi_label_batches: int = 0  # batches eligible for the single-class test
    nonfinite_targets: int = 0
    nonfinite_target_batch: int | None = None
    nonfinite_inputs: int = 0
    nonfinite_input_batch: int | None = None
    targets_seen: bool = False
    loader: tuple[int, int, bool] | None = None  # (dataset size, batch_size, drop_last) of a DataLoader

    @property
    def single_class_fraction(self) -> float:
        return self.single_class / self.multi_label_batches if self.multi_label_batches else 0.0


def scan_targets(scan: Scan, i: int, y: Any, num_classes: int | None, ignore_index: int, per_sample: bool) -> None:
    """Fold one batch's targets into the scan."""
    if not isinstance(y, torch.Tensor):
        return
    scan.targets_seen = True
    y = y.detach().cpu()
    if y.is_floating_point():
        bad = int((~torch.isfinite(y)).sum())
        if bad:
            scan.nonfinite_targets += bad
            if scan.nonfinite_target_batch is None:
                scan.nonfinite_target_batch = i
            return
    if num_classes == 2 and y.is_floating_point() and per_sample and bool(((y == 0) | (y == 1)).all()):
        y = y.long()  # binary (BCE) targets: classes 0 and 1
    if num_classes is None or not is_class_target(y):
        return
    kept = y.reshape(-1)
    kept = kept[kept != ignore_index]
    if kept.numel():
        lo, hi = int(kept.min()), int(kept.max())
        scan.label_lo = lo if scan.label_lo is None else min(scan.label_lo, lo)
        scan.label_hi = hi if scan.label_hi is None else max(scan.label_hi, hi)
        if scan.bad_batch is None and (lo < 0 or hi >= num_classes):
            scan.bad_batch = i
    flat = y.reshape(-1)
    flat = flat[(flat >= 0) & (flat != ignore_index)].long()
    if flat.numel():
        c = torch.bincount(flat, minlength=num_classes)
        if scan.counts is None:
            scan.counts = c
        else:
            size = max(len(c), len(scan.counts))
            scan.counts = nn.functional.pad(scan.counts, (0, size - len(scan.counts))) + nn.functional.pad(
                c, (0, size - len(c))
            )
        scan.labels_seen += flat.numel()
    if per_sample and flat.numel() >= 2:
        scan.multi_label_batches += 1
        scan.single_class += int(bool((flat == flat[0]).all()))


def scan_data(
    ctx: Context,
    num_classes: int | None,
    ignore_index: int,
    read_targets: bool,
    max_batches: int,
    max_s: float,
) -> Scan:
    """Iterate the data once (up to ``max_batches`` / ``max_s``), on the CPU as the data yields it. When the
    context's cache already holds the whole data (fewer than MAX_CACHED_BATCHES batches), read the cache; when data()
    returned a list or tuple, read that again."""
    scan = Scan()
    cached = ctx.batches(MAX_CACHED_BATCHES)
    if len(cached) < MAX_CACHED_BATCHES:
        data: Any = None
        source: Iterable[Any] = cached
    elif isinstance(ctx.data_source, (list, tuple)):
        # data() returned a materialised sequence (the context read its first batches from it under the run's seed):
        # iterate it again rather than rebuild it (a data() that builds its batches in Python costs tens of steps)
        data = source = ctx.data_source
    else:
        ctx.seed_all()
        data = ctx.setup.data()
        source = data
    scan.loader = loader_last_batch(data)
    t0 = time.perf_counter()
    it = iter(source)
    try:
        for i, b in enumerate(it):
            ctx.check_time()
            scan_batch(ctx, scan, i, b, num_classes, ignore_index, read_targets)
            if scan.batches >= max_batches:
                scan.stopped_why = f"stopped after {max_batches} batches"
                break
            if time.perf_counter() - t0 > max_s:
                scan.stopped_why = f"stopped after {scan.batches} batches ({max_s:g} s)"
                break
        else:
            scan.exhausted = True
    finally:
        close = getattr(it, "close", None)
        if callable(close):
            close()
    if scan.exhausted and scan.sizes:
        scan.last_size = scan.sizes[-1]
    return scan


def scan_batch(
    ctx: Context, scan: Scan, i: int, b: Any, num_classes: int | None, ignore_index: int, read_targets: bool
) -> None:
    """Fold one batch into the scan: its size, non-finite inputs, and (default forward) its targets."""
    try:
        size = ctx.batch_size(b)
    except Exception:
        size = 0
    scan.sizes.append(size)
    scan.batches += 1
    for k, t in enumerate(iter_tensors(ctx.inputs_of(b))):
        track_shape(scan, i, k, t)
        if t.is_floating_point():
            bad = int((~torch.isfinite(t)).sum())
            if bad:
                scan.nonfinite_inputs += bad
                if scan.nonfinite_input_batch is None:
                    scan.nonfinite_input_batch = i
    y = ctx.target_of(b) if read_targets else None
    if y is not None:
        per_sample = isinstance(y, torch.Tensor) and (y.dim() == 1 or (y.dim() == 2 and y.shape[1] == 1))
        scan_targets(scan, i, y, num_classes, ignore_index, per_sample)


def track_shape(scan: Scan, i: int, k: int, t: torch.Tensor) -> None:
    """Record the shape of input tensor ``k`` in the first batch; note the first later batch where its rank or its
    feature / channel count (``feature_dim``) differs."""
    shape = tuple(t.shape)
    first = scan.shapes.setdefault(k, shape)
    if scan.shape_change is not None or i == 0 or shape == first:
        return
    dim = feature_dim(t)
    if len(shape) != len(first) or (dim is not None and shape[dim] != first[dim]):
        scan.shape_change = (k, first, i, shape)


def single_class_chance(scan: Scan) -> float | None:
    """The fraction of single-class batches shuffled data would give (the scan's label prior and batch sizes), or
    None when the test does not apply (fewer than 2 eligible batches or 2 classes)."""
    if scan.counts is None or scan.multi_label_batches < 2 or int((scan.counts > 0).sum()) < 2:
        return None
    prior = scan.counts.double() / scan.counts.sum()
    sizes = [s for s in scan.sizes if s >= 2] or [2]
    return float((prior.unsqueeze(1) ** torch.tensor(sizes, dtype=torch.float64)).sum(0).mean())


# ---------------------------------------------------------------------------------------------- the cached batches
@dataclass
class Inputs:
    """Input statistics over the cached batches (targets left out)."""

    float_tensors: int = 0  # finite float input tensors measured
    max_abs_mean: float = 0.0  # largest |mean| of a feature / channel
    max_std: float = 0.0  # largest std of a feature / channel
    worst_shape: str = ""  # the shape of the input holding the largest value
    pixels: bool = False  # some input looks like raw 8-bit pixels
    constant: bool = False  # some batch's inputs are all one value
    duplicate_fraction: float = 0.0  # largest share of a batch's samples repeating another sample of it
    keyed_batches: int = 0  # batches whose samples could be keyed (for the repeats)
    repeated_batch_fraction: float = 0.0  # share of batches 1.. repeating an earlier batch exactly
    repeated_sample_fraction: float = 0.0  # share of the samples of batches 1.. seen in an earlier batch


def measure_inputs(ctx: Context, batches: list[Any], targets: list[Any]) -> Inputs:
    """Scale, raw pixels, constant inputs and repeated samples / batches, on the cached batches."""
    m = Inputs()
    keys_per_batch: list[list[bytes]] = []
    for b, y in zip(batches, targets):
        every = list(iter_tensors(ctx.inputs_of(b)))
        # an input that is also the target (autoencoder, VAE) is still an input: leave targets out only when other
        # input tensors remain
        tensors = [t for t in every if not _is_target(t, y)] or every
        for t in tensors:
            if not t.is_floating_point() or t.numel() == 0 or not bool(torch.isfinite(t).all()):
                continue
            mean, std = feature_stats(t)
            if max(mean, std) > max(m.max_abs_mean, m.max_std):
                m.worst_shape = f"{tuple(t.shape)}"
            m.max_abs_mean, m.max_std = max(m.max_abs_mean, mean), max(m.max_std, std)
            m.pixels = m.pixels or looks_like_pixels(t)
            m.float_tensors += 1
        # constant: every input tensor, the target-like ones included (a language model's input ids equal its labels:
        # the all-ones attention mask left without them is no sign of a constant batch), the structural ones left out
        # when others remain (an attention mask, position or token-type ids: all ones / zeros in an unpadded batch)
        judged = [t for k, t in named_tensors(ctx.inputs_of(b)) if not _structural(k)] or every
        if judged and all(t.numel() > 0 and bool((t == t.reshape(-1)[0]).all()) for t in judged):
            m.constant = True
        try:
            keys = sample_keys(every, ctx.batch_size(b))  # samples are told apart by every input, targets included
        except Exception:
            keys = None
        if keys is not None:
            within = 1.0 - len(set(keys)) / len(keys) if len(keys) >= 2 else 0.0
            m.duplicate_fraction = max(m.duplicate_fraction, within)
            keys_per_batch.append(keys)
    m.keyed_batches = len(keys_per_batch)
    m.repeated_batch_fraction, m.repeated_sample_fraction = cross_batch_repeats(keys_per_batch)
    return m


def forward_cached(
    ctx: Context, model: nn.Module, batches: list[Any]
) -> tuple[list[Any], list[Any], list[list[torch.Tensor]]]:
    """(outputs, targets, the index tensors every nn.Embedding received) per cached batch. The model runs on the
    first batch only, unless a custom forward is needed to get the targets."""
    outs: list[Any] = []
    targets: list[Any] = []
    embedded: list[list[torch.Tensor]] = []
    seen: list[torch.Tensor] = []

    def record(_m: nn.Module, args: tuple[Any, ...], _name: str) -> None:
        if args and isinstance(args[0], torch.Tensor):
            seen.append(args[0].detach())

    embeddings = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Embedding)]
    with torch.no_grad(), forward_hooks(embeddings, pre=record):
        for i, b in enumerate(batches):
            ctx.check_time()
            seen.clear()
            if i == 0 or ctx.setup.custom_forward:
                # the model at init, read once for all probes; with embeddings, run here to record their tokens
                out, y = ctx.forward(model, b) if embeddings else ctx.init_forward(i)
                outs.append(out)
            else:
                y = ctx.target_of(b)
            targets.append(y)
            embedded.append(list(seen))
    return outs, targets, embedded


def _output_tensor(ctx: Context, out: Any) -> Any:
    """The output as the loss reads it (the logits of a Hugging Face output), or ``out`` itself."""
    try:
        return ctx.output_tensor(out)
    except ProbeSkip:
        return out


def unshifted_fraction(
    outs: list[Any], targets: list[Any], embedded: list[list[torch.Tensor]], ignore_index: int
) -> float:
    """The largest fraction of (B, T) target positions equal to the token embedded at the same position, over the
    batches with (B, T, C) outputs (0 when there is none)."""
    best = 0.0
    for out, y, ids in zip(outs, targets, embedded):
        if not (is_class_target(y) and isinstance(out, torch.Tensor) and out.dim() == 3 and y.dim() == 2):
            continue
        if tuple(out.shape[:2]) != tuple(y.shape):
            continue
        for t in ids:
            frac = copy_fraction(t, y, ignore_index)
            if frac is not None:
                best = max(best, frac)
    return best


@dataclass(frozen=True)
class OutputLinear:
    """The nn.Linear that produces the classes (for the hint that widens it)."""

    path: str  # as written in code: model.head
    in_features: int
    out_features: int
    bias: bool


def output_linear(model: nn.Module, num_classes: int | None) -> OutputLinear | None:
    """The last nn.Linear with one output per class, or None."""
    if num_classes is None:
        return None
    for name, m in reversed(list(model.named_modules())):
        if isinstance(m, nn.Linear) and m.out_features == num_classes and name:
            return OutputLinear(code_path(name, model), m.in_features, m.out_features, m.bias is not None)
    return None


# ---------------------------------------------------------------------------------------------- measure
@dataclass
class Measurement:
    scan: Scan
    inputs: Inputs
    num_classes: int | None
    ignore_index: int
    loss_kind: str
    causal: bool
    custom_forward: bool
    unshifted: float  # share of LM target positions equal to the token embedded there
    single_class_chance: float | None  # share of single-class batches shuffled data would give
    batchnorm: list[str]  # BatchNorm layers of the model, as written in code
    last_batch: int | None  # size of the last batch (None: unknown, or dropped by drop_last)
    last_batch_how: str  # where the last batch size comes from
    output_layer: OutputLinear | None
    integer_targets: bool  # some cached target holds class labels


def measure(ctx: Context, p: Params) -> Measurement:
    """One forward on the cached batches (outputs, targets, embedded tokens), one scan of the whole data, and the
    input statistics of the cached batches."""
    batches = ctx.batches(p.input_batches)
    model = without_dropout(ctx.fresh_model(train=True))
    outs, targets, embedded = forward_cached(ctx, model, batches)
    num_classes = ctx.num_classes(_output_tensor(ctx, outs[0]))
    if num_classes is None and ctx.loss_kind == "bce":
        num_classes = 2  # per-sample 0/1 targets are read as classes 0 and 1 (shuffling, balance)
    ignore = losses.ignore_index(ctx.loss_fn)
    custom = ctx.setup.custom_forward
    scan = scan_data(ctx, num_classes, ignore, not custom, p.max_scan_batches, p.max_scan_s)
    if custom:  # targets come from forward() on the cached batches
        for i, y in enumerate(_cpu(targets)):
            per_sample = isinstance(y, torch.Tensor) and y.dim() == 1
            scan_targets(scan, i, y, num_classes, ignore, per_sample)
    last, how = last_batch(scan)
    return Measurement(
        scan=scan,
        inputs=measure_inputs(ctx, batches, targets),
        num_classes=num_classes,
        ignore_index=ignore,
        loss_kind=ctx.loss_kind,
        causal=bool(ctx.setup.causal),
        custom_forward=custom,
        # a loss that shifts the labels itself (a Hugging Face causal LM) takes the inputs as labels on purpose
        unshifted=0.0 if losses.target_shift(ctx.loss_fn) else unshifted_fraction(outs, targets, embedded, ignore),
        single_class_chance=single_class_chance(scan),
        batchnorm=[code_path(n, model) for n, m in model.named_modules() if is_batchnorm(m)],
        last_batch=last,
        last_batch_how=how,
        output_layer=output_linear(model, num_classes),
        integer_targets=any(is_class_target(t) for t in targets),
    )


def last_batch(scan: Scan) -> tuple[int | None, str]:
    """The size of the last batch and where it comes from: the DataLoader's numbers, else the exhausted scan."""
    if scan.loader is not None:
        n, bs, drop = scan.loader
        return (None if drop else (n % bs or bs)), f"dataset of {n} samples, batch_size={bs}, drop_last={drop}"
    if scan.last_size is not None:
        return scan.last_size, f"{scan.batches} batches read"
    return None, ""


# ---------------------------------------------------------------------------------------------- judge
def judge(m: Measurement, p: Params) -> Findings:
    s, x = m.scan, m.inputs
    f = Findings(measured=measured_of(m), expected=expected_of(m, p), series=class_plot(m))
    problem = labels_out_of_range(m)
    if problem:
        f.fail(
            f"{problem} (first seen in batch {s.bad_batch}); cross-entropy would raise an opaque IndexError on CPU "
            "or a device-side assert on CUDA",
            ONE_BASED_HINT if "1-based" in problem else widen_hint(m),
        )
    if s.nonfinite_targets:
        f.fail(
            f"{s.nonfinite_targets} target values are NaN/inf (first in batch {s.nonfinite_target_batch}): the loss "
            "becomes NaN on every batch that holds one",
            NAN_TARGETS_HINT,
        )
    if s.shape_change:
        k, first, i, shape = s.shape_change
        f.fail(
            f"input {k} has shape {first} in batch 0 but {shape} in batch {i}: every batch must have the same number "
            "of features / channels (only the batch dimension may change)",
            SHAPE_HINT,
        )
    if m.unshifted >= p.no_shift_fail:
        why = CAUSAL_COPY if m.causal else MAYBE_COPY_TASK
        f.add(
            "fail" if m.causal else "warn",
            f"{m.unshifted:.0%} of the target positions hold the token the model embeds at the same position "
            f"(expected < {p.no_shift_fail:.0%} for next-token targets): {why}",
            SHIFT_HINT,
        )
    if s.nonfinite_inputs:
        f.fail(
            f"{s.nonfinite_inputs} input values are NaN/inf (first in batch {s.nonfinite_input_batch}): a data "
            "error, every output and the loss on that batch become NaN",
            NAN_INPUTS_HINT,
        )
    chance = m.single_class_chance  # None: the test does not apply
    if chance is not None and chance < SINGLE_CLASS_EXPECTED and s.single_class_fraction >= p.single_class_frac:
        f.fail(
            f"{s.single_class}/{s.multi_label_batches} batches hold a single class while the data holds "
            f"{classes_present(s)} classes (shuffled data would give {chance:.2%}): the data is not shuffled",
            SHUFFLE_HINT,
        )
    if x.keyed_batches >= 2 and x.repeated_batch_fraction > p.cross_dup_fail and not x.constant:  # constant: below
        later = x.keyed_batches - 1
        f.fail(
            f"{round(x.repeated_batch_fraction * later)} of batches 1..{later} repeat an earlier batch exactly "
            f"({x.repeated_batch_fraction:.0%}, expected <= {p.cross_dup_fail:.0%}; "
            f"{x.repeated_sample_fraction:.0%} of their samples were seen before): the same batch is fed again and "
            "again, the model memorises a few samples",
            REPEATED_BATCH_HINT,
        )
    if x.pixels:
        f.warn(
            f"inputs are integer values in [0, 255] (a channel has |mean| {x.max_abs_mean:.3g}, std "
            f"{x.max_std:.3g}): raw 8-bit pixels, not normalised",
            PIXELS_HINT,
        )
    elif x.max_abs_mean > p.scale_warn or x.max_std > p.scale_warn:
        f.warn(
            f"inputs look unnormalised: a feature has |mean| {x.max_abs_mean:.3g} / std {x.max_std:.3g} "
            f"(expected <= {p.scale_warn:g}; input {x.worst_shape})",
            SCALE_HINT,
        )
    if x.float_tensors and not x.constant and max(x.max_std, x.max_abs_mean) < p.tiny_std_warn:
        f.warn(
            f"every float input feature has |mean| and std below {p.tiny_std_warn:g} (largest std {x.max_std:.3g}, "
            f"|mean| {x.max_abs_mean:.3g}): a unit error (e.g. micro-units), the first layer sees ~0 input",
            TINY_HINT,
        )
    if x.constant:
        f.warn("a batch of inputs is constant (every value equal): the model cannot tell samples apart", CONSTANT_HINT)
    elif x.duplicate_fraction > p.dup_warn:
        f.warn(
            f"{x.duplicate_fraction:.0%} of the samples of a batch repeat another sample of that batch (expected <= "
            f"{p.dup_warn:.0%})",
            DUPLICATES_HINT,
        )
    if m.last_batch == 1 and m.batchnorm:
        f.warn(
            f"the last batch holds 1 sample ({m.last_batch_how}) and the model has BatchNorm (`{m.batchnorm[0]}`): "
            "its batch statistics are undefined (BatchNorm1d raises, BatchNorm2d normalises with the statistics of "
            "a single image)",
            LAST_BATCH_HINT,
        )
    for note in class_notes(m):
        f.note(note)
    if s.stopped_why:
        f.note(f"the data scan {s.stopped_why}; labels and the last batch beyond it were not checked")
    if not m.custom_forward and not s.targets_seen:
        f.note("targets were not read from the scan (batches are not (inputs, targets) pairs)")
    if m.num_classes is None and m.integer_targets:
        f.note(f"integer targets with a {m.loss_kind} loss: the label range was not checked")
    return f


def labels_out_of_range(m: Measurement) -> str | None:
    """label_problem() over the label span of every scanned batch."""
    s = m.scan
    if m.num_classes is None or s.label_lo is None or s.label_hi is None:
        return None
    return label_problem(torch.tensor([s.label_lo, s.label_hi]), m.num_classes, m.ignore_index)


def classes_present(s: Scan) -> int:
    return 0 if s.counts is None else int((s.counts > 0).sum())


def class_notes(m: Measurement) -> list[str]:
    """Class imbalance above IMBALANCE_NOTE, classes never seen."""
    s = m.scan
    if s.counts is None or not s.labels_seen:
        return []
    counts = s.counts
    c = m.num_classes or len(counts)
    if c > MAX_CLASSES_SHOWN:
        return []
    share = counts.double() / counts.sum()
    notes = []
    ratio = imbalance_ratio(counts)
    if ratio > IMBALANCE_NOTE:
        top, bot = int(share.argmax()), int(torch.where(share > 0, share, 2.0).argmin())
        notes.append(
            f"class imbalance: class {top} holds {float(share[top]):.1%} of the labels, class {bot} "
            f"{float(share[bot]):.1%} ({ratio:.0f}x); initialise the output bias to the log prior (the "
            "last-layer-bias probe checks it) and consider a weighted loss or sampler"
        )
    unseen = [i for i in range(min(c, len(counts))) if counts[i] == 0] + list(range(len(counts), c))
    if unseen:
        notes.append(f"classes {unseen[:10]}{'...' if len(unseen) > 10 else ''} never appear in the data read")
    return notes


def imbalance_ratio(counts: torch.Tensor) -> float:
    """Share of the most frequent class / share of the least frequent class present."""
    share = counts.double() / counts.sum()
    present = share[share > 0]
    return float(present.max() / present.min())


# ---------------------------------------------------------------------------------------------- word
ONE_BASED_HINT = (
    "Make the labels 0-based where the dataset builds them: `y = y - 1` (e.g. `torch.tensor(label) - 1` in "
    "__getitem__)."
)
REMAP = "or map the labels to 0..C-1 (`y = torch.searchsorted(classes, y)` with `classes = y_train.unique()`)."
NAN_TARGETS_HINT = (
    "Drop or impute the missing targets when building the dataset "
    "(`keep = torch.isfinite(y).all(dim=-1); x, y = x[keep], y[keep]`)."
)
SHAPE_HINT = (
    "Make every sample the same width where the dataset builds it (pad or crop features / resize images in "
    "__getitem__ or the collate_fn); check the file or split that batch comes from."
)
CAUSAL_COPY = (
    "a causal model only has to copy its input token: the loss goes to ~0 and the model never learns to predict"
)
MAYBE_COPY_TASK = (
    "unless this is a token autoencoder / copy task, the targets are not shifted for next-token prediction"
)
SHIFT_HINT = (
    "Shift the targets by one position in your `forward(model, batch)`: feed tokens 0..T-2 and predict tokens "
    "1..T-1, `return model(ids[:, :-1]), ids[:, 1:]`."
)
NAN_INPUTS_HINT = (
    "Impute or drop missing values when building the dataset (`x = torch.nan_to_num(x, nan=0.0)` after "
    "standardising, or drop the rows), and check the preprocessing for divisions by a zero std."
)
SHUFFLE_HINT = (
    "Shuffle the training data every epoch: `DataLoader(dataset, batch_size=..., shuffle=True)` (or a "
    "`torch.randperm(len(x))` permutation before batching). Sorted batches make every step fit one class."
)
REPEATED_BATCH_HINT = (
    "Build the batches from the whole dataset: `DataLoader(dataset, batch_size=..., shuffle=True)` created once, "
    "not `[(x, y)] * n` or a loader re-created with the same seed at every step. (If data() yields several epochs, "
    "make it yield one: nncheck reads it as one epoch.)"
)
PIXELS_HINT = (
    "Scale and normalise the images: `transforms.ToTensor()` (divides by 255) then `transforms.Normalize(mean, "
    "std)` with the per-channel statistics of the training set, or `x = (x / 255 - mean) / std`."
)
SCALE_HINT = (
    "Standardise every input feature with statistics of the training set: `x = (x - mean) / std` with "
    "`mean, std = x_train.mean(0), x_train.std(0)` (sklearn's StandardScaler), or transforms.Normalize for images."
)
TINY_HINT = (
    "Standardise the inputs with training-set statistics: `x = (x - x_train.mean(0)) / x_train.std(0)`, and check "
    "the unit conversion where the features are built."
)
CONSTANT_HINT = (
    "Check the dataset's __getitem__ / collate: inputs are filled with a placeholder (zeros) or the wrong tensor is "
    "yielded."
)
DUPLICATES_HINT = (
    "Check that the dataset's __getitem__ uses its index (`return self.x[idx], self.y[idx]`) and that batches are "
    "not built from one repeated sample (`[x] * batch_size`)."
)
LAST_BATCH_HINT = "Drop the incomplete last batch: `DataLoader(dataset, batch_size=..., shuffle=True, drop_last=True)`."


def widen_hint(m: Measurement) -> str:
    """The concrete line that gives the output layer one output per class (max label + 1), or the label mapping."""
    n = (m.scan.label_hi or 0) + 1
    layer = m.output_layer
    if layer is not None:
        bias = "" if layer.bias else ", bias=False"
        return (
            f"If the labels are right, the output layer `{layer.path}` "
            f"(nn.Linear({layer.in_features}, {layer.out_features})) needs {n} outputs: build it as "
            f"`nn.Linear({layer.in_features}, {n}{bias})` in model(); {REMAP}"
        )
    return f"If the labels are right, give the output layer {n} outputs (one per class, max label + 1); {REMAP}"


def measured_of(m: Measurement) -> dict[str, Any]:
    s, x = m.scan, m.inputs
    measured: dict[str, Any] = {
        "batches_read": s.batches,
        "data_exhausted": s.exhausted,
        "num_classes": m.num_classes,
        "single_class_batches": s.single_class,
        "nonfinite_targets": s.nonfinite_targets,
        "nonfinite_inputs": s.nonfinite_inputs,
        "last_batch_size": m.last_batch,
        "batchnorm": m.batchnorm[:5],
        "float_inputs": x.float_tensors > 0,
        "input_max_abs_mean": x.max_abs_mean,
        "input_max_std": x.max_std,
        "duplicate_fraction": x.duplicate_fraction,
        "repeated_batch_fraction": x.repeated_batch_fraction,
        "repeated_sample_fraction": x.repeated_sample_fraction,
        "unshifted_target_fraction": m.unshifted,
    }
    if s.counts is not None and s.labels_seen:
        measured.update(labels_seen=s.labels_seen, classes_present=classes_present(s))
        if len(s.counts) <= MAX_CLASSES_SHOWN:
            measured["class_counts"] = [int(v) for v in s.counts]
        measured["imbalance_ratio"] = imbalance_ratio(s.counts)
    return measured


def expected_of(m: Measurement, p: Params) -> dict[str, Any]:
    return {
        "labels_in": f"[0, {m.num_classes})" if m.num_classes else None,
        "input_max_abs_mean": p.scale_warn,
        "input_max_std": p.scale_warn,
        "duplicate_fraction_max": p.dup_warn,
        "single_class_batches_max_fraction": p.single_class_frac,
        "last_batch_size_min_with_batchnorm": 2,
    }


def class_plot(m: Measurement) -> dict[str, Any]:
    s = m.scan
    if s.counts is None or not s.labels_seen or (m.num_classes or len(s.counts)) > MAX_CLASSES_SHOWN:
        return {}
    labels = [str(i) for i in range(len(s.counts))]
    plot = bar_plot(
        "Labels per class (data read)", labels, {"labels": [int(v) for v in s.counts]}, xlabel="class", ylabel="labels"
    )
    return {"class_distribution": plot}


def passed_message(m: Measurement) -> str:
    s, x = m.scan, m.inputs
    what = f"{s.batches} batches read" + ("" if s.exhausted else f" ({s.stopped_why})")
    if m.num_classes:
        what += f", labels in [0, {m.num_classes})"
    if m.last_batch is not None:
        what += f", last batch {m.last_batch}"
    if x.float_tensors:
        return what + f"; inputs |mean| <= {x.max_abs_mean:.3g}, std <= {x.max_std:.3g}"
    return what + "; integer inputs (tokens / indices: scale not judged)"


@probe("data", title="Data sanity", order=5, params=Params)
def data(ctx: Context, p: Params) -> Result:
    """Checks the batches themselves: labels, NaNs, class balance, shuffling, input scale, duplicates, last batch.

    What it does:
        Reads the data once more, on the CPU, as the data yields it, up to {max_scan_batches} batches or
        {max_scan_s} seconds (it says where it stopped), and the first {input_batches} batches on the device:
        - class targets (cross-entropy): every label in [0, C) where C is the output width (labels 1..C: off by
          one), the class distribution, and whether most batches hold a single class while the data holds many;
          the classes in each cached batch against those a shuffled batch of that size would hold (one or two
          classes per batch out of many: a class-sorted loader, a bucketed or per-class sampler);
        - NaN / inf values in targets and inputs;
        - float inputs: raw 8-bit pixels (integers in [0, 255]), or a feature/channel with a large |mean| or std;
          integer inputs (tokens, indices) are not judged for scale;
        - a batch whose inputs are all one value, or whose samples mostly repeat each other; batches that repeat
          an earlier batch exactly (`[(x, y)] * 8`); float inputs whose every feature has a tiny |mean| and std
          (a unit error); an input whose rank or feature / channel count (dim 1 of (B, F) and (B, C, H, W))
          changes across the scanned batches (lengths and image sizes may vary);
        - next-token targets that are not shifted: (B, T) targets equal to the token an nn.Embedding reads at the
          same position, with (B, T, C) outputs (fail when `causal`, else warn);
        - the size of the last batch (from the DataLoader's dataset size, batch_size and drop_last, else from
          the scan) when the model has BatchNorm.
        With a custom `forward` the targets come from `forward` on the first batches only.

    Why is this bad?
        Labels outside [0, C) make cross-entropy raise an IndexError on CPU and an opaque device-side assert on
        CUDA, usually hours into training when the rare class shows up. NaN targets make the loss NaN. Batches
        sorted by class make each step fit one class (the loss oscillates, the model forgets). Unnormalised
        inputs saturate activations and make the LR wrong per feature. A batch of one sample under BatchNorm
        has no batch statistics. (Humbatova et al. ICSE 2020, "Training data quality" / "Preprocessing";
        Islam et al. FSE 2019, data bugs; Karpathy's recipe, "become one with the data".)

    Thresholds:
        fail: any label outside [0, C); any non-finite target or input; a share of single-class batches >=
        {single_class_frac} where shuffled data would give < 10%; a share of batches repeating an earlier one >
        {cross_dup_fail}; a feature / channel count that changes; a share of unshifted LM targets >=
        {no_shift_fail}.
        warn: raw pixels; a feature's |mean| or std > {scale_warn}; every feature's |mean| and std <
        {tiny_std_warn}; a constant batch, or a share of duplicated samples in a batch > {dup_warn}; a last
        batch of 1 sample with BatchNorm; the median cached batch holds <= {few_classes} classes and the mean
        is <= {class_spread} of a shuffled batch's. note: class imbalance above 10x (the last-layer-bias probe
        judges the bias).

    How to fix:
        `y = y - 1` for 1-based labels; `DataLoader(..., shuffle=True, drop_last=True)`;
        `transforms.Normalize(mean, std)` / `(x - mean) / std` with training-set statistics.

    Example:
        Labels 1..5 for a 5-way classifier: fail, "class labels span 1..5 but the output has 5 classes:
        labels must be in [0, 5); the labels look 1-based (off by one): subtract 1".
    """
    m = measure(ctx, p)
    f = judge(m, p)
    few_classes_per_batch(ctx, m, p, f)
    return f.result(passed_message(m))


def few_classes_per_batch(ctx: Context, m: Measurement, p: Params, f: Findings) -> None:
    """Warn when the cached batches hold one or two classes each while the data holds many (an unshuffled or
    class-sorted loader, a bucketed / class-pair sampler), with classes per batch against a shuffled batch's. Not
    repeated when most batches hold a single class (judge fails that); class targets of the default forward only."""
    s = m.scan
    if s.counts is None or m.custom_forward or not m.num_classes or classes_present(s) < 3:
        return
    chance = m.single_class_chance
    if chance is not None and chance < SINGLE_CLASS_EXPECTED and s.single_class_fraction >= p.single_class_frac:
        return
    prior = s.counts.double() / s.counts.sum()
    per_batch: list[int] = []
    expected: list[float] = []
    for b in ctx.batches(MAX_CACHED_BATCHES):
        y = ctx.target_of(b)
        if not isinstance(y, torch.Tensor) or y.dim() != 1 or not is_class_target(y):
            return
        y = y[(y >= 0) & (y != m.ignore_index)].cpu()
        if y.numel() < 2:
            continue
        per_batch.append(int(y.unique().numel()))
        expected.append(float((1 - (1 - prior) ** y.numel()).sum()))
    if len(per_batch) < 2:
        return
    median = sorted(per_batch)[(len(per_batch) - 1) // 2]
    seen, shuffled = sum(per_batch) / len(per_batch), sum(expected) / len(expected)
    f.measured["classes_per_batch"] = per_batch
    f.measured["classes_per_shuffled_batch"] = round(shuffled, 2)
    if median <= p.few_classes and seen <= p.class_spread * shuffled:
        f.expected["classes_per_batch"] = f"> {p.few_classes:g}, near {shuffled:.1f} (a shuffled batch)"
        f.warn(
            f"the first {len(per_batch)} batches hold {_span(per_batch)} classes each (mean {seen:.1f}) while the "
            f"data holds {classes_present(s)} and a shuffled batch of this size would hold {shuffled:.1f}: the "
            "loader is not shuffled across classes (sorted by class, or a bucketed / per-class sampler)",
            "Shuffle the samples of every class together: `DataLoader(dataset, batch_size=..., shuffle=True)` or "
            "a shuffled sampler (`RandomSampler`, a `WeightedRandomSampler` for balance); a bucketed or per-class "
            "batch sampler should mix many classes into each batch. Each step otherwise pulls the model toward the "
            "batch's one or two classes.",
        )


def _span(xs: list[int]) -> str:
    return f"{min(xs)}" if min(xs) == max(xs) else f"{min(xs)}-{max(xs)}"
