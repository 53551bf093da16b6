"""The shared context every probe works on.

One ``Context`` per setup. It validates the setup once (``preflight``), infers the loss, caches the first
batches on the target device, keeps a pristine copy of the model built under the run's seed, and measures
the time of one training step. Probes take what they need from it and never touch the user's objects:
``ctx.fresh_model()`` is a new deep copy each time, ``ctx.batches()`` are tensors nncheck owns.
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nncheck.setup import Batch, Setup, SetupError, user_location
from nncheck.state import seed_everything

# Number of batches the context reads from `data` at most (probes use the first few).
MAX_CACHED_BATCHES = 8
# Steps timed to estimate one training step (median), after warm-up steps.
STEP_TIMING_WARMUP = 2
STEP_TIMING_STEPS = 5


class ProbeTimeout(Exception):
    """Raised inside a probe when its time budget is spent."""


class ProbeSkip(Exception):
    """Raise from a probe (or a helper) to say the probe does not apply; the message says why."""


# ---------------------------------------------------------------------------------------------- batches
def map_tensors(obj: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    """Apply ``fn`` to every tensor inside nested tuples / lists / dicts; other leaves pass through."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*(map_tensors(o, fn) for o in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(map_tensors(o, fn) for o in obj)
    if isinstance(obj, dict):
        return {k: map_tensors(v, fn) for k, v in obj.items()}
    return obj


def iter_tensors(obj: Any) -> Iterable[torch.Tensor]:
    """Every tensor inside nested tuples / lists / dicts, in order."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for o in obj:
            yield from iter_tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from iter_tensors(o)


def first_tensor(obj: Any) -> torch.Tensor | None:
    return next(iter(iter_tensors(obj)), None)


def is_float(t: torch.Tensor) -> bool:
    return t.is_floating_point() or t.is_complex()


# ---------------------------------------------------------------------------------------------- losses
class SequenceCrossEntropy(nn.Module):
    """Cross-entropy for ``(B, ..., C)`` outputs (classes last) with ``(B, ...)`` integer targets."""

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1).long())


class SqueezedLoss(nn.Module):
    """Apply ``inner`` after reshaping a ``(B, 1)`` output to a ``(B,)`` target (or the reverse)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.inner(output.reshape(target.shape), target.to(output.dtype))


class FloatTargetLoss(nn.Module):
    """Apply ``inner`` with the target cast to the output's dtype (bool / int 0-1 targets for BCE)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.inner(output, target.to(output.dtype))


def loss_kind_of(loss: Any) -> str:
    """Classify a user loss: 'ce' (cross-entropy / NLL), 'bce' (BCE with logits), 'mse', or 'custom'."""
    inner = loss
    while isinstance(inner, (SqueezedLoss, FloatTargetLoss)):
        inner = inner.inner
    if isinstance(inner, (nn.CrossEntropyLoss, SequenceCrossEntropy)) or inner in (F.cross_entropy,):
        return "ce"
    if isinstance(inner, nn.BCEWithLogitsLoss) or inner is F.binary_cross_entropy_with_logits:
        return "bce"
    if isinstance(inner, nn.MSELoss) or inner is F.mse_loss:
        return "mse"
    return "custom"


def infer_loss(output: torch.Tensor, target: torch.Tensor, where: str) -> tuple[nn.Module, str]:
    """The default loss of DESIGN.md §2, from the first batch's output and target."""
    o, t = tuple(output.shape), tuple(target.shape)
    shapes = f"output shape {o} ({output.dtype}), target shape {t} ({target.dtype})"
    if not target.is_floating_point() and target.dtype != torch.bool:
        # integer class targets -> cross-entropy
        if output.dim() == 2 and target.dim() == 1 and o[0] == t[0]:
            return nn.CrossEntropyLoss(), "cross_entropy"
        if output.dim() >= 2 and o[:-1] == t:
            if output.dim() == 2:
                return nn.CrossEntropyLoss(), "cross_entropy"
            return SequenceCrossEntropy(), "cross_entropy"
        if output.dim() >= 3 and o[0] == t[0] and o[2:] == t[1:]:
            return nn.CrossEntropyLoss(), "cross_entropy"
        if o == t:
            # integer targets with the output's shape: 0/1 multi-label targets
            if target.numel() and bool(((target == 0) | (target == 1)).all()):
                return FloatTargetLoss(nn.BCEWithLogitsLoss()), "bce_with_logits"
        raise SetupError(
            f"{where}: cannot infer a loss for integer class targets: {shapes}. Cross-entropy needs an output "
            "(B, C) for targets (B,), or (B, T, C) for targets (B, T). Fix the output layer's width or define "
            "`loss = ...` in the setup file."
        )
    binary = target.numel() > 0 and bool(((target == 0) | (target == 1)).all())
    if o == t:
        if binary:
            return FloatTargetLoss(nn.BCEWithLogitsLoss()), "bce_with_logits"
        return nn.MSELoss(), "mse"
    if output.numel() == target.numel() and output.dim() == target.dim() + 1 and o[-1] == 1:
        if binary:
            return SqueezedLoss(nn.BCEWithLogitsLoss()), "bce_with_logits"
        return SqueezedLoss(nn.MSELoss()), "mse"
    raise SetupError(
        f"{where}: output and target shapes do not fit any default loss: {shapes}. For regression the output "
        "must have the target's shape; for classification use integer targets. Fix the model's output layer "
        "or define `loss = ...` in the setup file."
    )


# ---------------------------------------------------------------------------------------------- context
class Context:
    """Everything a probe may use. Created by the runner; ``preflight()`` must succeed before probes run."""

    def __init__(
        self,
        setup: Setup,
        *,
        seed: int = 0,
        device: str | torch.device = "cpu",
        budget: str = "full",
    ) -> None:
        self.setup = setup
        self.seed = seed
        self.device = torch.device(device)
        self.budget = budget
        self.params: dict[str, Any] = {}  # the running probe's parameters (defaults < budget < config)
        self.deadline: float | None = None
        self._pristine: nn.Module | None = None
        self._batches: list[Batch] | None = None
        self._data_exhausted_at: int | None = None
        # what data() returned for the cached batches (read under the run's seed): a probe that calls data() again
        # can tell a fresh object (a list, a generator, a new DataLoader) from the same one (a module-level loader)
        self.data_source: Any = None
        self.loss_fn: Callable[[Any, Any], torch.Tensor] = setup.loss  # type: ignore[assignment]
        self.loss_name = ""
        self.loss_kind = "custom"
        self.step_time_s: float | None = None

    # ------------------------------------------------------------------ time budget
    def check_time(self) -> None:
        """Call in loops: raises ProbeTimeout once the running probe's time budget is spent."""
        if self.deadline is not None and time.perf_counter() > self.deadline:
            raise ProbeTimeout("time budget exceeded")

    # ------------------------------------------------------------------ seeding
    def seed_all(self, offset: int = 0) -> None:
        seed_everything(self.seed + offset)

    # ------------------------------------------------------------------ model
    def build_model(self) -> nn.Module:
        """Call the user's model factory under the run's seed (a new, unmoved module)."""
        where = f"{self.setup.path}: model()"
        self.seed_all()
        try:
            model = self.setup.model()
        except SetupError:
            raise
        except Exception as e:
            raise SetupError(f"{where} raised {type(e).__name__}: {e}{user_location(e)}. Fix the model factory.") from e
        if not isinstance(model, nn.Module):
            raise SetupError(
                f"{where} returned {type(model).__name__}, not a torch.nn.Module. `model` must be a function "
                "that returns a fresh nn.Module (e.g. `def model(): return MyNet()`)."
            )
        return model

    def pristine_model(self) -> nn.Module:
        """The model at initialisation itself (built once under the seed, on the device), without a copy: read it
        (names, structure), never modify it."""
        if self._pristine is None:
            self._pristine = self.build_model().to(self.device)
        return self._pristine

    def fresh_model(self, train: bool = True) -> nn.Module:
        """A new copy of the model at initialisation, on the device."""
        m = copy.deepcopy(self.pristine_model())
        m.train(train)
        return m

    def pristine_state(self) -> dict[str, Any]:
        """The state dict of the model at initialisation, without a copy: read it (``load_state_dict`` copies
        the values), never modify it. Cheaper than ``fresh_model().state_dict()`` (a deep copy of the module)."""
        return self.pristine_model().state_dict()

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """The user's optimizer over ``model``'s parameters."""
        try:
            opt = self.setup.optimizer(model.parameters())
        except Exception as e:
            raise SetupError(
                f"{self.setup.path}: optimizer(params) raised {type(e).__name__}: {e}. `optimizer` must be a "
                "function taking an iterable of parameters, e.g. `lambda p: torch.optim.SGD(p, lr=0.1)`."
            ) from e
        if not isinstance(opt, torch.optim.Optimizer):
            raise SetupError(
                f"{self.setup.path}: optimizer(params) returned {type(opt).__name__}, not a torch.optim.Optimizer."
            )
        return opt

    # ------------------------------------------------------------------ data
    def to_device(self, obj: Any) -> Any:
        return map_tensors(obj, lambda t: t.to(self.device))

    def _fetch_batches(self, n: int) -> None:
        where = f"{self.setup.path}: data()"
        if self._batches is None:
            self._batches = []
        if self._data_exhausted_at is not None or len(self._batches) >= n:
            return
        self.seed_all()
        try:
            self.data_source = self.setup.data()
            it = iter(self.data_source)
        except SetupError:
            raise
        except Exception as e:
            raise SetupError(f"{where} raised {type(e).__name__}: {e}{user_location(e)}. Fix the data factory.") from e
        out: list[Batch] = []
        try:
            for b in it:
                out.append(self.to_device(b))
                if len(out) >= n:
                    break
            else:
                self._data_exhausted_at = len(out)
        except Exception as e:
            raise SetupError(
                f"{where} raised {type(e).__name__} while yielding batch {len(out)}: {e}{user_location(e)}. "
                "Fix the data pipeline."
            ) from e
        finally:
            close = getattr(it, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:  # pragma: no cover
                    pass
        self._batches = out

    def batches(self, n: int = 4) -> list[Batch]:
        """The first ``n`` batches of the data (fewer if the data is shorter), cached, on the device."""
        n = max(1, min(n, MAX_CACHED_BATCHES))
        self._fetch_batches(n)
        assert self._batches is not None
        return self._batches[:n]

    def batch(self) -> Batch:
        """The first batch."""
        return self.batches(1)[0]

    # ------------------------------------------------------------------ forward / loss
    def forward(self, model: nn.Module, batch: Batch) -> tuple[Any, Any]:
        """The user's forward: ``(output, target)``."""
        return self.setup.forward(model, batch)

    def loss(self, output: Any, target: Any) -> torch.Tensor:
        return self.loss_fn(output, target)

    def batch_loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        out, y = self.forward(model, batch)
        return self.loss(out, y)

    def inputs_of(self, batch: Batch) -> Any:
        """The part of a batch that holds the model inputs: ``x`` of ``(x, y)`` with the default forward,
        the whole batch with a custom forward (targets may be built from inputs; see ``map_inputs``)."""
        if not self.setup.custom_forward and isinstance(batch, (tuple, list)) and len(batch) == 2:
            return batch[0]
        return batch

    def map_inputs(self, batch: Batch, fn: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
        """A copy of ``batch`` with ``fn`` applied to every input tensor (see ``inputs_of``).

        With a custom forward every tensor of the batch is mapped, so take targets from the unmapped batch:
        ``_, y = ctx.forward(model, batch); out, _ = ctx.forward(model, ctx.map_inputs(batch, fn))``.
        """
        if not self.setup.custom_forward and isinstance(batch, (tuple, list)) and len(batch) == 2:
            return type(batch)((map_tensors(batch[0], fn), batch[1]))
        return map_tensors(batch, fn)

    def batch_size(self, batch: Batch | None = None) -> int:
        """Number of samples in a batch: the first dimension of its first input tensor."""
        b = self.batch() if batch is None else batch
        t = first_tensor(self.inputs_of(b))
        if t is None or t.dim() == 0:
            raise ProbeSkip("the batch holds no tensor with a batch dimension")
        return int(t.shape[0])

    def slice_batch(self, batch: Batch, n: int, start: int = 0) -> Batch:
        """The samples ``start:start+n`` of a batch (every tensor whose first dim is the batch size)."""
        bs = self.batch_size(batch)
        return map_tensors(batch, lambda t: t[start : start + n] if t.dim() and t.shape[0] == bs else t)

    def output_tensor(self, output: Any) -> torch.Tensor:
        """The output as one tensor (probes that need it skip when the model returns something else)."""
        if isinstance(output, torch.Tensor):
            return output
        raise ProbeSkip(f"the model output is a {type(output).__name__}, not a tensor")

    # ------------------------------------------------------------------ training
    def train_step(self, model: nn.Module, opt: torch.optim.Optimizer, batch: Batch) -> float:
        """One forward + backward + optimizer step; returns the loss before the step."""
        opt.zero_grad(set_to_none=True)
        loss = self.batch_loss(model, batch)
        loss.backward()
        opt.step()
        return float(loss.detach())

    def train(
        self,
        model: nn.Module,
        opt: torch.optim.Optimizer,
        batches: list[Batch],
        steps: int,
        stop: Callable[[int, float], bool] | None = None,
    ) -> list[float]:
        """``steps`` training steps cycling over ``batches``; ``stop(step, loss)`` may end it early.
        Stops at a non-finite loss. Checks the time budget every step."""
        losses: list[float] = []
        for i in range(steps):
            self.check_time()
            loss = self.train_step(model, opt, batches[i % len(batches)])
            losses.append(loss)
            if not torch.isfinite(torch.tensor(loss)) or (stop is not None and stop(i, loss)):
                break
        return losses

    @staticmethod
    def without_dropout(model: nn.Module) -> nn.Module:
        """Put every dropout module of ``model`` in eval mode (the rest stays as it is)."""
        for m in model.modules():
            if isinstance(m, nn.modules.dropout._DropoutNd):
                m.eval()
        return model

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # ------------------------------------------------------------------ preflight
    def preflight(self, time_steps: bool = True) -> None:
        """Validate the setup (raises SetupError with a clear message), infer the loss, time one step."""
        path = self.setup.path
        model = self.fresh_model()
        batches = self.batches(MAX_CACHED_BATCHES)  # read once: later probes hit the cache
        if not batches:
            raise SetupError(f"{path}: data() yielded no batch. It must yield at least one (inputs, targets).")
        batch = batches[0]
        if not self.setup.custom_forward:
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                desc = type(batch).__name__
                if isinstance(batch, (tuple, list)):
                    desc += f" of length {len(batch)}"
                elif isinstance(batch, dict):
                    desc += f" with keys {sorted(batch)}"
                raise SetupError(
                    f"{path}: data() yields {desc}, not an (inputs, targets) pair. Yield `(x, y)` batches, or "
                    "define `def forward(model, batch): ... return output, target` in the setup file."
                )
            if first_tensor(batch[0]) is None:
                raise SetupError(
                    f"{path}: the first batch's inputs hold no tensor ({type(batch[0]).__name__}). "
                    "Yield tensors (a DataLoader does this), or define `forward(model, batch)`."
                )
        try:
            with torch.no_grad():
                out, y = self.forward(model, batch)
        except SetupError:
            raise
        except Exception as e:
            fn = "forward(model, batch)" if self.setup.custom_forward else "model(x) on the first batch"
            raise SetupError(f"{path}: {fn} raised {type(e).__name__}: {e}{user_location(e)}") from e
        if self.setup.loss is None:
            if not isinstance(out, torch.Tensor) or not isinstance(y, torch.Tensor):
                raise SetupError(
                    f"{path}: cannot infer a loss: output is {type(out).__name__} and target is "
                    f"{type(y).__name__}; the default losses need tensors. Define `loss = ...` in the setup file."
                )
            self.loss_fn, self.loss_name = infer_loss(out, y, path)
            self.setup.loss_inferred = True
        else:
            self.loss_fn = self.setup.loss
            self.loss_name = getattr(self.setup.loss, "__name__", type(self.setup.loss).__name__)
        self.setup.loss_name = self.loss_name
        self.loss_kind = loss_kind_of(self.loss_fn)
        shapes = (
            f"output shape {tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}, "
            f"target shape {tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}"
        )
        from nncheck.probes.data import first_batch_label_error  # the data probe owns the label rules

        problem = first_batch_label_error(self, out, y)
        if problem:
            raise SetupError(f"{path}: the first batch's {problem}. See `nncheck explain data`.")
        try:
            with torch.no_grad():
                value = self.loss(out, y)
        except Exception as e:
            raise SetupError(
                f"{path}: the loss ({self.loss_name}) failed on the first batch ({shapes}): {type(e).__name__}: {e}"
            ) from e
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            if isinstance(value, torch.Tensor):
                fix = f"it returned a tensor of shape {tuple(value.shape)} ({shapes}). Reduce it, e.g. `.mean()`."
            else:
                fix = (
                    f"it returned a {type(value).__name__}. Return the tensor itself (no `.item()`, `float()` or "
                    "numpy): gradients flow only through tensors."
                )
            raise SetupError(f"{path}: the loss ({self.loss_name}) must return a scalar tensor; {fix}")
        if time_steps:
            self.step_time_s = self.measure_step_time()

    def measure_step_time(self) -> float:
        """Median wall time of one training step (forward + backward + optimizer step) on the first batch."""
        model = self.fresh_model()
        opt = self.optimizer(model)
        batch = self.batch()
        samples: list[float] = []
        try:
            for i in range(STEP_TIMING_WARMUP + STEP_TIMING_STEPS):
                self.sync()
                t0 = time.perf_counter()
                self.train_step(model, opt, batch)
                self.sync()
                if i >= STEP_TIMING_WARMUP:
                    samples.append(time.perf_counter() - t0)
        except SetupError:
            raise
        except Exception as e:
            raise SetupError(
                f"{self.setup.path}: a training step (forward, loss.backward(), optimizer.step()) raised "
                f"{type(e).__name__}: {e}"
            ) from e
        return max(statistics.median(samples), 1e-6)

    # ------------------------------------------------------------------ classification helpers
    def num_classes(self, output: torch.Tensor) -> int | None:
        """Number of classes for a cross-entropy setup (the output's class dimension), else None."""
        if self.loss_kind != "ce":
            return None
        if isinstance(self.loss_fn, SequenceCrossEntropy) or output.dim() == 2:
            return int(output.shape[-1])
        return int(output.shape[1])

    def class_logits(self, output: torch.Tensor) -> torch.Tensor:
        """Cross-entropy outputs as ``(N, C)`` rows, whatever the layout (``(B,C)``, ``(B,T,C)``, ``(B,C,H,W)``)."""
        if output.dim() == 2 or isinstance(self.loss_fn, SequenceCrossEntropy):
            return output.reshape(-1, output.shape[-1])
        return output.movedim(1, -1).reshape(-1, output.shape[1])


# ---------------------------------------------------------------------------------------------- model structure
def leaf_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Named modules without children (the model itself if it has none)."""
    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]
    return leaves or [("", model)]


@contextlib.contextmanager
def forward_hooks(
    named_modules: Iterable[tuple[str, nn.Module]], hook: Callable[..., Any], with_kwargs: bool = False
) -> Iterator[None]:
    """Call ``hook(module, args, [kwargs,] output, name)`` after the forward of every module of ``named_modules``
    while the block runs; the hooks are removed on exit, even on error."""
    handles = [
        m.register_forward_hook(lambda *a, name=name: hook(*a, name), with_kwargs=with_kwargs)
        for name, m in named_modules
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def execution_order(ctx: Context, model: nn.Module, batch: Batch) -> list[tuple[str, nn.Module, Any]]:
    """Leaf modules in the order one forward pass (no grad) runs them, with each one's output."""
    order: list[tuple[str, nn.Module, Any]] = []
    record = lambda mod, inp, out, name: order.append((name, mod, out))  # noqa: E731
    with forward_hooks(leaf_modules(model), record), torch.no_grad():
        out, _ = ctx.forward(model, batch)
    order.append(("", model, out))  # sentinel: the model output itself
    return order


def output_layer(ctx: Context, model: nn.Module, batch: Batch, exact: bool = False) -> tuple[str, nn.Module] | None:
    """The output layer: the last parameterised leaf module run in forward whose output has the model output's
    shape (else, unless ``exact``, the last parameterised leaf run). ``None`` when there is no such module (with
    ``exact``: the output is computed in forward after the last layer, e.g. a scaled cosine similarity)."""
    runs = execution_order(ctx, model, batch)
    final = runs[-1][2]
    runs = runs[:-1]
    with_params = [(n, m, o) for n, m, o in runs if any(True for _ in m.parameters(recurse=False))]
    if not with_params:
        return None
    if isinstance(final, torch.Tensor):
        for n, m, o in reversed(with_params):
            if isinstance(o, torch.Tensor) and o.shape == final.shape:
                return n, m
    if exact:
        return None
    n, m, _ = with_params[-1]
    return n, m


def code_path(qualified_name: str, model: nn.Module | None = None, root: str = "model") -> str:
    """Python expression for a submodule, for hints: ``features.3.conv`` -> ``model.features[3].conv``.

    With ``model`` the path is walked: ``[i]`` for Sequential / ModuleList items, ``["key"]`` for ModuleDict keys,
    ``.name`` for identifiers, ``getattr(x, "name")`` otherwise. Without it, digits become ``[i]``.
    """
    out = root
    current = model
    for part in qualified_name.split(".") if qualified_name else []:
        if isinstance(current, nn.ModuleDict):
            out += f"[{part!r}]"
        elif part.isdigit() and (current is None or isinstance(current, (nn.Sequential, nn.ModuleList))):
            out += f"[{part}]"
        elif part.isidentifier():
            out += f".{part}"
        else:
            out = f"getattr({out}, {part!r})"
        current = current._modules.get(part) if current is not None else None
    return out
