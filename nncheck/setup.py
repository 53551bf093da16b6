"""The Setup: what nncheck needs to know about a user's training code.

A setup file is any Python module that defines (README, "Writing a setup file"):

========== ======== =================================================================================
name       required what
========== ======== =================================================================================
model      yes      zero-arg callable returning a fresh ``nn.Module`` (called under a fixed seed),
                    or a module instance (deep-copied, never mutated)
data       yes      zero-arg callable returning an iterable of batches, or the iterable itself
loss       no       ``callable(output, target) -> scalar``; inferred from the targets when absent
optimizer  no       ``callable(params) -> Optimizer``; default ``Adam(params, lr=3e-4)``
forward    no       ``callable(model, batch) -> (output, target)``; default ``x, y = batch``, or for a dict
                    batch with ``labels`` (Hugging Face) ``model(**batch), batch["labels"]``
scheduler  no       ``callable(optimizer) -> LRScheduler``, stepped once per training step (per batch); the
                    probes train at its peak LR, ``lr-schedule`` judges its curve over ``total_steps``
train_step no       ``callable(model, batch, optimizer) -> loss``: one training step of your own (zero_grad,
                    forward, backward, clipping, AMP / GradScaler, step); the shared training trace and the
                    training probes call it instead of forward / backward / step, ``train-step`` judges it
causal     no       ``True`` for autoregressive sequence models
nncheck    no       a dict of settings for this setup (same keys as ``[tool.nncheck]``, plus ``total_steps``:
                    the optimizer steps of the real run, and ``heads``)
========== ======== =================================================================================

Everything that can go wrong because of the user's file raises ``SetupError`` with a message that names
the file, the name involved and what to do; the CLI turns it into exit code 2 without a traceback.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import sys
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nncheck import lightning
from nncheck.deadline import DeadlineExceeded
from nncheck.files import is_user_file

Batch = Any
ForwardFn = Callable[[nn.Module, Batch], tuple[Any, Any]]
LossFn = Callable[[Any, Any], torch.Tensor]
SchedulerFn = Callable[[torch.optim.Optimizer], Any]
TrainStepFn = Callable[[nn.Module, Batch, torch.optim.Optimizer], Any]

CONTRACT_NAMES = ("model", "data", "loss", "optimizer", "forward", "scheduler", "train_step", "causal", "nncheck")
# Names a setup file often defines for a contract name, which nncheck does not read: a warning names them when the
# contract name itself is absent (README, "Writing a setup file").
LOOKALIKES = {
    "criterion": "loss",
    "loss_fn": "loss",
    "loss_func": "loss",
    "loss_function": "loss",
    "optim": "optimizer",
    "make_optimizer": "optimizer",
    "train_loader": "data",
    "train_dataloader": "data",
    "dataloader": "data",
    "loader": "data",
    "dataset": "data",
    "net": "model",
    "network": "model",
    "lr_scheduler": "scheduler",
    "sched": "scheduler",
    "schedule": "scheduler",
    "make_scheduler": "scheduler",
    "training_step": "train_step",
    "train_one_step": "train_step",
    "step_fn": "train_step",
}
DEFAULT_LR = 3e-4
# The key of the targets in a dict batch (Hugging Face's convention: its models compute their loss from it).
LABELS = "labels"


class SetupError(Exception):
    """A user mistake in a setup: shown as one clear message, exit code 2."""


def default_optimizer(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """Adam(lr=3e-4): Karpathy's "safe" default."""
    return torch.optim.Adam(params, lr=DEFAULT_LR)


def call_model(model: nn.Module, x: Any) -> Any:
    """Call ``model`` on ``x``: a tuple/list is passed positionally, a dict as keywords."""
    if isinstance(x, (tuple, list)):
        return model(*x)
    if isinstance(x, Mapping):
        return model(**x)
    return model(x)


def is_labelled_dict(batch: Batch) -> bool:
    """A dict batch that carries its targets under ``labels`` (a Hugging Face batch)."""
    return isinstance(batch, Mapping) and LABELS in batch


def default_forward(model: nn.Module, batch: Batch) -> tuple[Any, Any]:
    """``x, y = batch; return model(x), y``; a dict batch with ``labels`` is passed whole as keywords (a Hugging Face
    model computes its own loss from the labels): ``return model(**batch), batch["labels"]``."""
    if is_labelled_dict(batch):
        return call_model(model, batch), batch[LABELS]
    x, y = batch
    return call_model(model, x), y


@dataclass
class Setup:
    """A user's training setup, normalised. Never holds a user's object that nncheck could mutate."""

    model: Callable[[], nn.Module]
    data: Callable[[], Iterable[Batch]]
    loss: LossFn | None = None
    optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer] = default_optimizer
    forward: ForwardFn = default_forward
    causal: bool = False
    path: str = "<api>"
    settings: dict[str, Any] = field(default_factory=dict)
    custom_forward: bool = False
    custom_optimizer: bool = False
    model_is_instance: bool = False  # `model` was a module instance (deep-copied), not a factory
    grad_off_at_import: bool = False  # importing the setup file turned grad mode off (load_setup turned it back on)
    # the heads of a multi-output model named in the setup's `nncheck` dict: output key -> (target key, loss)
    heads: dict[Any, tuple[Any, LossFn]] = field(default_factory=dict)
    # `scheduler(optimizer) -> LRScheduler`, stepped once per training step; `total_steps`: the real run's length
    scheduler: SchedulerFn | None = None
    total_steps: int | None = None
    # `train_step(model, batch, optimizer) -> loss`: the user's own step (clipping, AMP, accumulation)
    train_step: TrainStepFn | None = None
    # a LightningModule's configure_optimizers(): model -> (optimizer, scheduler or None) (``nncheck.lightning``)
    configure: Callable[[nn.Module], tuple[torch.optim.Optimizer, Any]] | None = None
    # what loading the setup noticed but did not refuse (names that look like contract names); the report's notes
    warnings: list[str] = field(default_factory=list)


def _heads(raw: Any, where: str) -> dict[Any, tuple[Any, LossFn]]:
    """``nncheck = {"heads": {output_key: loss}}`` (the target at the same key) or ``{output_key: (target_key, loss)}``:
    which output tensor each loss term judges, for a model whose output is a tuple / dict."""
    example = '`nncheck = {"heads": {0: nn.CrossEntropyLoss(), 1: nn.MSELoss()}}`'
    if not isinstance(raw, dict) or not raw:
        raise SetupError(f"{where}: `heads` in the `nncheck` dict must be a non-empty dict, e.g. {example}.")
    out: dict[Any, tuple[Any, LossFn]] = {}
    for key, value in raw.items():
        target_key, loss = value if isinstance(value, tuple) and len(value) == 2 else (key, value)
        if not callable(loss) or isinstance(loss, type):
            raise SetupError(
                f"{where}: `heads[{key!r}]` must be a loss (`callable(output, target) -> scalar`) or a pair "
                f"(target key, loss); got {type(loss).__name__}. Example: {example}."
            )
        out[key] = (target_key, loss)
    return out


def _total_steps(raw: Any, where: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        raise SetupError(
            f"{where}: `total_steps` in the `nncheck` dict must be a positive integer (the optimizer steps of your "
            f'real run: epochs x batches per epoch), e.g. `nncheck = {{"total_steps": 50_000}}`; got {raw!r}.'
        )
    return raw


def lookalike_warnings(ns: Mapping[str, Any]) -> list[str]:
    """A warning for each name of ``ns`` that looks like a contract name nncheck reads (``criterion`` for ``loss``)
    while that contract name is absent: nncheck ignores it."""
    out = []
    for name, meant in LOOKALIKES.items():
        value = ns.get(name)
        if name not in ns or meant in ns or isinstance(value, (type(sys), torch.Tensor)):
            continue
        if meant in ("loss", "optimizer", "scheduler", "train_step") and not callable(value):
            continue  # a function is expected: `schedule = [0.1, 0.01]` is something else
        out.append(
            f"the setup defines `{name}` but no `{meant}`: nncheck reads only `{meant}` and ignores `{name}`"
            + {
                "loss": " (the loss is inferred from the targets instead)",
                "optimizer": f" (the default Adam(lr={DEFAULT_LR:g}) is used instead)",
                "scheduler": " (the LR is judged as constant)",
                "train_step": " (nncheck trains with forward, loss.backward() and optimizer.step())",
            }.get(meant, "")
            + f". Rename it, or add `{meant} = {name}`."
        )
    return out


def uncopyable_attribute(model: nn.Module) -> str | None:
    """``model.encoder.lock (a _thread.lock)``: the first attribute of ``model`` or of a submodule that cannot be
    deep-copied (a lock, an open file, a generator, a CUDA stream), or None."""
    for name, module in model.named_modules():
        for attr, value in vars(module).items():
            if attr in ("_parameters", "_buffers", "_modules") or isinstance(value, torch.Tensor):
                continue
            try:
                copy.deepcopy(value)
            except Exception:
                path = ".".join(p for p in ("model", name, attr) if p)
                return f"`{path}` (a {type(value).__module__}.{type(value).__qualname__})"
    return None


def _model_factory(model: Any, where: str) -> Callable[[], nn.Module]:
    if isinstance(model, nn.Module):
        try:
            pristine = copy.deepcopy(model)
        except Exception as e:
            culprit = uncopyable_attribute(model)
            raise SetupError(
                f"{where}: `model` is a module instance that cannot be deep-copied ({type(e).__name__}: {e}"
                + (f"; the attribute {culprit} holds it" if culprit else "")
                + "). nncheck works on copies so that it never changes your model. Give a factory instead: "
                "`def model(): return MyNet(...)` (nncheck calls it under its seed), or move the lock / file / "
                "stream out of the module."
            ) from None
        return lambda: copy.deepcopy(pristine)
    if callable(model):
        return model
    raise SetupError(
        f"{where}: `model` must be a zero-argument callable returning a torch.nn.Module, or a module instance; "
        f"got {type(model).__name__}."
    )


def _data_factory(data: Any, where: str) -> Callable[[], Iterable[Batch]]:
    if isinstance(data, torch.Tensor):
        raise SetupError(
            f"{where}: `data` is a single tensor; it must yield batches such as (inputs, targets). "
            "Wrap it: `data = [(x, y)]` or a DataLoader over a TensorDataset."
        )
    if callable(data) and not hasattr(data, "__iter__"):
        return data
    if hasattr(data, "__iter__"):
        if iter(data) is data:
            # a one-shot iterator/generator: keep what it yields so every probe sees the same batches
            cache: list[Batch] = []
            exhausted = False

            def replay() -> Iterable[Batch]:
                nonlocal exhausted
                yield from cache
                if not exhausted:
                    for b in data:
                        cache.append(b)
                        yield b
                    exhausted = True

            return replay
        return lambda: data
    raise SetupError(
        f"{where}: `data` must be a zero-argument callable returning an iterable of batches, or the iterable "
        f"itself (a DataLoader, a list of (x, y)); got {type(data).__name__}."
    )


def setup_from_kwargs(
    model: Any,
    data: Any,
    loss: LossFn | None = None,
    optimizer: Callable[..., torch.optim.Optimizer] | None = None,
    forward: ForwardFn | None = None,
    causal: bool = False,
    path: str = "<api>",
    settings: dict[str, Any] | None = None,
    scheduler: SchedulerFn | None = None,
    train_step: TrainStepFn | None = None,
) -> Setup:
    """Build a Setup from the objects of the contract (the Python API and the file loader meet here)."""
    where = path
    if model is None:
        raise SetupError(f"{where}: no `model` given. Pass model=<callable returning an nn.Module>.")
    if data is None:
        raise SetupError(f"{where}: no `data` given. Pass data=<callable returning an iterable of batches>.")
    for name, fn in (
        ("loss", loss),
        ("optimizer", optimizer),
        ("forward", forward),
        ("scheduler", scheduler),
        ("train_step", train_step),
    ):
        if fn is not None and not callable(fn):
            raise SetupError(f"{where}: `{name}` must be callable; got {type(fn).__name__}.")
    if isinstance(loss, type) and issubclass(loss, nn.Module):
        raise SetupError(f"{where}: `loss` is the class {loss.__name__}; pass an instance: `loss = {loss.__name__}()`.")
    if settings is not None and not isinstance(settings, dict):
        raise SetupError(f"{where}: `nncheck` must be a dict of settings; got {type(settings).__name__}.")
    configure = None
    template = lightning.template_of(model, where)
    if template is not None:  # a LightningModule: its data module, training_step and configure_optimizers
        try:
            lightning.check_automatic(template, where)
        except lightning.LightningError as e:
            raise SetupError(str(e)) from None
        data = lightning.data_factory(data, where)
        if loss is None and forward is None and train_step is None:
            loss = lightning.TrainingStepLoss(template, where)
        if optimizer is None and scheduler is None:
            configure = lightning.Configure(where, lightning.steps_per_epoch(_data_factory(data, where)))
    settings = dict(settings or {})
    heads = _heads(settings.pop("heads"), where) if "heads" in settings else {}
    total_steps = _total_steps(settings.pop("total_steps"), where) if "total_steps" in settings else None
    return Setup(
        model=_model_factory(model, where),
        data=_data_factory(data, where),
        loss=loss,
        optimizer=optimizer or default_optimizer,
        forward=forward or default_forward,
        causal=bool(causal),
        path=path,
        settings=settings,
        custom_forward=forward is not None,
        custom_optimizer=optimizer is not None or configure is not None,
        model_is_instance=isinstance(model, nn.Module),
        heads=heads,
        scheduler=scheduler,
        total_steps=total_steps,
        train_step=train_step,
        configure=configure,
    )


def user_frames(tb: Any, path: str) -> str:
    """Format a traceback keeping only frames that are not nncheck's or importlib's."""
    here = os.path.dirname(os.path.abspath(__file__))
    frames = [
        f
        for f in traceback.extract_tb(tb)
        if not os.path.abspath(f.filename).startswith(here) and "importlib" not in f.filename
    ]
    return "".join(traceback.format_list(frames))


def user_frame(e: BaseException) -> str:
    """``file:line: code`` of the deepest frame of ``e``'s traceback in the user's own code (``is_user_file``), or
    ``""`` when there is none."""
    frames = [f for f in traceback.extract_tb(e.__traceback__) if is_user_file(f.filename)]
    if not frames:
        return ""
    f = frames[-1]
    code = f": {f.line}" if f.line else ""
    return f"{f.filename}:{f.lineno}{code}"


def user_location(e: BaseException) -> str:
    """`` (at file:line: code)`` for the deepest frame of ``e``'s traceback in the user's own code, or ``""``."""
    where = user_frame(e)
    return f" (at {where})" if where else ""


def load_setup(path: str | os.PathLike[str]) -> Setup:
    """Import a setup file and read the contract's names from it."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise SetupError(f"{path}: no such file. Give the path of a Python setup file, e.g. examples/mlp.py.")
    if os.path.isdir(path):
        raise SetupError(f"{path}: is a directory. Give the path of a Python setup file inside it.")
    if not path.endswith(".py"):
        raise SetupError(f"{path}: not a Python file (.py). A setup file is a Python module defining `model`.")
    abspath = os.path.abspath(path)
    modname = "nncheck_setup_" + "".join(c if c.isalnum() else "_" for c in abspath)
    spec = importlib.util.spec_from_file_location(modname, abspath)
    if spec is None or spec.loader is None:  # pragma: no cover
        raise SetupError(f"{path}: cannot be imported as a Python module.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    folder = os.path.dirname(abspath)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)  # let a setup import its neighbours
    grad_before = torch.is_grad_enabled()
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        sys.modules.pop(modname, None)
        raise SetupError(f"{path}:{e.lineno}: syntax error while importing the setup file: {e.msg}.") from None
    except BaseException as e:
        sys.modules.pop(modname, None)
        if isinstance(e, (KeyboardInterrupt, DeadlineExceeded)):
            raise
        frames = user_frames(e.__traceback__, abspath)
        raise SetupError(
            f"{path}: raised {type(e).__name__} while being imported: {e}\n{frames}".rstrip()
            + "\nFix the error in the setup file (run `python "
            + path
            + "` to reproduce it)."
        ) from None
    finally:
        if added:
            try:
                sys.path.remove(folder)
            except ValueError:  # pragma: no cover
                pass
    # a setup that turns grad mode off at import (`torch.set_grad_enabled(False)`, left over from inference code) would
    # leave it off for the caller too: put it back, and let the runner report it (the gradient-flow probe's fail)
    grad_off = grad_before and not torch.is_grad_enabled()
    if grad_off:
        torch.set_grad_enabled(True)
    ns = vars(module)
    missing = [n for n in ("model", "data") if n not in ns]
    if missing:
        found = sorted(n for n in ns if not n.startswith("_") and not isinstance(ns[n], type(sys)))
        shown = ", ".join(found[:15]) + (", ..." if len(found) > 15 else "")
        raise SetupError(
            f"{path}: defines no {' and no '.join('`' + m + '`' for m in missing)}. A setup file must define "
            f"`model` (a function returning an nn.Module) and `data` (a function returning batches). "
            f"Names found: {shown or 'none'}."
            + "".join(
                f" `{name}` looks like `{meant}`: rename it, or add `{meant} = {name}`."
                for name, meant in LOOKALIKES.items()
                if meant in missing and name in ns and not isinstance(ns[name], type(sys))
            )
        )
    scheduler = ns.get("scheduler")
    setup = setup_from_kwargs(
        model=ns["model"],
        data=ns["data"],
        loss=ns.get("loss"),
        optimizer=ns.get("optimizer"),
        forward=ns.get("forward"),
        causal=ns.get("causal", False),
        path=path,
        settings=ns.get("nncheck"),
        scheduler=scheduler if callable(scheduler) else None,
        train_step=ns.get("train_step"),
    )
    setup.grad_off_at_import = grad_off
    setup.warnings = lookalike_warnings(ns)
    # a `scheduler` that is no function is not read: a diffusion model's noise scheduler (DDPMScheduler) is silently
    # left alone, an LR scheduler instance (built on the file's own optimizer) is named
    if scheduler is not None and not callable(scheduler) and hasattr(scheduler, "optimizer"):
        setup.warnings.append(
            f"`scheduler` is a {type(scheduler).__name__} instance, not a function of the optimizer: nncheck ignores "
            "it. Give a factory: `def scheduler(optimizer): return ...` (stepped once per batch)."
        )
    return setup
