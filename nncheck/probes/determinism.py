"""determinism: one seed must give one model, one data order and one training trajectory."""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nncheck import trace as training_trace
from nncheck.kit import Context, Findings, Result, code_path, forward_hooks, param, probe
from nncheck.tensors import iter_tensors, map_tensors
from nncheck.trace import Trace

# How many differing tensors a message names.
MAX_NAMED = 3

# Source patterns that draw entropy nncheck's seeding (torch, numpy, random, CUDA) cannot reach. Shown in the hint
# with their line numbers when the setup file contains them.
ENTROPY_PATTERNS = (
    (r"default_rng\(\s*\)", "np.random.default_rng() without a seed"),
    (r"default_rng\(\s*None\s*\)", "np.random.default_rng(None)"),
    (r"\bRandom\(\s*\)", "random.Random() without a seed"),
    (r"\bRandomState\(\s*\)", "np.random.RandomState() without a seed"),
    (r"SystemRandom\(", "random.SystemRandom (OS entropy)"),
    (r"\.seed\(\s*\)", "a generator reseeded from OS entropy (.seed())"),
    (r"\burandom\(", "os.urandom"),
    (r"\btime\.(time|time_ns|perf_counter|monotonic)(_ns)?\(", "a seed taken from the clock"),
    (r"\buuid4\(", "uuid4 (OS entropy)"),
    (r"\bsecrets\.", "the secrets module (OS entropy)"),
)


@dataclass
class Diff:
    """Outcome of one of the three comparisons."""

    equal: bool
    detail: str = ""
    names: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- comparisons
def bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same shape, dtype and bits (NaNs at the same places compare equal)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    a, b = a.detach().cpu().contiguous(), b.detach().cpu().contiguous()
    if a.is_floating_point() or a.is_complex():
        # NaN bit patterns (sign, payload) may differ between two identical runs: NaN == NaN at the same places
        nan_a, nan_b = torch.isnan(a), torch.isnan(b)
        if not torch.equal(nan_a, nan_b):
            return False
        if bool(nan_a.any()):
            a, b = a.masked_fill(nan_a, 0), b.masked_fill(nan_b, 0)
    if a.dtype == torch.bool or a.element_size() == 0:
        return torch.equal(a, b)
    try:
        return torch.equal(a.view(torch.uint8), b.view(torch.uint8))
    except RuntimeError:  # pragma: no cover - exotic layouts
        return torch.equal(a, b)


def same_float(x: float, y: float) -> bool:
    """Equal Python floats, NaN equal to NaN (whatever its sign bit)."""
    return x == y or (math.isnan(x) and math.isnan(y))


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape or not a.is_floating_point():
        return float("nan")
    return float((a.detach().double().cpu() - b.detach().double().cpu()).abs().max()) if a.numel() else 0.0


def _is_materialized(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and not isinstance(t, nn.parameter.UninitializedTensorMixin)


def differing_tensors(sd1: dict[str, Any], sd2: dict[str, Any]) -> list[tuple[str, float]]:
    """Names (in state-dict order) of entries that differ, with their largest absolute difference."""
    out: list[tuple[str, float]] = []
    for name in list(sd1) + [n for n in sd2 if n not in sd1]:
        a, b = sd1.get(name), sd2.get(name)
        if not (_is_materialized(a) and _is_materialized(b)):
            if (a is None) != (b is None):
                out.append((name, float("nan")))
            continue
        if not bitwise_equal(a, b):
            out.append((name, max_abs_diff(a, b)))
    return out


def batches_equal(a: Any, b: Any) -> bool:
    """Nested batches (tuples, lists, dicts of tensors and plain values) are equal bit for bit."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and bitwise_equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(batches_equal(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(batches_equal(x, y) for x, y in zip(a, b))
    try:
        return bool(a == b)
    except Exception:
        return False


def tensor_path(name: str, model: nn.Module | None) -> str:
    """State-dict key -> Python expression: ``0.weight`` -> ``model[0].weight``."""
    owner, _, leaf = name.rpartition(".")
    return f"{code_path(owner, model)}.{leaf}" if leaf else code_path(name, model)


def describe(names: list[tuple[str, float]], model: nn.Module | None = None) -> str:
    shown = [
        f"{tensor_path(n, model)} (max |diff| {d:.3g})" if d == d else tensor_path(n, model)
        for n, d in names[:MAX_NAMED]
    ]
    more = f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else ""
    return ", ".join(shown) + more


# ---------------------------------------------------------------------------------------------- (1) model
def check_model_build(ctx: Context) -> Diff:
    """Build the model twice under the run's seed and compare the state dicts bit for bit."""
    built = ctx.build_model()
    sd1 = {k: v.detach().clone() for k, v in built.state_dict().items() if isinstance(v, torch.Tensor)}
    ctx.check_time()
    sd2 = {k: v.detach().clone() for k, v in ctx.build_model().state_dict().items() if isinstance(v, torch.Tensor)}
    diffs = differing_tensors(sd1, sd2)
    if not diffs:
        return Diff(True, f"{len(sd1)} state-dict tensors equal")
    return Diff(False, describe(diffs, built), [n for n, _ in diffs], {"n_tensors": len(sd1)})


# ---------------------------------------------------------------------------------------------- (2) data
def _generators_of(obj: Any) -> list[torch.Generator]:
    """torch.Generators a DataLoader-like object holds (its own, its sampler's, its batch sampler's)."""
    found: list[torch.Generator] = []
    for holder in (obj, getattr(obj, "sampler", None), getattr(getattr(obj, "batch_sampler", None), "sampler", None)):
        g = getattr(holder, "generator", None)
        if isinstance(g, torch.Generator) and all(g is not h for h in found):
            found.append(g)
    return found


def _take(ctx: Context, source: Any, n: int) -> list[Any]:
    it = iter(source)
    out: list[Any] = []
    try:
        for b in it:
            out.append(map_tensors(b, lambda t: t.detach().cpu().clone()))
            if len(out) >= n:
                break
    finally:
        close = getattr(it, "close", None)
        if callable(close):
            close()
    ctx.check_time()
    return out


def check_data(ctx: Context, n: int) -> Diff:
    """Call data() twice under the run's seed and compare the first ``n`` batches.

    When data() returns the same object twice (a module-level DataLoader), the states of the generators it holds
    are put back before the second pass: a seeded loader reshuffles every epoch by design, and a rerun of the
    user's script starts from the same state.
    """
    ctx.seed_all()
    src1 = ctx.setup.data()
    cached = ctx.batches(n)
    if src1 is not ctx.data_source and not _generators_of(src1) and len(cached) >= n:
        # a new object holding no generator of its own: the context's cached batches are the first pass (read the
        # same way, under the run's seed), so data() is called once here instead of twice (a data() that builds
        # its tensors in Python, e.g. examples/embedding_bag.py, costs tens of training steps per call)
        first = [map_tensors(b, lambda t: t.detach().cpu().clone()) for b in cached]
        second = _take(ctx, src1, n)
    else:
        states = [(g, g.get_state()) for g in _generators_of(src1)]
        first = _take(ctx, src1, n)
        ctx.seed_all()
        src2 = ctx.setup.data()
        if src2 is src1:
            for g, s in states:
                g.set_state(s)
        second = _take(ctx, src2, n)
    if len(first) != len(second):
        return Diff(False, f"data() yielded {len(first)} then {len(second)} batches", ["length"])
    for i, (a, b) in enumerate(zip(first, second)):
        if not batches_equal(a, b):
            parts = [j for j, (x, y) in enumerate(zip(iter_tensors(a), iter_tensors(b))) if not bitwise_equal(x, y)]
            what = f"tensor(s) {parts} of the batch" if parts else "its structure"
            return Diff(False, f"batch {i} differs ({what})", [f"batch {i}"], {"first_differing_batch": i})
    return Diff(True, f"first {len(first)} batches equal")


# ---------------------------------------------------------------------------------------------- (3) training
def training_model(ctx: Context) -> nn.Module:
    """A model from the user's factory holding the pristine weights: (3) is isolated from (1), yet state that is
    not in the state dict (a generator the module keeps, a counter) comes from a new build, as in a new run."""
    state = ctx.pristine_state()  # no deep copy of the model just to read its weights
    ctx.seed_all()
    model = ctx.build_model().to(ctx.device)
    try:
        model.load_state_dict(state)
    except Exception:  # the builds differ in structure: (1) reports it; train a pristine copy
        return ctx.fresh_model(train=True)
    return model.train()


def run_training(ctx: Context, batches: list[Any], steps: int) -> tuple[list[float], nn.Module]:
    """``steps`` steps of the user's optimizer from the pristine weights and the run's seed, as the shared training
    trace runs them (same seeding, same batches in turn): the losses and the trained model."""
    model = training_model(ctx)
    ctx.seed_all()
    opt = ctx.optimizer(model)
    losses = []
    for i in range(steps):
        ctx.check_time()
        losses.append(ctx.train_step(model, opt, batches[i % len(batches)]))
    return losses, model


def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def compare_with_trace(ctx: Context, trace: Trace, steps: int) -> Diff:
    """Run B (a new build holding the same initial weights, the same seed) against the shared trace (run A), run by the
    trace's own procedure: losses step by step and a fingerprint of every parameter and buffer after ``steps`` steps.
    When they differ, a third run from the trace's start gives the state dict that names the differing tensors."""
    run_b = training_trace.start(ctx, training_model(ctx))
    training_trace.extend(ctx, run_b, steps)
    losses_a, losses_b = trace.losses[:steps], run_b.losses[:steps]
    step = next((i for i, (x, y) in enumerate(zip(losses_a, losses_b)) if not same_float(x, y)), None)
    fp_b = run_b.fingerprints[steps - 1] if len(run_b.fingerprints) >= steps else None
    if step is None and len(losses_b) == len(losses_a) and trace.fingerprints[steps - 1] == fp_b:
        return Diff(True, f"{steps} steps: equal losses and parameters")
    replay = training_trace.start(ctx)
    training_trace.extend(ctx, replay, steps)
    assert replay.model is not None and run_b.model is not None
    diffs = differing_tensors(state_of(replay.model), state_of(run_b.model))
    parts = []
    if step is not None:
        parts.append(f"loss differs from step {step} ({losses_a[step]:.6g} vs {losses_b[step]:.6g})")
    if diffs:
        parts.append(f"parameters differ: {describe(diffs, ctx.pristine_model())}")
    if not parts:  # the replay agreed with run B where the trace did not: the difference is between runs anyway
        parts.append("parameters differ between runs (a third run agreed with the second)")
    return Diff(False, "; ".join(parts), [n for n, _ in diffs], {"first_differing_step": step})


@dataclass
class OpProbe:
    error: str | None  # the RuntimeError of use_deterministic_algorithms, if any
    op: str | None
    module: str | None
    equal_in_det_mode: bool | None


def _nondeterministic_op(message: str) -> str:
    m = re.match(r"\s*(\S+) does not have a deterministic implementation", message)
    if m:
        return m.group(1)
    if "CUBLAS_WORKSPACE_CONFIG" in message:
        return "cuBLAS matmul (needs CUBLAS_WORKSPACE_CONFIG=:4096:8)"
    return message.splitlines()[0][:120]


def deterministic_mode_run(ctx: Context, batches: list[Any], steps: int, twice: bool) -> OpProbe:
    """Run with ``torch.use_deterministic_algorithms(True)`` (warn_only=False): an op without a deterministic
    implementation raises a RuntimeError that names it. With ``twice``, also say whether two runs then agree."""
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    cudnn_before = torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True, warn_only=False)
    torch.backends.cudnn.benchmark = False
    stack: list[str] = []  # the modules whose forward is running, innermost last

    def enter(mod: nn.Module, inp: Any, name: str) -> None:
        stack.append(name)

    def leave(mod: nn.Module, inp: Any, out: Any, name: str) -> None:
        if stack:
            stack.pop()

    try:
        model = training_model(ctx)
        ctx.seed_all()
        opt = ctx.optimizer(model)
        with forward_hooks(model.named_modules(), leave, pre=enter):
            losses = [ctx.train_step(model, opt, batches[i % len(batches)]) for i in range(steps)]
        equal = None
        if twice:
            losses_b, model_b = run_training(ctx, batches, steps)
            equal = all(same_float(x, y) for x, y in zip(losses, losses_b)) and not differing_tensors(
                state_of(model), state_of(model_b)
            )
        return OpProbe(None, None, None, equal)
    except RuntimeError as e:
        msg = str(e)
        if "deterministic" not in msg.lower() and "CUBLAS_WORKSPACE_CONFIG" not in msg:
            raise
        where = code_path(stack[-1], model) if stack else "backward or optimizer step"
        return OpProbe(msg.splitlines()[0], _nondeterministic_op(msg), where, None)
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark = cudnn_before


# ---------------------------------------------------------------------------------------------- the setup file
def entropy_sources(path: str) -> list[str]:
    """Calls in the setup file that draw entropy nncheck's seed cannot reach (``file:line: code``).
    Only code is searched (calls in the syntax tree), not comments or docstrings."""
    p = Path(path)
    if not p.is_file():
        return []
    try:
        source = p.read_text(errors="replace")
        tree = ast.parse(source)
    except (SyntaxError, ValueError, OSError):
        return []
    lines = source.splitlines()
    hits: dict[int, str] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or node.lineno in hits:
            continue
        call = ast.unparse(node)
        what = next((w for pattern, w in ENTROPY_PATTERNS if re.search(pattern, call)), None)
        if what:
            hits[node.lineno] = f"{path}:{node.lineno}: `{lines[node.lineno - 1].split('#', 1)[0].strip()}` ({what})"
    return [hits[k] for k in sorted(hits)]


# ---------------------------------------------------------------------------------------------- measure
@dataclass
class Measurement:
    """The three comparisons, each between two runs under the run's seed."""

    device: str
    model: Diff | None  # (1) two model() builds; None for a module instance (deep-copied: equal by construction)
    data: Diff  # (2) two data() calls
    steps: int
    training: Diff  # (3) two training runs (equal, with its reason in detail, when not compared)
    nonfinite: tuple[int, float] | None = None  # (step, loss) of the first non-finite training loss: not compared
    op: OpProbe | None = None  # the run under deterministic algorithms (training compared only)
    suspects: list[str] = field(default_factory=list)  # entropy_sources of the setup file, when something differs

    @property
    def broken(self) -> list[str]:
        parts = {"model": self.model, "data": self.data, "training": self.training}
        return [name for name, d in parts.items() if d is not None and not d.equal]


def measure(ctx: Context, p: Params) -> Measurement:
    steps = max(1, p.steps)
    model = None if ctx.setup.model_is_instance else check_model_build(ctx)
    data = check_data(ctx, p.data_batches)
    # (3) the shared training trace (run A, from the pristine model and the cached batches: isolated from (1) and
    # (2)) against a second run
    trace = ctx.trace(steps)
    batches = trace.batches
    event = trace.event_within(steps)
    nonfinite, op = None, None
    if event is not None:
        # a NaN/inf is a numerics bug, not a reproducibility one: two NaN runs say nothing about seeding
        nonfinite = (event.step, event.loss)
        training = Diff(True, f"skipped: the training {event.stage} is non-finite at step {event.step}")
    else:
        training = compare_with_trace(ctx, trace, steps)
        # name the op without a deterministic implementation; when the runs agreed, one step finds the ops that
        # agreed by chance but are not guaranteed to. Not on the CPU: the ops the PyTorch docs list as raising under
        # torch.use_deterministic_algorithms(True) are CUDA kernels; measured on torch 2.13 (put_, index_put_,
        # index_add_, scatter_reduce_, histc, bincount, kthvalue, median, cumsum, interpolate and EmbeddingBag
        # backward, ctc_loss) only `Tensor.put_(accumulate=False)` raises on CPU tensors
        twice = not training.equal
        if twice or ctx.device.type != "cpu":
            op = deterministic_mode_run(ctx, batches, steps if twice else 1, twice=twice)
    m = Measurement(str(ctx.device), model, data, steps, training, nonfinite, op)
    if m.broken:
        m.suspects = entropy_sources(ctx.setup.path)
    return m


# ---------------------------------------------------------------------------------------------- judge
MODEL_HINT = (
    "model() draws from an RNG that torch.manual_seed / np.random.seed / random.seed do not reach. Initialise with "
    "torch's global RNG (`nn.init.normal_(layer.weight, std=0.02)`) or seed your own generator explicitly: "
    "`rng = np.random.default_rng(0)`, `random.Random(0)`, `torch.Generator().manual_seed(0)`."
)
DATA_HINT = (
    "data() shuffles or samples with entropy of its own. Give the DataLoader a seeded generator: "
    "`DataLoader(ds, shuffle=True, generator=torch.Generator().manual_seed(0))` (and `worker_init_fn` seeding "
    "numpy/random from `torch.initial_seed()` with num_workers > 0), or `np.random.default_rng(seed)` instead of "
    "`np.random.default_rng()`."
)
OP_HINT = (
    "`{op}` (in {module}) has no deterministic implementation. Call `torch.use_deterministic_algorithms(True)` at "
    "the start of training and replace that op (e.g. index_add_/scatter_add_ with a sorted segment sum, or run it "
    "on CPU)."
)
KERNELS_HINT = (
    "The runs agree with deterministic kernels: put `torch.use_deterministic_algorithms(True)` and "
    "`torch.backends.cudnn.benchmark = False` at the start of training."
)
TRAINING_RNG_HINT = (
    "The forward, loss or optimizer step draws random numbers from a generator the seed does not reach (a "
    "torch.Generator seeded from the clock, np.random.default_rng(), random.Random()). Draw noise from torch's "
    "global RNG (`torch.randn_like(x)`) or from a generator seeded once from the run's seed."
)
OP_NOTE = (
    "`{op}` (in {module}) has no deterministic implementation: these runs agreed, others may not. Call "
    "`torch.use_deterministic_algorithms(True)` if you need bitwise reproducibility."
)
INSTANCE = "module instance: deep-copied, deterministic by construction"


def _hint(m: Measurement) -> str:
    broke, op = m.broken, m.op
    lines = []
    if m.suspects:
        lines.append("Suspect lines: " + "; ".join(m.suspects[:5]) + ".")
    if "model" in broke:
        lines.append(MODEL_HINT)
    if "data" in broke:
        lines.append(DATA_HINT)
    if "training" in broke:
        if op is not None and op.op:
            lines.append(OP_HINT.format(op=op.op, module=op.module))
        elif op is not None and op.equal_in_det_mode:
            lines.append(KERNELS_HINT)
        else:
            lines.append(TRAINING_RNG_HINT)
    return " ".join(lines)


def _measured(m: Measurement) -> dict[str, Any]:
    measured: dict[str, Any] = {"device": m.device}
    if m.model is None:
        measured["model"] = INSTANCE
    else:
        measured.update({"model": "equal" if m.model.equal else "differs", "model_detail": m.model.detail})
        if not m.model.equal:
            measured["model_differing_tensors"] = m.model.names
    measured.update({"data": "equal" if m.data.equal else "differs", "data_detail": m.data.detail, "steps": m.steps})
    if m.nonfinite is not None:
        measured["training"] = "skipped (non-finite value)"
        measured["training_detail"] = m.training.detail
        measured["non_finite_loss_step"] = m.nonfinite[0]
    else:
        measured["training"] = "equal" if m.training.equal else "differs"
        measured["training_detail"] = m.training.detail
    op = m.op
    if not m.training.equal and op is not None:
        measured.update({k: v for k, v in m.training.extra.items() if v is not None})
        measured["nondeterministic_op"] = op.op
        measured["nondeterministic_op_module"] = op.module
        measured["equal_with_deterministic_algorithms"] = op.equal_in_det_mode
    elif op is not None and op.op:
        measured["nondeterministic_op"] = op.op
        measured["nondeterministic_op_module"] = op.module
    measured["broken"] = m.broken
    return measured


def judge(m: Measurement, p: Params, rerun: Callable[..., str]) -> Findings:
    """Bitwise equality: any difference fails. ``rerun``: the re-run line of other probes (a note)."""
    f = Findings(measured=_measured(m), expected={"model": "equal", "data": "equal", "training": "equal"})
    if m.nonfinite is not None:
        step, loss = m.nonfinite
        f.note(
            f"Training comparison skipped: a value is non-finite at step {step} (loss {loss}). Find where it comes "
            "from with "
            f"`{rerun('numerics')}`."
        )
    if m.broken:
        details = {"model": m.model.detail if m.model else None, "data": m.data.detail, "training": m.training.detail}
        what = "; ".join(f"{b}: {details[b]}" for b in m.broken)
        f.fail(f"not reproducible under a fixed seed ({', '.join(m.broken)}): {what}", _hint(m))
    elif m.op is not None and m.op.op:
        f.note(OP_NOTE.format(op=m.op.op, module=m.op.module))
    return f


def _summary(m: Measurement, p: Params, rerun: Callable[..., str]) -> str:
    if m.nonfinite is not None:
        return (
            f"model and first {p.data_batches} batches reproducible under one seed; training not compared "
            f"(non-finite value at step {m.nonfinite[0]}: run `{rerun('numerics')}`)"
        )
    return f"reproducible: model, first {p.data_batches} batches and {m.steps} training steps equal under one seed"


# ---------------------------------------------------------------------------------------------- probe
@dataclass(frozen=True)
class Params:
    """Parameters of determinism (`[tool.nncheck.probes.determinism]`)."""

    steps: int = param(
        5,
        fast=2,
        source=(
            "Training steps run twice from one seed: 5 cycle once through the 4 cached batches the comparison "
            "uses. The clock-seeded noise of checks/determinism_clock_noise.py makes the losses differ from the "
            "first step (seeds 0-2), so 2 steps keep the verdict under --budget fast."
        ),
    )
    data_batches: int = param(
        3,
        source=(
            "Batches compared between two data() calls: the unseeded shuffles of "
            "checks/determinism_unseeded_shuffle.py "
            "and checks/determinism_entropy_loader.py already differ in the first batch (seeds 0-2)."
        ),
    )


@probe("determinism", title="Determinism under a fixed seed", order=60, params=Params)
def determinism(ctx: Context, p: Params) -> Result:
    """Checks that one seed gives one model, one data order and one training run.

    What it does:
        Under the run's seed (nncheck seeds torch, CUDA, numpy and random): (1) calls `model()` twice and
        compares the state dicts bit for bit; (2) calls `data()` twice and compares the first {data_batches}
        batches; (3) compares the first {steps} steps of the shared training trace with a second run from a new
        build of the model holding the same initial weights, on the same cached batches: every loss and a
        fingerprint of every parameter and buffer (their float64 sum and sum of squares) after the last step.
        When (3) differs it re-runs with
        `torch.use_deterministic_algorithms(True)` (warn_only=False) to name the nondeterministic op, and says
        whether the two runs then agree; when they agree on a GPU, one step with it names an op that agreed by
        chance (on the CPU only `Tensor.put_` lacks a deterministic kernel). A model given as a module instance
        is deep-copied, which is
        deterministic by construction: (1) then passes trivially.

    Why is this bad?
        A run you cannot reproduce cannot be debugged or compared: a 0.3% gain may be seed noise, a crash may
        never come back. Unseeded generators are among the variance sources Pham et al. (ASE 2020, "Problems
        and Opportunities in Training Deep Learning Software Systems: An Analysis of Variance") measured to
        change final accuracy by several points between identical runs.

    Thresholds:
        Bitwise equality; no tolerance (two runs of one process on one device from one seed must agree
        exactly). Run lengths: {steps} (training steps), {data_batches} (batches of data()).

    How to fix:
        Draw every random number from torch's global RNG, or from generators seeded from the run's seed
        (`np.random.default_rng(seed)`, `random.Random(seed)`, `torch.Generator().manual_seed(seed)`). Give
        a shuffling DataLoader `generator=torch.Generator().manual_seed(seed)`. For GPU kernels without a
        deterministic implementation, call `torch.use_deterministic_algorithms(True)`.

    Example:
        `def model(): net = MLP(); rng = np.random.default_rng(); net.fc.weight.data = torch.tensor(rng.normal(...))`
        gives two different models: fail, "model() is not deterministic: fc.weight (max |diff| 2.1)".
    """
    m = measure(ctx, p)
    return judge(m, p, ctx.rerun).result(_summary(m, p, ctx.rerun))
