"""PyTorch Lightning setups: a ``LightningModule`` for ``model``, a ``LightningDataModule`` for ``data``.

A setup file may define ``model`` as a LightningModule (or a factory of one) and ``data`` as a LightningDataModule, a
factory of one, or any dataloader. ``adapt`` turns them into the plain contract (README, "PyTorch Lightning"):

- ``data``: the DataModule's ``prepare_data()``, ``setup("fit")`` and ``train_dataloader()``;
- the optimizer and the scheduler: the module's ``configure_optimizers()`` on the model being trained (the first
  optimizer; its scheduler, with ``interval="epoch"`` stepped once every ``len(train_dataloader)`` steps);
- the loss: ``training_step(batch, 0)``. Probes need it as ``loss(output, target)`` of the model's output, so the
  loss calls ``training_step((output, target), 0)`` on a template module whose ``forward`` returns ``output``: the
  loss is what ``training_step`` computes from ``self(x)`` (a softmax before the cross-entropy included);
- ``forward`` where a probe needs outputs: the default, ``x, y = batch; model(x), y``.

Outside a Trainer, ``self.log`` only warns: those warnings are silenced. Manual optimisation
(``automatic_optimization = False``) and a ``training_step`` that does not call ``self(x)`` need a ``train_step`` /
``loss`` in the setup file. Lightning is imported only when the setup file imported it.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import torch
from torch import nn

from nncheck.state import preserved_global_state, seed_everything

# The Lightning packages a setup file may have imported (`lightning` 2.x, or the older `pytorch_lightning`).
PACKAGES = ("lightning.pytorch", "pytorch_lightning")


def _classes(name: str) -> tuple[type, ...]:
    out = []
    for pkg in PACKAGES:
        mod = sys.modules.get(pkg)
        if mod is not None and hasattr(mod, name):
            out.append(getattr(mod, name))
    return tuple(out)


def is_module(obj: Any) -> bool:
    classes = _classes("LightningModule")
    return bool(classes) and isinstance(obj, classes)


def is_datamodule(obj: Any) -> bool:
    classes = _classes("LightningDataModule")
    return bool(classes) and isinstance(obj, classes)


def imported() -> bool:
    return any(pkg in sys.modules for pkg in PACKAGES)


class LightningError(Exception):
    """A Lightning setup nncheck cannot use as it is; the message names the file and what to do (the setup loader
    and the Context turn it into a SetupError)."""


@contextmanager
def quiet() -> Iterator[None]:
    """Silence Lightning's warnings about `self.log` outside a Trainer."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*self\.log.*")
        warnings.filterwarnings("ignore", message=r".*self\.trainer.*")
        yield


# ---------------------------------------------------------------------------------------------- data
def loader_of(data: Any, where: str) -> Any:
    """The train dataloader of a DataModule (prepare_data, setup("fit"), train_dataloader), else ``data``."""
    if not is_datamodule(data):
        return data
    try:
        data.prepare_data()
        data.setup("fit")
        return data.train_dataloader()
    except Exception as e:
        raise LightningError(
            f"{where}: the LightningDataModule's prepare_data() / setup('fit') / train_dataloader() raised "
            f"{type(e).__name__}: {e}. Fix the DataModule (run it with a Trainer to reproduce)."
        ) from e


def data_factory(data: Any, where: str) -> Any:
    """``data`` for the contract: a DataModule (or a factory of one) becomes a factory of its train dataloader."""
    if is_datamodule(data):
        return lambda: loader_of(data, where)
    if callable(data) and not hasattr(data, "__iter__"):
        return lambda: loader_of(data(), where)
    return data


# ---------------------------------------------------------------------------------------------- optimizers
class EveryN:
    """A scheduler stepped once every ``n`` training steps (Lightning's ``interval="epoch"`` / ``frequency``)."""

    def __init__(self, scheduler: Any, n: int) -> None:
        self.scheduler, self.n, self.calls = scheduler, max(1, n), 0
        self.optimizer = scheduler.optimizer

    def step(self) -> None:
        self.calls += 1
        if self.calls % self.n == 0:
            self.scheduler.step()


def _first(x: Any) -> Any:
    return x[0] if isinstance(x, (list, tuple)) and x else x


def split_configuration(conf: Any) -> tuple[Any, Any, dict[str, Any]]:
    """(optimizer, scheduler or None, scheduler config) from what ``configure_optimizers()`` returns: an optimizer,
    a list of them, ``([optimizers], [schedulers])``, or a dict ``{"optimizer": ..., "lr_scheduler": ...}``."""
    if isinstance(conf, (list, tuple)) and len(conf) == 2 and isinstance(conf[0], (list, tuple)):
        opt, sched = _first(conf[0]), _first(conf[1])
    elif isinstance(conf, (list, tuple)) and conf and isinstance(conf[0], dict):
        return split_configuration(conf[0])
    elif isinstance(conf, dict):
        opt, sched = conf.get("optimizer"), conf.get("lr_scheduler")
    else:
        opt, sched = _first(conf), None
    config: dict[str, Any] = {}
    if isinstance(sched, dict):
        config = {k: v for k, v in sched.items() if k != "scheduler"}
        sched = sched.get("scheduler")
    return opt, sched, config


class Configure:
    """``model.configure_optimizers()`` as the contract's optimizer / scheduler pair for a given model."""

    def __init__(self, where: str, steps_per_epoch: Callable[[], int | None]) -> None:
        self.where = where
        self.steps_per_epoch = steps_per_epoch

    def __call__(self, model: nn.Module) -> tuple[torch.optim.Optimizer, Any]:
        try:
            with quiet():
                conf = model.configure_optimizers()  # type: ignore[operator]
        except Exception as e:
            raise LightningError(
                f"{self.where}: the LightningModule's configure_optimizers() raised {type(e).__name__}: {e}."
            ) from e
        opt, sched, config = split_configuration(conf)
        if not isinstance(opt, torch.optim.Optimizer):
            raise LightningError(
                f"{self.where}: configure_optimizers() gave {type(opt).__name__}, not a torch.optim.Optimizer: return "
                "an optimizer, or a dict {'optimizer': ..., 'lr_scheduler': ...}."
            )
        if sched is not None and (config.get("interval", "epoch") == "epoch" or config.get("frequency", 1) != 1):
            per_epoch = self.steps_per_epoch() if config.get("interval", "epoch") == "epoch" else 1
            sched = EveryN(sched, (per_epoch or 1) * int(config.get("frequency", 1)))
        return opt, sched


# ---------------------------------------------------------------------------------------------- loss
class _CountedScheduler:
    """What ``self.lr_schedulers()`` gives inside training_step (no Trainer is attached): its ``step()`` is counted,
    not run (Lightning steps the configured scheduler itself, after the optimizer)."""

    def __init__(self, owner: TrainingStepLoss) -> None:
        self.owner = owner

    def step(self, *args: Any, **kwargs: Any) -> None:
        self.owner.scheduler_steps += 1


class TrainingStepLoss:
    """``training_step((output, target), 0)`` of a template module whose ``forward`` returns ``output``: the loss
    the module trains with, as a function of its output (README, "PyTorch Lightning")."""

    __name__ = "training_step"

    def __init__(self, template: nn.Module, where: str) -> None:
        self.template, self.where = template, where
        self.scheduler_steps = 0  # `self.lr_schedulers().step()` calls made inside training_step (train-step judges)

    def __call__(self, output: Any, target: Any) -> torch.Tensor:
        called: list[bool] = []

        def forward(*args: Any, **kwargs: Any) -> Any:
            called.append(True)
            return output

        placeholder = output if isinstance(output, torch.Tensor) else target
        self.template.forward = forward  # type: ignore[method-assign]
        self.template.lr_schedulers = lambda: _CountedScheduler(self)  # type: ignore[method-assign]
        try:
            with quiet():
                result = self.template.training_step((placeholder, target), 0)  # type: ignore[operator]
        except Exception:
            if called:  # training_step itself fails on the model's output: the user's error
                raise
            result = None  # it used the inputs before calling self(x): it does not call self(x) on them
        finally:
            del self.template.forward
            del self.template.lr_schedulers
        if not called:
            raise LightningError(
                f"{self.where}: the LightningModule's training_step does not call `self(x)` (self.forward), so nncheck "
                "cannot tell its output from its loss. Define `forward(model, batch)` and `loss(output, target)` in "
                "the setup file."
            )
        loss = result.get("loss") if isinstance(result, dict) else result
        if not isinstance(loss, torch.Tensor):
            raise LightningError(
                f"{self.where}: training_step returned {type(result).__name__}; return the loss tensor (or a dict "
                "with 'loss')."
            )
        return loss


# ---------------------------------------------------------------------------------------------- adapt
def template_of(model: Any, where: str) -> nn.Module | None:
    """The LightningModule ``model`` is or builds (built once under a fixed seed, the random generators put back),
    or None when it is not one (or Lightning was not imported)."""
    if not imported():
        return None
    if isinstance(model, nn.Module):
        return model if is_module(model) else None
    if not callable(model) or not _mentions_lightning(model):
        return None
    with preserved_global_state():
        seed_everything(0)
        try:
            built = model()
        except Exception:
            return None  # the Context reports the factory's error under its seed
    return built if is_module(built) else None


def _mentions_lightning(factory: Any) -> bool:
    """A LightningModule class, or a function whose module imported Lightning (only those are built to look)."""
    classes = _classes("LightningModule")
    if isinstance(factory, type):
        return bool(classes) and issubclass(factory, classes)
    for value in getattr(factory, "__globals__", {}).values():
        if isinstance(value, type) and classes and issubclass(value, classes):
            return True
        if isinstance(value, ModuleType) and value.__name__.split(".")[0] in ("lightning", "pytorch_lightning"):
            return True
    return False


def steps_per_epoch(data: Callable[[], Iterable[Any]]) -> Callable[[], int | None]:
    """``len(train dataloader)``, measured once (None when the loader has no length)."""
    cache: list[int | None] = []

    def count() -> int | None:
        if not cache:
            try:
                cache.append(len(data()))  # type: ignore[arg-type]
            except Exception:
                cache.append(None)
        return cache[0]

    return count


def check_automatic(template: nn.Module, where: str) -> None:
    if getattr(template, "automatic_optimization", True) is False:
        raise LightningError(
            f"{where}: the LightningModule uses manual optimisation (automatic_optimization = False): nncheck cannot "
            "run its training_step without a Trainer. Define `train_step(model, batch, optimizer)` in the setup file."
        )
