"""data: the batches themselves: label range, non-finite values, class balance, shuffling, input scale,
duplicates, and a last batch of one sample under BatchNorm."""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nncheck import losses
from nncheck.context import MAX_CACHED_BATCHES, Context
from nncheck.losses import is_class_target, label_problem
from nncheck.modelgraph import code_path, is_batchnorm, without_dropout
from nncheck.registry import param, probe
from nncheck.report import Result, failed, passed, warned
from nncheck.tensors import iter_tensors

# Integer-valued float inputs in [0, 255] with a max above this look like raw 8-bit pixels (torchvision's ToTensor
# divides by 255; a max <= 10 is more likely counts or small categorical codes).
PIXEL_MIN_MAX = 10.0
# Unshuffled: fail when at least this fraction of the scanned batches hold a single class while the data holds
# several, and shuffled data would produce such batches rarely (expected fraction below SINGLE_CLASS_EXPECTED).
SINGLE_CLASS_EXPECTED = 0.1
# Class imbalance worth a note: the most frequent class is this many times the least frequent one (the regime where
# a prior-initialised output bias matters: Karpathy's recipe, "init well"; Lin et al. 2017, focal loss, §4.1).
IMBALANCE_NOTE = 10.0
# Classes shown in the distribution plot / measured values at most (a vocabulary is summarised).
MAX_CLASSES_SHOWN = 100


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


def has_batchnorm(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if is_batchnorm(m)]


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
    shape_change: str | None = None  # the first input whose width changes across batches
    single_class: int = 0  # batches (>= 2 samples, one label per sample) holding one class
    multi_label_batches: int = 0  # batches eligible for the single-class test
    nonfinite_targets: int = 0
    nonfinite_target_batch: int | None = None
    nonfinite_inputs: int = 0
    nonfinite_input_batch: int | None = None
    targets_seen: bool = False
    loader: tuple[int, int, bool] | None = None  # (dataset size, batch_size, drop_last) of a DataLoader


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
    if read_targets and isinstance(b, (tuple, list)) and len(b) == 2:
        y = b[1]
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
        scan.shape_change = (
            f"input {k} has shape {first} in batch 0 but {shape} in batch {i}: every batch must have the same "
            "number of features / channels (only the batch dimension may change)"
        )


# ---------------------------------------------------------------------------------------------- findings
@dataclass
class Finding:
    status: str  # "fail" | "warn"
    message: str
    hint: str


def out_of_range(scan: Scan, num_classes: int | None, ignore_index: int) -> str | None:
    """label_problem() over the label span of every scanned batch."""
    if num_classes is None or scan.label_lo is None or scan.label_hi is None:
        return None
    return label_problem(torch.tensor([scan.label_lo, scan.label_hi]), num_classes, ignore_index)


def target_findings(
    scan: Scan, num_classes: int | None, ignore_index: int, model: nn.Module, out_layer: str
) -> list[Finding]:
    found: list[Finding] = []
    problem = out_of_range(scan, num_classes, ignore_index)
    if problem:
        if "1-based" in problem:
            hint = (
                "Make the labels 0-based where the dataset builds them: `y = y - 1` (e.g. `torch.tensor(label) - 1` "
                "in __getitem__)."
            )
        else:
            hint = widen_hint(scan, model, out_layer)
        found.append(
            Finding(
                "fail",
                f"{problem} (first seen in batch {scan.bad_batch}); cross-entropy would raise an opaque "
                "IndexError on CPU or a device-side assert on CUDA",
                hint,
            )
        )
    if scan.nonfinite_targets:
        found.append(
            Finding(
                "fail",
                f"{scan.nonfinite_targets} target values are NaN/inf (first in batch {scan.nonfinite_target_batch}): "
                "the loss becomes NaN on every batch that holds one",
                "Drop or impute the missing targets when building the dataset "
                "(`keep = torch.isfinite(y).all(dim=-1); x, y = x[keep], y[keep]`).",
            )
        )
    return found


def widen_hint(scan: Scan, model: nn.Module, out_layer: str) -> str:
    """The concrete line that gives the output layer one output per class (max label + 1), or the label mapping."""
    n = (scan.label_hi or 0) + 1
    remap = "or map the labels to 0..C-1 (`y = torch.searchsorted(classes, y)` with `classes = y_train.unique()`)."
    layer = model.get_submodule(out_layer) if out_layer else None
    if isinstance(layer, nn.Linear):
        bias = "" if layer.bias is not None else ", bias=False"
        return (
            f"If the labels are right, the output layer `{code_path(out_layer, model)}` "
            f"(nn.Linear({layer.in_features}, {layer.out_features})) needs {n} outputs: build it as "
            f"`nn.Linear({layer.in_features}, {n}{bias})` in model(); {remap}"
        )
    return f"If the labels are right, give the output layer {n} outputs (one per class, max label + 1); {remap}"


def shuffle_finding(scan: Scan, p: Params) -> Finding | None:
    """Fail when most batches hold a single class while the data holds several (sorted, unshuffled data)."""
    if scan.counts is None or scan.multi_label_batches < 2:
        return None
    present = int((scan.counts > 0).sum())
    if present < 2:
        return None
    frac = scan.single_class / scan.multi_label_batches
    prior = scan.counts.double() / scan.counts.sum()
    sizes = [s for s in scan.sizes if s >= 2] or [2]
    expected = float((prior.unsqueeze(1) ** torch.tensor(sizes, dtype=torch.float64)).sum(0).mean())
    if frac >= p.single_class_frac and expected < SINGLE_CLASS_EXPECTED:
        return Finding(
            "fail",
            f"{scan.single_class}/{scan.multi_label_batches} batches hold a single class while the data holds "
            f"{present} classes (shuffled data would give {expected:.2%}): the data is not shuffled",
            "Shuffle the training data every epoch: `DataLoader(dataset, batch_size=..., shuffle=True)` (or a "
            "`torch.randperm(len(x))` permutation before batching). Sorted batches make every step fit one class.",
        )
    return None


def input_findings(
    ctx: Context, batches: list[Any], targets: list[Any], p: Params
) -> tuple[list[Finding], dict[str, Any]]:
    """Scale, raw pixels, constant inputs and duplicated samples, on the cached batches."""
    found: list[Finding] = []
    max_mean = max_std = 0.0
    pixels = constant = False
    dup = 0.0
    worst = ""
    floats = 0
    keys_per_batch: list[list[bytes]] = []
    for b, y in zip(batches, targets):
        every = list(iter_tensors(ctx.inputs_of(b)))
        # an input that is also the target (autoencoder, VAE) is still an input: leave targets out only when other
        # input tensors remain
        tensors = [t for t in every if not _is_target(t, y)] or every
        for t in tensors:
            if not t.is_floating_point() or t.numel() == 0 or not bool(torch.isfinite(t).all()):
                continue
            m, s = feature_stats(t)
            if max(m, s) > max(max_mean, max_std):
                worst = f"{tuple(t.shape)}"
            max_mean, max_std = max(max_mean, m), max(max_std, s)
            pixels = pixels or looks_like_pixels(t)
            floats += 1
        if tensors and all(t.numel() > 0 and bool((t == t.reshape(-1)[0]).all()) for t in tensors):
            constant = True
        try:
            keys = sample_keys(tensors, ctx.batch_size(b))
        except Exception:
            keys = None
        if keys is not None:
            dup = max(dup, 1.0 - len(set(keys)) / len(keys) if len(keys) >= 2 else 0.0)
            keys_per_batch.append(keys)
    cross, cross_samples = cross_batch_repeats(keys_per_batch)
    if len(keys_per_batch) >= 2 and cross > p.cross_dup_fail and not constant:  # constant: warned below
        later = len(keys_per_batch) - 1
        found.append(
            Finding(
                "fail",
                f"{round(cross * later)} of batches 1..{later} repeat an earlier batch exactly ({cross:.0%}, "
                f"expected <= {p.cross_dup_fail:.0%}; {cross_samples:.0%} of their samples were seen before): "
                "the same batch is fed again and again, the model memorises a few samples",
                "Build the batches from the whole dataset: `DataLoader(dataset, batch_size=..., shuffle=True)` "
                "created once, not `[(x, y)] * n` or a loader re-created with the same seed at every step. "
                "(If data() yields several epochs, make it yield one: nncheck reads it as one epoch.)",
            )
        )
    measured = {
        "float_inputs": floats > 0,
        "input_max_abs_mean": max_mean,
        "input_max_std": max_std,
        "duplicate_fraction": dup,
        "repeated_batch_fraction": cross,
        "repeated_sample_fraction": cross_samples,
    }
    if pixels:
        found.append(
            Finding(
                "warn",
                f"inputs are integer values in [0, 255] (a channel has |mean| {max_mean:.3g}, std {max_std:.3g}): "
                "raw 8-bit pixels, not normalised",
                "Scale and normalise the images: `transforms.ToTensor()` (divides by 255) then "
                "`transforms.Normalize(mean, std)` with the per-channel statistics of the training set, or "
                "`x = (x / 255 - mean) / std`.",
            )
        )
    elif max_mean > p.scale_warn or max_std > p.scale_warn:
        found.append(
            Finding(
                "warn",
                f"inputs look unnormalised: a feature has |mean| {max_mean:.3g} / std {max_std:.3g} "
                f"(expected <= {p.scale_warn:g}; input {worst})",
                "Standardise every input feature with statistics of the training set: "
                "`x = (x - mean) / std` with `mean, std = x_train.mean(0), x_train.std(0)` (sklearn's "
                "StandardScaler), or transforms.Normalize for images.",
            )
        )
    if floats and not constant and max(max_std, max_mean) < p.tiny_std_warn:
        found.append(
            Finding(
                "warn",
                f"every float input feature has |mean| and std below {p.tiny_std_warn:g} (largest std "
                f"{max_std:.3g}, |mean| {max_mean:.3g}): a unit error (e.g. micro-units), the first layer sees ~0 "
                "input",
                "Standardise the inputs with training-set statistics: `x = (x - x_train.mean(0)) / x_train.std(0)`, "
                "and check the unit conversion where the features are built.",
            )
        )
    if constant:
        found.append(
            Finding(
                "warn",
                "a batch of inputs is constant (every value equal): the model cannot tell samples apart",
                "Check the dataset's __getitem__ / collate: inputs are filled with a placeholder (zeros) or the "
                "wrong tensor is yielded.",
            )
        )
    elif dup > p.dup_warn:
        found.append(
            Finding(
                "warn",
                f"{dup:.0%} of the samples of a batch repeat another sample of that batch (expected <= "
                f"{p.dup_warn:.0%})",
                "Check that the dataset's __getitem__ uses its index (`return self.x[idx], self.y[idx]`) and that "
                "batches are not built from one repeated sample (`[x] * batch_size`).",
            )
        )
    return found, measured


@contextlib.contextmanager
def record_embedded(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect the index tensors every nn.Embedding of ``model`` receives while the block runs."""
    seen: list[torch.Tensor] = []

    def hook(_m: nn.Module, args: tuple[Any, ...]) -> None:
        if args and isinstance(args[0], torch.Tensor):
            seen.append(args[0].detach())

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, nn.Embedding)]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def copy_fraction(ids: torch.Tensor, y: torch.Tensor, ignore_index: int) -> float | None:
    """Fraction of the (non-ignored) target positions equal to the token embedded at the same position."""
    if ids.shape != y.shape or ids.dim() != 2:
        return None
    keep = y != ignore_index
    if not bool(keep.any()):
        return None
    return float((ids == y)[keep].double().mean())


def unshifted_targets(
    ctx: Context,
    outs: list[Any],
    targets: list[Any],
    embedded: list[list[torch.Tensor]],
    ignore_index: int,
    p: Params,
) -> Finding | None:
    """Next-token targets equal to the tokens embedded at the same positions ((B, T) ids, (B, T, C) outputs)."""
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
    if best < p.no_shift_fail:
        return None
    status = "fail" if ctx.setup.causal else "warn"
    why = (
        "a causal model only has to copy its input token: the loss goes to ~0 and the model never learns to predict"
        if ctx.setup.causal
        else "unless this is a token autoencoder / copy task, the targets are not shifted for next-token prediction"
    )
    return Finding(
        status,
        f"{best:.0%} of the target positions hold the token the model embeds at the same position "
        f"(expected < {p.no_shift_fail:.0%} for next-token targets): {why}",
        "Shift the targets by one position in your `forward(model, batch)`: feed tokens 0..T-2 and predict tokens "
        "1..T-1, `return model(ids[:, :-1]), ids[:, 1:]`.",
    )


def _is_target(t: torch.Tensor, y: Any) -> bool:
    """With a custom forward the batch may carry the targets too: leave them out of input statistics."""
    if not isinstance(y, torch.Tensor):
        return False
    return t is y or (t.shape == y.shape and t.dtype == y.dtype and bool(torch.equal(t, y)))


def last_batch_finding(scan: Scan, bn: list[str]) -> tuple[Finding | None, int | None]:
    """A last batch of one sample with BatchNorm in the model (from the DataLoader's numbers, else the scan)."""
    last: int | None
    if scan.loader is not None:
        n, bs, drop = scan.loader
        last = None if drop else (n % bs or bs)
        how = f"dataset of {n} samples, batch_size={bs}, drop_last={drop}"
    elif scan.last_size is not None:
        last, how = scan.last_size, f"{scan.batches} batches read"
    else:
        return None, None
    if last == 1 and bn:
        finding = Finding(
            "warn",
            f"the last batch holds 1 sample ({how}) and the model has BatchNorm (`{bn[0]}`): its batch statistics "
            "are undefined (BatchNorm1d raises, BatchNorm2d normalises with the statistics of a single image)",
            "Drop the incomplete last batch: `DataLoader(dataset, batch_size=..., shuffle=True, drop_last=True)`.",
        )
        return finding, last
    return None, last


def distribution(scan: Scan, num_classes: int | None) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
    """Class counts (measured), notes (imbalance, classes never seen) and a bar plot."""
    if scan.counts is None or not scan.labels_seen:
        return {}, [], {}
    counts = scan.counts
    c = num_classes or len(counts)
    share = counts.double() / counts.sum()
    present = share[share > 0]
    measured: dict[str, Any] = {"labels_seen": scan.labels_seen, "classes_present": int((counts > 0).sum())}
    if len(counts) <= MAX_CLASSES_SHOWN:
        measured["class_counts"] = [int(v) for v in counts]
    notes: list[str] = []
    ratio = float(present.max() / present.min())
    measured["imbalance_ratio"] = ratio
    if ratio > IMBALANCE_NOTE and c <= MAX_CLASSES_SHOWN:
        top, bot = int(share.argmax()), int(torch.where(share > 0, share, 2.0).argmin())
        notes.append(
            f"class imbalance: class {top} holds {float(share[top]):.1%} of the labels, class {bot} "
            f"{float(share[bot]):.1%} ({ratio:.0f}x); initialise the output bias to the log prior (the "
            "last-layer-bias probe checks it) and consider a weighted loss or sampler"
        )
    unseen = [i for i in range(min(c, len(counts))) if counts[i] == 0] + list(range(len(counts), c))
    if unseen and c <= MAX_CLASSES_SHOWN:
        notes.append(f"classes {unseen[:10]}{'...' if len(unseen) > 10 else ''} never appear in the data read")
    series = {}
    if c <= MAX_CLASSES_SHOWN:
        series["class_distribution"] = {
            "title": "Labels per class (data read)",
            "xlabel": "class",
            "ylabel": "labels",
            "xscale": "linear",
            "yscale": "linear",
            "kind": "bar",
            "curves": {"labels": {"x": [str(i) for i in range(len(counts))], "y": [int(v) for v in counts]}},
        }
    return measured, notes, series


def _output_layer_name(model: nn.Module, num_classes: int | None) -> str:
    if num_classes is None:
        return ""
    for name, m in reversed(list(model.named_modules())):
        if isinstance(m, nn.Linear) and m.out_features == num_classes:
            return name
    return ""


def _cpu(obj: Iterable[Any]) -> list[Any]:
    return [o.detach().cpu() if isinstance(o, torch.Tensor) else o for o in obj]


@dataclass(frozen=True)
class Params:
    """Parameters of data (`[tool.nncheck.probes.data]`)."""

    input_batches: int = param(
        8,
        fast=4,
        source=("Batches whose inputs are checked for scale and duplicates (the context caches at most 8)."),
    )
    max_scan_batches: int = param(
        1000,
        fast=200,
        source=(
            "Bounds of the scan over the whole data (to see every label and the last batch): a DataLoader over a "
            "few thousand samples is read in well under a second; past these bounds the probe says where it "
            "stopped."
        ),
    )
    max_scan_s: float = param(
        10.0,
        fast=3.0,
        source=(
            "Bounds of the scan over the whole data (to see every label and the last batch): a DataLoader over a "
            "few thousand samples is read in well under a second; past these bounds the probe says where it "
            "stopped."
        ),
    )
    scale_warn: float = param(
        10.0,
        source=(
            "Inputs look unnormalised when a feature / channel has |mean| or std above this (issue 5; LeCun et "
            'al. 1998, "Efficient BackProp": inputs should have mean ~0 and comparable variance ~1).'
        ),
    )
    dup_warn: float = param(
        0.5,
        source=(
            "Warn when more than this fraction of a batch's samples repeat an earlier sample of the same batch (a "
            "dataset whose __getitem__ ignores its index, `[x] * B`). Measured: correct examples have 0 "
            "duplicates."
        ),
    )
    cross_dup_fail: float = param(
        0.5,
        source=(
            "Fail when more than this fraction of the cached batches after the first are an exact repeat (same "
            "samples, same order) of an earlier batch (`[(x, y)] * 8`, a loader re-created with the same seed "
            "every step). Judged per batch, not per sample: a dataset with few distinct samples repeats samples "
            "across batches legitimately (held-out b_lm_no_shift.py's synthetic data has 48 distinct sequences: "
            "70% of its samples repeat an earlier batch's, yet no batch repeats). Measured: 0 repeated batches on "
            "every correct file of examples/ and checks/ and on the held-out a_*.py; 7/7 on held-out "
            "b_same_batch_repeated.py. 50% tolerates a data() that wraps into a second epoch early."
        ),
    )
    tiny_std_warn: float = param(
        0.001,
        source=(
            "Inputs whose every float feature has |mean| and std below this look like a unit error (micro-units, "
            "a value divided twice): standardised features have std ~1 (LeCun et al. 1998); the largest feature "
            "std of every correct file of examples/ and checks/ is > 0.05; held-out b_inputs_1e-6.py has std "
            "~2e-6, |mean| ~1e-6. Weights would have to grow 1e3x to use such inputs. (|mean| too: a batch of one "
            "repeated sample has std 0 but a normal mean.)"
        ),
    )
    no_shift_fail: float = param(
        0.9,
        source=(
            "Next-token targets not shifted: fail when at least this fraction of the target positions equal the "
            "token embedded at the same position (a causal model then learns to copy its input). Measured: "
            "held-out b_lm_no_shift.py 100%, the correct LMs (examples/tiny_lm, held-out a_tied_lm) and seq2seq "
            "(held-out a_seq2seq_*) < 15% (chance repeats of a token); 90% allows ignore_index-free padding runs."
        ),
    )
    single_class_frac: float = param(
        0.5,
        source=(
            "Unshuffled: fail when at least this fraction of the scanned batches hold a single class while the "
            "data holds several, and shuffled data would produce such batches rarely (expected fraction below "
            "SINGLE_CLASS_EXPECTED)."
        ),
    )


@probe("data", title="Data sanity", order=5, params=Params)
def data(ctx: Context, p: Params) -> Result:
    """Checks the batches themselves: labels, NaNs, class balance, shuffling, input scale, duplicates, last batch.

    What it does:
        Reads the data once more, on the CPU, as the data yields it, up to `max_scan_batches` batches or
        `max_scan_s` seconds (it says where it stopped), and the first `input_batches` batches on the device:
        - class targets (cross-entropy): every label in [0, C) where C is the output width (labels 1..C: off by
          one), the class distribution, and whether most batches hold a single class while the data holds many;
        - NaN / inf values in targets and inputs;
        - float inputs: raw 8-bit pixels (integers in [0, 255]), or a feature/channel with |mean| or std above
          `scale_warn`; integer inputs (tokens, indices) are not judged for scale;
        - a batch whose inputs are all one value, or whose samples mostly repeat each other; batches that repeat
          an earlier batch exactly (`[(x, y)] * 8`); float inputs whose every feature has |mean| and std < 1e-3
          (a unit error); an input whose rank or feature / channel count (dim 1 of (B, F) and (B, C, H, W)) changes
          across the scanned batches (lengths and image sizes may vary);
        - next-token targets that are not shifted: (B, T) targets equal to the token an nn.Embedding reads at the
          same position for >= 90% of the positions, with (B, T, C) outputs (fail when `causal`, else warn);
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
        fail: any label outside [0, C); any non-finite target or input; >= 50% of the batches single-class
        (`single_class_frac`) where shuffled data would give < 10%; > 50% of the batches repeating an earlier one
        (`cross_dup_fail`); a feature / channel count that changes; >= 90% unshifted LM targets (`no_shift_fail`).
        warn: raw pixels, |mean| or std > 10 (`scale_warn`) for a feature; every feature below 1e-3
        (`tiny_std_warn`); a constant batch or > 50% duplicated samples (`dup_warn`); a last batch of 1 sample
        with BatchNorm. note: class imbalance above 10x (the last-layer-bias probe judges the bias).

    How to fix:
        `y = y - 1` for 1-based labels; `DataLoader(..., shuffle=True, drop_last=True)`;
        `transforms.Normalize(mean, std)` / `(x - mean) / std` with training-set statistics.

    Example:
        Labels 1..5 for a 5-way classifier: fail, "class labels span 1..5 but the output has 5 classes:
        labels must be in [0, 5); the labels look 1-based (off by one): subtract 1".
    """
    batches = ctx.batches(p.input_batches)
    model = without_dropout(ctx.fresh_model(train=True))
    outs: list[Any] = []
    targets: list[Any] = []
    embedded: list[list[torch.Tensor]] = []
    with torch.no_grad(), record_embedded(model) as seen:
        for i, b in enumerate(batches):
            ctx.check_time()
            seen.clear()
            if i == 0 or ctx.setup.custom_forward:
                out, y = ctx.forward(model, b)
                outs.append(out)
            else:
                y = b[1] if isinstance(b, (tuple, list)) and len(b) == 2 else None
            targets.append(y)
            embedded.append(list(seen))
    num_classes = ctx.num_classes(outs[0])
    if num_classes is None and ctx.loss_kind == "bce":
        num_classes = 2  # per-sample 0/1 targets are read as classes 0 and 1 (shuffling, balance)
    ignore = losses.ignore_index(ctx.loss_fn)
    out_layer = _output_layer_name(model, num_classes)

    scan = scan_data(
        ctx,
        num_classes,
        ignore,
        read_targets=not ctx.setup.custom_forward,
        max_batches=p.max_scan_batches,
        max_s=p.max_scan_s,
    )
    if ctx.setup.custom_forward:  # targets come from forward() on the cached batches
        for i, y in enumerate(_cpu(targets)):
            per_sample = isinstance(y, torch.Tensor) and y.dim() == 1
            scan_targets(scan, i, y, num_classes, ignore, per_sample)

    findings = target_findings(scan, num_classes, ignore, model, out_layer)
    if scan.shape_change:
        findings.append(
            Finding(
                "fail",
                scan.shape_change,
                "Make every sample the same width where the dataset builds it (pad or crop features / resize images "
                "in __getitem__ or the collate_fn); check the file or split that batch comes from.",
            )
        )
    no_shift = unshifted_targets(ctx, outs, targets, embedded, ignore, p)
    if no_shift:
        findings.append(no_shift)
    if scan.nonfinite_inputs:
        findings.append(
            Finding(
                "fail",
                f"{scan.nonfinite_inputs} input values are NaN/inf (first in batch {scan.nonfinite_input_batch}): a "
                "data error, every output and the loss on that batch become NaN",
                "Impute or drop missing values when building the dataset "
                "(`x = torch.nan_to_num(x, nan=0.0)` after standardising, or drop the rows), and check the "
                "preprocessing for divisions by a zero std.",
            )
        )
    shuffle = shuffle_finding(scan, p)
    if shuffle:
        findings.append(shuffle)
    inputs, in_measured = input_findings(ctx, batches, targets, p)
    findings += inputs
    bn = [code_path(n, model) for n in has_batchnorm(model)]
    last_f, last = last_batch_finding(scan, bn)
    if last_f:
        findings.append(last_f)

    dist_measured, notes, series = distribution(scan, num_classes)
    measured: dict[str, Any] = {
        "batches_read": scan.batches,
        "data_exhausted": scan.exhausted,
        "num_classes": num_classes,
        "single_class_batches": scan.single_class,
        "nonfinite_targets": scan.nonfinite_targets,
        "nonfinite_inputs": scan.nonfinite_inputs,
        "last_batch_size": last,
        "batchnorm": bn[:5],
        **in_measured,
        **dist_measured,
    }
    expected = {
        "labels_in": f"[0, {num_classes})" if num_classes else None,
        "input_max_abs_mean": p.scale_warn,
        "input_max_std": p.scale_warn,
        "duplicate_fraction_max": p.dup_warn,
        "single_class_batches_max_fraction": p.single_class_frac,
        "last_batch_size_min_with_batchnorm": 2,
    }
    if scan.stopped_why:
        notes.append(f"the data scan {scan.stopped_why}; labels and the last batch beyond it were not checked")
    if not ctx.setup.custom_forward and not scan.targets_seen:
        notes.append("targets were not read from the scan (batches are not (inputs, targets) pairs)")
    if num_classes is None and any(is_class_target(t) for t in targets):
        notes.append(f"integer targets with a {ctx.loss_kind} loss: the label range was not checked")
    fails = [f for f in findings if f.status == "fail"]
    warns = [f for f in findings if f.status == "warn"]
    kw = {"measured": measured, "expected": expected, "series": series}
    if fails or warns:
        main = (fails or warns)[0]
        others = [f"also ({f.status}): {f.message}" for f in findings if f is not main]
        make = failed if fails else warned
        hints = " ".join(dict.fromkeys([main.hint] + [f.hint for f in findings if f is not main]))
        return make(main.message, hint=hints, notes=others + notes, **kw)
    what = f"{scan.batches} batches read" + ("" if scan.exhausted else f" ({scan.stopped_why})")
    if num_classes:
        what += f", labels in [0, {num_classes})"
    if last is not None:
        what += f", last batch {last}"
    if measured["float_inputs"]:
        what += f"; inputs |mean| <= {measured['input_max_abs_mean']:.3g}, std <= {measured['input_max_std']:.3g}"
    else:
        what += "; integer inputs (tokens / indices: scale not judged)"
    return passed(what, notes=notes, **kw)
