"""The shared context every probe works on.

One ``Context`` per setup. It validates the setup once (``preflight``), infers the loss, caches the first
batches on the target device, keeps a pristine copy of the model built under the run's seed, and measures
the time of one training step. Probes take what they need from it and never touch the user's objects:
``ctx.fresh_model()`` is a new deep copy each time, ``ctx.batches()`` are tensors nncheck owns.
Tensor trees live in ``nncheck.tensors``, losses in ``nncheck.losses``, the module graph in ``nncheck.modelgraph``.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from nncheck import lightning, losses, schedule
from nncheck import trace as training_trace
from nncheck.modelgraph import execution_order, output_layer_of, without_dropout
from nncheck.setup import LABELS, Batch, Setup, SetupError, is_labelled_dict, user_location
from nncheck.state import preserved_rngs, seed_everything
from nncheck.tensors import batch_change, first_tensor, get_path, iter_tensors, map_tensors, path_name

# Number of batches the context reads from `data` at most (probes use the first few).
MAX_CACHED_BATCHES = 8
# The model at init on the cached batches (``init_forward``): computed once and read by every probe that needs it
# (initial-loss, the loss heads, last-layer-bias, data, the shared trace's step-0 losses) instead of a forward each.
# Each batch's forward runs with the random generators seeded at INIT_SEED_OFFSET + the batch's index (then put
# back): a forward that samples (a VAE) draws the same noise wherever the output at init is read, and a probe that
# runs a changed copy (last-layer-bias with the prior in its bias) seeds each batch the same way to pair its losses
# with these. Outputs and targets are kept while they hold at most INIT_CACHE_BYTES in all (a design choice: the
# logits of a large vocabulary over a few batches are not kept, and are computed again where they are read).
INIT_SEED_OFFSET = 20
INIT_CACHE_BYTES = 64 * 2**20
# Steps timed by ``measure_step_time`` (no warm-up: the first step of a fresh copy errs on the slow side). The runner
# does not call it before the probes: its wall-clock backstops start from the preflight's first forward / FORWARD_SHARE
# (also a first call: slow side, a longer backstop), and every full-batch training step the probes run is timed
# (``timed_step``: the shared trace, the LR runs, determinism's second run): the step time is the fastest of them.
# Another process can only slow a step down, so the minimum of many steps interleaved with the battery's other work
# is the estimate a busy machine disturbs least, and it costs no extra step.
STEP_TIMING_WARMUP = 0
STEP_TIMING_STEPS = 1
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
        self.step_times: list[float] = []  # wall time of every full-batch training step timed (``timed_step``)
        self.first_forward_s: float | None = None  # the preflight's forward of the first batch (no gradient)
        # the first batch's labels do not fit the output (out of range, 1-based): the data probe's fail, found by the
        # preflight, which then stops short of the loss (the runner skips the other probes with a pointer)
        self.data_problem: str | None = None
        self.steps_spent = 0.0  # training-step equivalents run so far (FORWARD_SHARE / BACKWARD_SHARE)
        self._trace: training_trace.Trace | None = None
        self._init_outputs: dict[int, tuple[Any, Any]] = {}
        self._init_bytes = 0
        self._reference_batch_size: int | None = None
        self._lr_curve: schedule.LRCurve | None = None
        self._scalers: list[tuple[Any, dict[str, Any]]] | None = None
        self._no_schedule = False  # configure_optimizers() returned no scheduler

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
        if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
            raise SetupError(
                f"{where} returned a model on the `meta` device: its weights have no data (built under "
                "`with torch.device('meta'):`, `init_empty_weights()` or `device='meta'`), so it can be neither run "
                "nor copied. Build it on a real device (`def model(): return MyNet()`), or materialise it before "
                "returning it: `net.to_empty(device='cpu')`, then initialise or load its weights."
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
        try:
            m = copy.deepcopy(self.pristine_model())
        except Exception:  # it holds a lock, a file, a stream: build another one from the factory, same weights
            m = self._rebuilt_model()
        m.train(train)
        return m if dropout else without_dropout(m)

    def _rebuilt_model(self) -> nn.Module:
        """A new model from the user's factory with the pristine model's weights, for a model that cannot be
        deep-copied; the global RNGs are left as they were (the factory is called under the run's seed)."""
        from nncheck.state import preserved_global_state

        if self.setup.model_is_instance:  # pragma: no cover - an uncopyable instance is refused by setup_from_kwargs
            raise SetupError(f"{self.setup.path}: `model` cannot be deep-copied; give a factory `def model(): ...`.")
        with preserved_global_state():
            m = self.build_model().to(self.device)
        m.load_state_dict(self.pristine_model().state_dict())
        return m

    def pristine_state(self) -> dict[str, Any]:
        """The state dict of the model at initialisation, without a copy: read it (``load_state_dict`` copies
        the values), never modify it. Cheaper than ``fresh_model().state_dict()`` (a deep copy of the module)."""
        return self.pristine_model().state_dict()

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """The user's optimizer over ``model``'s parameters (a LightningModule's ``configure_optimizers()``)."""
        if self.setup.configure is not None:
            return self._at_peak(self._configured(model)[0])
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
        return self._at_peak(opt)

    def _configured(self, model: nn.Module) -> tuple[torch.optim.Optimizer, Any]:
        assert self.setup.configure is not None
        try:
            return self.setup.configure(model)
        except lightning.LightningError as e:
            raise SetupError(str(e)) from e

    def _at_peak(self, opt: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """``opt`` at the schedule's peak LR; a new optimizer is a new run: the user's GradScalers start afresh."""
        if self.setup.train_step is not None:
            self.load_scaler_states()  # a new optimizer starts a new run: the user's GradScalers start afresh
        peaks = self.peak_lrs()
        if peaks is not None and len(peaks) == len(opt.param_groups):  # train at the schedule's peak LR
            for g, lr in zip(opt.param_groups, peaks):
                if isinstance(g["lr"], torch.Tensor):
                    g["lr"].fill_(lr)
                else:
                    g["lr"] = lr
        return opt

    # ------------------------------------------------------------------ LR schedule
    def lr_curve(self) -> schedule.LRCurve | None:
        """The setup's LR schedule over its horizon (``nncheck.schedule``: stepped on an optimizer of its own, no
        training), cached; None without a ``scheduler``."""
        if self.setup.scheduler is None and self.setup.configure is None:
            return None
        if self._lr_curve is None and not self._no_schedule:
            if self.setup.configure is not None:  # a LightningModule: configure_optimizers() gives both
                opt, sched = self._configured(self.pristine_model())
                self._no_schedule = sched is None
                if sched is not None:
                    self._lr_curve = schedule.lr_curve(lambda: opt, lambda o: sched, self.setup.total_steps)
            else:
                self._lr_curve = schedule.lr_curve(
                    self._schedule_optimizer, self._user_scheduler, self.setup.total_steps
                )
        return self._lr_curve

    def peak_lrs(self) -> list[float] | None:
        """Each param group's peak LR over the schedule (what ``optimizer()`` sets: probes train at the peak, not at
        the first warm-up step), or None without a scheduler or for one nncheck cannot follow (ReduceLROnPlateau)."""
        curve = self.lr_curve()
        if curve is None or curve.metric_based or not curve.lrs:
            return None
        return curve.peaks

    def _schedule_optimizer(self) -> torch.optim.Optimizer:
        """The user's optimizer over the pristine model's parameters, never stepped (the schedule's own)."""
        return self.setup.optimizer(p for p in self.pristine_model().parameters())

    def _user_scheduler(self, opt: torch.optim.Optimizer) -> Any:
        where = f"{self.setup.path}: scheduler(optimizer)"
        assert self.setup.scheduler is not None
        try:
            s = self.setup.scheduler(opt)
        except Exception as e:
            raise SetupError(
                f"{where} raised {type(e).__name__}: {e}{user_location(e)}. `scheduler` must be a function taking the "
                "optimizer, e.g. `def scheduler(opt): return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, "
                "total_steps=10_000)`."
            ) from e
        if not hasattr(s, "step") or getattr(s, "optimizer", opt) is not opt:
            what = "a scheduler of another optimizer" if hasattr(s, "step") else type(s).__name__
            raise SetupError(
                f"{where} returned {what}: it must return a torch.optim.lr_scheduler scheduler built on the optimizer "
                "it is given (nncheck builds a fresh optimizer for each run)."
            )
        return s

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

    def init_forward(self, i: int) -> tuple[Any, Any]:
        """``(output, target)`` of cached batch ``i`` through the model at init, in train mode with dropout modules
        off, without gradient: computed once and shared (``INIT_SEED_OFFSET``, ``INIT_CACHE_BYTES``). Each call
        returns copies of the tensors (a loss may work in place on its input, e.g. ``out.sigmoid_()``)."""
        hit = self._init_outputs.get(i)
        if hit is None:
            batches = self.batches(i + 1)
            if i >= len(batches):
                raise IndexError(f"the data holds {len(batches)} batches, not {i + 1}")
            model = self.fresh_model(train=True, dropout=False)
            with preserved_rngs(), torch.no_grad():
                self.seed_all(INIT_SEED_OFFSET + i)
                hit = self.forward(model, batches[i])
            size = sum(t.numel() * t.element_size() for t in iter_tensors(hit))
            if self._init_bytes + size > INIT_CACHE_BYTES:
                return hit
            self._init_outputs[i] = hit
            self._init_bytes += size
        return map_tensors(hit[0], torch.clone), map_tensors(hit[1], torch.clone)

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
        if not self.setup.custom_forward and is_labelled_dict(batch):
            return {k: v for k, v in batch.items() if k != LABELS}
        return batch

    def map_inputs(self, batch: Batch, fn: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
        """A copy of ``batch`` with ``fn`` applied to every input tensor (see ``inputs_of``).

        With a custom forward every tensor of the batch is mapped, so take targets from the unmapped batch:
        ``_, y = ctx.forward(model, batch); out, _ = ctx.forward(model, ctx.map_inputs(batch, fn))``.
        """
        if not self.setup.custom_forward and isinstance(batch, (tuple, list)) and len(batch) == 2:
            return type(batch)((map_tensors(batch[0], fn), batch[1]))
        if not self.setup.custom_forward and is_labelled_dict(batch):
            return {k: v if k == LABELS else map_tensors(v, fn) for k, v in batch.items()}
        return map_tensors(batch, fn)

    def batch_size(self, batch: Batch | None = None) -> int:
        """Number of samples in a batch: the first dimension of its first input tensor."""
        b = self.batch() if batch is None else batch
        t = first_tensor(self.inputs_of(b))
        if t is None or t.dim() == 0:
            raise ProbeSkip("the batch holds no tensor with a batch dimension")
        return int(t.shape[0])

    def slice_batch(self, batch: Batch, n: int, start: int = 0) -> Batch:
        """The samples ``start:start+n`` of a batch (every tensor whose first dim is the batch size). Raises ProbeSkip
        when the batch cannot be cut (``preflight``: the forward fails on a cut batch, e.g. a whole graph)."""
        if getattr(self, "uncuttable", None):
            raise ProbeSkip(f"the batch cannot be cut into samples: {self.uncuttable}")
        bs = self.batch_size(batch)
        return map_tensors(batch, lambda t: t[start : start + n] if t.dim() and t.shape[0] == bs else t)

    def output_tensor(self, output: Any) -> torch.Tensor:
        """The output as one tensor: the output itself, or the one tensor the loss reads (the logits of a Hugging Face
        ``ModelOutput``); probes that need it skip for other outputs (multi-output models: see ``heads``)."""
        if isinstance(output, torch.Tensor):
            return output
        if isinstance(self.loss_fn, losses.HeadLoss):
            return get_path(output, self.loss_fn.path)
        raise ProbeSkip(f"the model output is a {type(output).__name__}, not a tensor")

    # ------------------------------------------------------------------ multi-output models
    def heads(self) -> list[losses.Head]:
        """The output tensors the loss judges, each with its own loss term (``losses.Head``), found on the first batch:
        the output itself for a tensor output; the logits of a Hugging Face output; for a tuple / dict / dataclass
        output, the heads named in the setup's ``nncheck = {"heads": ...}``, or else the terms of the loss that are
        torch loss functions of one output tensor and one target tensor (``losses.identify_terms``). Empty when none
        can be identified (a model's own loss that no standard loss reproduces, a loss written out by hand)."""
        found: list[losses.Head] | None = getattr(self, "_heads", None)
        if found is None:
            found = self._find_heads()
            self._heads = found
        return found

    def _find_heads(self) -> list[losses.Head]:
        out, y = self.init_forward(0)
        with torch.no_grad():
            if isinstance(out, torch.Tensor):
                whole = losses.Head("output", (), None, self.loss_fn, self.loss_kind, value=float(self.loss(out, y)))
                if self.loss_kind != "custom":
                    return [whole]
        if isinstance(out, torch.Tensor):
            # a loss function written by the user: when it is one torch loss of the output (a reshape for a
            # sequence, an ignore_index), judge that loss
            try:
                terms = losses.identify_terms(self.loss_fn, out, y)
            except Exception:
                terms = []
            one = len(terms) == 1 and terms[0].weight == 1.0 and terms[0].value is not None
            if one and abs(terms[0].value - (whole.value or 0.0)) <= 1e-6 * max(1.0, abs(whole.value or 0.0)):
                return terms
            return [whole]
        with torch.no_grad():
            if isinstance(self.loss_fn, losses.HeadLoss):
                path, inner = self.loss_fn.path, self.loss_fn.inner
                value = float(self.loss(out, y))
                return [losses.Head(path_name(out, path), path, None, inner, self.loss_kind, value=value)]
            if self.setup.heads:
                heads = []
                for key, (target_key, loss) in self.setup.heads.items():
                    try:
                        head_out, head_y = get_path(out, (key,)), get_path(y, (target_key,))
                    except (KeyError, IndexError, AttributeError, TypeError) as e:
                        raise SetupError(
                            f"{self.setup.path}: `heads` names output {key!r} / target {target_key!r}, which the first "
                            f"batch does not have ({type(e).__name__}: {e}). Use the keys of the model output and of "
                            "the targets."
                        ) from e
                    kind = losses.loss_kind_of(loss)
                    value = float(loss(head_out, head_y))
                    heads.append(losses.Head(path_name(out, (key,)), (key,), (target_key,), loss, kind, value=value))
                return heads
        try:
            return losses.identify_terms(self.loss_fn, out, y)
        except Exception:  # a loss nncheck cannot record (scripted code): no head identified
            return []

    def head_layer(
        self, model: nn.Module, batch: Batch, head: losses.Head, exact: bool = False
    ) -> tuple[str, nn.Module] | None:
        """The output layer of one head (``modelgraph.output_layer_of`` matched on the head's tensor)."""
        runs = self.execution_order(model, batch)
        return output_layer_of(runs, exact, final=head.tensor(runs[-1][2]))

    def target_of(self, batch: Batch) -> Any:
        """The targets of a batch as the default forward reads them (``y`` of ``(x, y)``, ``batch["labels"]``); None
        with a custom forward (run it to get them) or another batch layout."""
        if self.setup.custom_forward:
            return None
        if isinstance(batch, (tuple, list)) and len(batch) == 2:
            return batch[1]
        if is_labelled_dict(batch):
            return batch[LABELS]
        return None

    # ------------------------------------------------------------------ training
    @contextlib.contextmanager
    def timed_step(self, batch: Batch) -> Iterator[None]:
        """Time the training step run inside (on ``batch``) into ``step_times`` when it is a step on a whole batch
        (a step on a few samples says nothing about one step) and it does not raise."""
        if self._sample_share(batch) < 1.0:
            yield
            return
        self.sync()
        t0 = time.perf_counter()
        yield
        self.sync()
        self.step_times.append(time.perf_counter() - t0)
        self.step_time_s = max(min(self.step_times), 1e-6)

    def train_step(self, model: nn.Module, opt: torch.optim.Optimizer, batch: Batch) -> float:
        """One forward + backward + optimizer step (the setup's ``train_step`` when it has one), timed
        (``timed_step``); returns the loss before the step."""
        with self.timed_step(batch):
            if self.setup.train_step is not None:
                return self.user_train_step(model, opt, batch)
            opt.zero_grad(set_to_none=True)
            loss = self.batch_loss(model, batch)
            loss.backward()
            opt.step()
            return float(loss.detach())

    def scalers(self) -> list[Any]:
        """The enabled GradScalers the setup's ``train_step`` can reach (its module's globals, its closure, its
        default arguments): user objects whose state a step changes. ``optimizer()`` puts them back in the state
        they had before the first probe ran (a new optimizer is a new run), the trace keeps its own."""
        if self._scalers is None:
            from torch.amp.grad_scaler import GradScaler

            fn = self.setup.train_step
            objs: list[Any] = [*getattr(fn, "__globals__", {}).values(), *(getattr(fn, "__defaults__", None) or ())]
            for cell in getattr(fn, "__closure__", None) or ():
                try:
                    objs.append(cell.cell_contents)
                except ValueError:  # an empty cell
                    pass
            found: list[Any] = []
            for o in objs:
                if isinstance(o, GradScaler) and o.is_enabled() and all(o is not f for f in found):
                    found.append(o)
            self._scalers = [(s, s.state_dict()) for s in found]
        return [s for s, _ in self._scalers]

    def scaler_states(self) -> list[dict[str, Any]]:
        return [s.state_dict() for s in self.scalers()]

    def load_scaler_states(self, states: list[dict[str, Any]] | None = None) -> None:
        """Put the GradScalers in ``states`` (default: the state they had before the first probe)."""
        self.scalers()
        assert self._scalers is not None
        for (s, initial), st in zip(self._scalers, states if states is not None else [None] * len(self._scalers)):
            s.load_state_dict(initial if st is None else st)

    def user_train_step(self, model: nn.Module, opt: torch.optim.Optimizer, batch: Batch) -> float:
        """The setup's ``train_step(model, batch, optimizer)``, counted as one training step; its loss as a float."""
        assert self.setup.train_step is not None
        loss = self.setup.train_step(model, batch, opt)
        self.steps_spent += self._sample_share(batch)
        if isinstance(loss, torch.Tensor) and loss.numel() == 1:
            return float(loss.detach())
        if isinstance(loss, (int, float)) and not isinstance(loss, bool):
            return float(loss)
        raise SetupError(
            f"{self.setup.path}: train_step(model, batch, optimizer) returned {type(loss).__name__}; it must return "
            "the step's loss (a scalar tensor or a float): `return loss`."
        )

    def trace(self, steps: int) -> training_trace.Trace:
        """The shared training trace (``nncheck.trace``), run on to at least ``steps`` steps (fewer when it stopped
        at a non-finite value). Read it; never train its model."""
        if self._trace is None:
            self._trace = training_trace.start(self)
        training_trace.extend(self, self._trace, steps)
        return self._trace

    def trace_checkpoint(self, steps: int) -> training_trace.Checkpoint | None:
        """The trace's losses (each training batch and the held-out batch, dropout off) after ``steps`` steps, a
        multiple of ``nncheck.trace.CHECKPOINT_EVERY``; None when the trace went non-finite before."""
        return training_trace.checkpoint_at(self, self.trace(0), steps)

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
        if not self.setup.custom_forward and not is_labelled_dict(batch):
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                desc = type(batch).__name__
                if isinstance(batch, (tuple, list)):
                    desc += f" of length {len(batch)}"
                elif isinstance(batch, dict):
                    desc += f" with keys {sorted(batch)}"
                raise SetupError(
                    f"{path}: data() yields {desc}, not an (inputs, targets) pair nor a dict with `{LABELS}`. Yield "
                    f"`(x, y)` batches or dicts holding the targets under `{LABELS}` (Hugging Face), or define "
                    "`def forward(model, batch): ... return output, target` in the setup file."
                )
            if first_tensor(batch[0]) is None:
                raise SetupError(
                    f"{path}: the first batch's inputs hold no tensor ({type(batch[0]).__name__}). "
                    "Yield tensors (a DataLoader does this), or define `forward(model, batch)`."
                )
        try:
            self.sync()
            t0 = time.perf_counter()
            with torch.no_grad():
                out, y = self.forward(model, batch)
            self.sync()
            self.first_forward_s = time.perf_counter() - t0
        except SetupError:
            raise
        except Exception as e:
            fn = "forward(model, batch)" if self.setup.custom_forward else "model(x) on the first batch"
            raise SetupError(f"{path}: {fn} raised {type(e).__name__}: {e}{user_location(e)}") from e
        self._check_batch_dim(out, y, batch)
        if self.setup.loss is None:
            own = losses.match_own_loss(out, y) if not isinstance(out, torch.Tensor) else None
            if own is not None:  # the model's own loss is a standard loss of its logits: use that one
                self.loss_fn, self.loss_name = own
            elif not isinstance(out, torch.Tensor) and losses.own_loss(out) is not None:
                self.loss_fn, self.loss_name = losses.ModelOwnLoss(), "the model's own loss (output.loss)"
            elif not isinstance(out, torch.Tensor) or not isinstance(y, torch.Tensor):
                raise SetupError(
                    f"{path}: cannot infer a loss: output is {type(out).__name__} and target is "
                    f"{type(y).__name__}; the default losses need tensors. Define `loss = ...` in the setup file "
                    "(for a model with several outputs, e.g. `def loss(out, y): return F.cross_entropy(out[0], y[0]) + "
                    "F.mse_loss(out[1], y[1])`), or return the loss as `output.loss` (Hugging Face models do when "
                    f"the batch holds `{LABELS}`)."
                )
            else:
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
        problem = self.label_problem(out if isinstance(out, torch.Tensor) else self._maybe_tensor(out), y)
        if problem:
            self.data_problem = f"the first batch's {problem}"
            return
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
        self.uncuttable = self._cut_problem(self.fresh_model(train=False), batch)  # eval: a BatchNorm takes 1 sample
        self.lr_curve()  # a scheduler factory that raises is a setup error (SetupError), found here once
        if time_steps:
            self.step_time_s = self.measure_step_time()

    def _cut_problem(self, model: nn.Module, batch: Batch) -> str | None:
        """Why the first batch cannot be cut into samples along the first dimension (the forward raises on its first
        half: a whole graph whose edges index all its nodes), or None."""
        try:
            n = self.batch_size(batch)
        except ProbeSkip:
            return None
        if n < 2:
            return None
        try:
            with torch.no_grad():
                self.forward(model, self.slice_batch(batch, n // 2))
        except Exception as e:
            return (
                f"the forward raises on its first {n // 2} of {n} samples ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}): its tensors do not all share the sample dimension "
                "(e.g. a graph's edges index all its nodes)"
            )
        return None

    def _maybe_tensor(self, output: Any) -> Any:
        try:
            return self.output_tensor(output)
        except ProbeSkip:
            return output

    def _check_batch_dim(self, out: Any, y: Any, batch: Batch) -> None:
        """With the default forward (or a custom one and the default loss, which cannot fit such an output): the
        output must keep the batch dimension of the inputs when the targets do. A ``view(-1, N)`` whose N is not the
        per-sample size changes it (25 samples of 16x4x4 = 256 features viewed as ``(-1, 400)`` give 16 rows): name
        that line before the loss fails with a shape error or the default loss is guessed from the wrong width."""
        if self.setup.custom_forward and self.setup.loss is not None:
            return
        if not isinstance(y, torch.Tensor) or y.dim() == 0:
            return
        x = first_tensor(self.inputs_of(batch))
        o = out if isinstance(out, torch.Tensor) else self._maybe_tensor(out)
        if x is None or x.dim() == 0 or not isinstance(o, torch.Tensor) or o.dim() == 0:
            return
        n = int(x.shape[0])
        if int(y.shape[0]) != n or int(o.shape[0]) % n == 0:  # (B * T, C) rows of a sequence model are fine
            return
        head = (
            f"{self.setup.path}: the model returns {int(o.shape[0])} rows (output shape {tuple(o.shape)}) for a batch "
            f"of {n} samples (input shape {tuple(x.shape)}, target shape {tuple(y.shape)}): forward() changes the "
            "batch dimension"
        )
        site = batch_change(lambda: self.forward(self.fresh_model(), batch), n, self.inputs_of(batch))
        if site is not None and site.regroup:
            per = math.prod(site.before) // n
            width = math.prod(site.after[1:])
            raise SetupError(
                f"{head}: {site.describe()}: one sample holds {per} values there, not {width}, so it regroups the "
                f"{n} samples into {site.after[0]} rows that mix them. Keep the batch dimension: `x = x.flatten(1)` "
                f"or `x.reshape(x.shape[0], -1)` ({site.before} -> ({n}, {per})), and size the next layer for {per} "
                f"inputs (`nn.Linear({per}, ...)`): the size at that point depends on the input size."
            )
        if site is not None:
            raise SetupError(
                f"{head}: {site.describe()}, dropping the batch dimension (a reduction, an index or a concatenation "
                "over dim 0?). Keep the batch dimension first: reduce over the feature dimensions, and reshape with "
                "`x.reshape(x.shape[0], -1)`."
            )
        raise SetupError(
            f"{head}. Look for a `view` / `reshape` with a hard-coded size, e.g. `x.view(-1, 400)` where "
            "one sample holds another number of features at that point (it depends on the input size: 16x5x5 = 400 "
            "for 32x32 images, 16x4x4 = 256 for 28x28). Keep the batch dimension: `x = x.flatten(1)` or "
            "`x.reshape(x.shape[0], -1)`, and size the next layer from `x.shape` printed there."
        )

    def measure_step_time(self, warmup: int = STEP_TIMING_WARMUP, steps: int = STEP_TIMING_STEPS) -> float:
        """Wall time of one training step (forward + backward + optimizer step) on the first batch: the fastest of
        ``steps`` timed steps after ``warmup`` untimed ones, and of the steps timed before (load only ever slows a
        step down)."""
        model = self.fresh_model()
        opt = self.optimizer(model)
        batch = self.batch()
        before = len(self.step_times)
        try:
            for i in range(warmup + steps):
                self.train_step(model, opt, batch)
                if i < warmup:  # untimed
                    del self.step_times[before:]
        except SetupError:
            raise
        except Exception as e:
            raise SetupError(
                f"{self.setup.path}: a training step (forward, loss.backward(), optimizer.step()) raised "
                f"{type(e).__name__}: {e}"
            ) from e
        finally:
            if self.setup.train_step is not None:  # the user's GradScalers as they were
                self.load_scaler_states()
        return max(min(self.step_times), 1e-6)

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
    def rerun(self, *probe_ids: str, budget: str | None = None) -> str:
        """The command that re-runs ``probe_ids`` on this setup with this run's seed, budget (or ``budget``) and device:
        a command line for a setup file, the Python call for a setup given to ``nncheck.check``."""
        path = self.setup.path or ""
        ids = ",".join(probe_ids)
        budget = budget or self.budget
        if path.endswith(".py"):
            line = f"nncheck run {path}" + (f" --only {ids}" if ids else "")
            if self.seed:
                line += f" --seed {self.seed}"
            if budget != "full":
                line += f" --budget {budget}"
            if self.device.type != "cpu":
                line += f" --device {self.device}"
            return line
        args = ["..."] + ([f"only={list(probe_ids)!r}"] if probe_ids else [])
        if self.seed:
            args.append(f"seed={self.seed}")
        if budget != "full":
            args.append(f"budget={budget!r}")
        if self.device.type != "cpu":
            args.append(f"device={str(self.device)!r}")
        return f"nncheck.check({', '.join(args)})"
