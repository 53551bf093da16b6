"""The shared context every probe works on.

One ``Context`` per setup. It validates the setup once (``preflight``), infers the loss, caches the first
batches on the target device, keeps a pristine copy of the model built under the run's seed, and measures
the time of one training step. Probes take what they need from it and never touch the user's objects:
``ctx.fresh_model()`` is a new deep copy each time, ``ctx.batches()`` are tensors nncheck owns.
Tensor trees live in ``nncheck.tensors``, losses in ``nncheck.losses``, the module graph in ``nncheck.modelgraph``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from nncheck import losses
from nncheck.modelgraph import execution_order, output_layer_of, without_dropout
from nncheck.setup import Batch, Setup, SetupError, user_location
from nncheck.state import seed_everything
from nncheck.tensors import first_tensor, iter_tensors, map_tensors

# Number of batches the context reads from `data` at most (probes use the first few).
MAX_CACHED_BATCHES = 8
# Steps timed to estimate one training step, after warm-up steps. The step time is the fastest of them: another
# process can only slow a step down, so the minimum is the estimate a busy machine disturbs least.
STEP_TIMING_WARMUP = 2
STEP_TIMING_STEPS = 5
# Cost accounting, in training steps of the user's batch (forward + backward + optimizer step = 1): a backward pass
# costs about twice a forward (Kaplan et al. 2020, "Scaling Laws for Neural Language Models", section 2.1: ~2N
# FLOPs per token forward, ~4N backward), so a forward counts 1/3 and a backward 2/3; a pass over part of a batch
# counts in proportion to its samples.
FORWARD_SHARE = 1 / 3
BACKWARD_SHARE = 2 / 3


class ProbeTimeout(Exception):
    """Raised inside a probe when its time budget is spent."""


class ProbeSkip(Exception):
    """Raise from a probe (or a helper) to say the probe does not apply; the message says why."""


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
        self.loss_inferred = False
        self.step_time_s: float | None = None
        self.steps_spent = 0.0  # training-step equivalents run so far (FORWARD_SHARE / BACKWARD_SHARE)
        self._reference_batch_size: int | None = None

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

    def fresh_model(self, train: bool = True, dropout: bool = True) -> nn.Module:
        """A new copy of the model at initialisation, on the device, in train (or eval) mode; with
        ``dropout=False`` its dropout modules are in eval mode (the rest stays in train mode)."""
        m = copy.deepcopy(self.pristine_model())
        m.train(train)
        return m if dropout else without_dropout(m)

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
        """The user's forward: ``(output, target)``. Every call is counted in ``steps_spent``: a forward, and, when
        a backward pass later reaches the output, a backward (in proportion to the batch's samples)."""
        out, y = self.setup.forward(model, batch)
        share = self._sample_share(batch)
        self.steps_spent += FORWARD_SHARE * share
        if torch.is_grad_enabled():
            t = next((t for t in iter_tensors(out) if t.requires_grad), None)
            if t is not None:
                try:
                    t.register_hook(lambda grad: self._count(BACKWARD_SHARE * share))
                except RuntimeError:  # a tensor that takes no hooks (inside a torch.func transform): not counted
                    pass
        return out, y

    def _count(self, steps: float) -> None:
        self.steps_spent += steps

    def _sample_share(self, batch: Batch) -> float:
        """The batch's samples relative to the first cached batch's (1 when either has no batch dimension)."""
        t = first_tensor(self.inputs_of(batch))
        if t is None or t.dim() == 0:
            return 1.0
        if self._reference_batch_size is None:
            ref = first_tensor(self.inputs_of(self.batch())) if self._batches else t
            self._reference_batch_size = int(ref.shape[0]) if ref is not None and ref.dim() else int(t.shape[0])
        return min(int(t.shape[0]) / max(self._reference_batch_size, 1), 1.0) if self._reference_batch_size else 1.0

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
            self.loss_fn, self.loss_name = losses.infer_loss(out, y, path)
            self.loss_inferred = True
        else:
            self.loss_fn = self.setup.loss
            self.loss_name = getattr(self.setup.loss, "__name__", type(self.setup.loss).__name__)
        self.loss_kind = losses.loss_kind_of(self.loss_fn)
        shapes = (
            f"output shape {tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}, "
            f"target shape {tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}"
        )
        problem = self.label_problem(out, y)
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

    def measure_step_time(self, warmup: int = STEP_TIMING_WARMUP, steps: int = STEP_TIMING_STEPS) -> float:
        """Wall time of one training step (forward + backward + optimizer step) on the first batch: the fastest of
        ``steps`` timed steps after ``warmup`` untimed ones (load only ever slows a step down)."""
        model = self.fresh_model()
        opt = self.optimizer(model)
        batch = self.batch()
        samples: list[float] = []
        try:
            for i in range(warmup + steps):
                self.sync()
                t0 = time.perf_counter()
                self.train_step(model, opt, batch)
                self.sync()
                if i >= warmup:
                    samples.append(time.perf_counter() - t0)
        except SetupError:
            raise
        except Exception as e:
            raise SetupError(
                f"{self.setup.path}: a training step (forward, loss.backward(), optimizer.step()) raised "
                f"{type(e).__name__}: {e}"
            ) from e
        return max(min(samples), 1e-6)

    # ------------------------------------------------------------------ classification helpers
    def num_classes(self, output: Any) -> int | None:
        """Number of classes for a cross-entropy setup (the output's class dimension), else None."""
        return losses.num_classes(self.loss_fn, self.loss_kind, output)

    def class_logits(self, output: torch.Tensor) -> torch.Tensor:
        """Cross-entropy outputs as ``(N, C)`` rows, whatever the layout (``(B,C)``, ``(B,T,C)``, ``(B,C,H,W)``)."""
        return losses.class_logits(self.loss_fn, output)

    def label_problem(self, output: Any, target: Any) -> str | None:
        """Why the integer class targets do not fit a cross-entropy output (``losses.label_problem``), else None.
        Meant to run *before* a loss call, whose IndexError (CPU) or device-side assert (CUDA, which also poisons
        the CUDA context) is far less clear."""
        classes = self.num_classes(output)
        if classes is None or not losses.is_class_target(target):
            return None
        return losses.label_problem(target, classes, losses.ignore_index(self.loss_fn))

    # ------------------------------------------------------------------ model graph
    def execution_order(self, model: nn.Module, batch: Batch) -> list[tuple[str, nn.Module, Any]]:
        """Leaf modules in the order one forward of ``batch`` runs them, with each one's output
        (``modelgraph.execution_order``; the last entry is the model output)."""
        return execution_order(model, lambda: self.forward(model, batch)[0])

    def output_layer(self, model: nn.Module, batch: Batch, exact: bool = False) -> tuple[str, nn.Module] | None:
        """The output layer (``modelgraph.output_layer_of``): the last parameterised leaf module whose output has
        the model output's shape (else, unless ``exact``, the last parameterised leaf run), or None."""
        return output_layer_of(self.execution_order(model, batch), exact)

    # ------------------------------------------------------------------ hints
    def rerun(self, *probe_ids: str) -> str:
        """The command that re-runs ``probe_ids`` on this setup with this run's seed, budget and device: a command
        line for a setup file, the Python call for a setup given to ``nncheck.check``."""
        path = self.setup.path or ""
        ids = ",".join(probe_ids)
        if path.endswith(".py"):
            line = f"nncheck run {path}" + (f" --only {ids}" if ids else "")
            if self.seed:
                line += f" --seed {self.seed}"
            if self.budget != "full":
                line += f" --budget {self.budget}"
            if self.device.type != "cpu":
                line += f" --device {self.device}"
            return line
        args = ["..."] + ([f"only={list(probe_ids)!r}"] if probe_ids else [])
        if self.seed:
            args.append(f"seed={self.seed}")
        if self.budget != "full":
            args.append(f"budget={self.budget!r}")
        if self.device.type != "cpu":
            args.append(f"device={str(self.device)!r}")
        return f"nncheck.check({', '.join(args)})"
