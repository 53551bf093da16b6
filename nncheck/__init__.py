"""nncheck: a training-sanity linter and test harness for PyTorch.

    import nncheck
    report = nncheck.check(model=make_model, data=make_batches)   # runs the probe battery
    assert report.ok, report

The heavy modules (torch) load on first use, so ``import nncheck`` and ``nncheck --help`` stay fast.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from nncheck._version import __version__

__all__ = ["Config", "Report", "Result", "Setup", "SetupError", "Status", "__version__", "check", "check_file"]

if TYPE_CHECKING:
    from nncheck.config import Config
    from nncheck.report import Report, Result, Status
    from nncheck.setup import Setup, SetupError


def __getattr__(name: str) -> Any:
    if name in ("Report", "Result", "Status"):
        from nncheck import report

        return getattr(report, name)
    if name in ("Setup", "SetupError"):
        from nncheck import setup

        return getattr(setup, name)
    if name == "Config":
        from nncheck.config import Config

        return Config
    raise AttributeError(f"module 'nncheck' has no attribute {name!r}")


def check(
    model: Any = None,
    data: Any = None,
    loss: Any = None,
    optimizer: Any = None,
    forward: Any = None,
    causal: bool = False,
    *,
    only: list[str] | None = None,
    skip: list[str] | None = None,
    seed: int | None = None,
    device: str | None = None,
    budget: str | None = None,
    strict: bool | None = None,
    time_budget_s: float | None = None,
    threads: int | None = None,
    probes: dict[str, dict[str, Any]] | None = None,
    settings: dict[str, Any] | None = None,
    name: str = "<api>",
    config_from: str | None = None,
    scheduler: Any = None,
    train_step: Any = None,
) -> Report:
    """Run the probe battery on a setup given as objects (the same names as a setup file).

    Keyword options override ``[tool.nncheck]`` of the nearest pyproject.toml (from ``config_from`` or the
    current directory). Raises ``SetupError`` when the setup itself is unusable (the message says why).
    """
    from nncheck.setup import setup_from_kwargs

    s = setup_from_kwargs(
        model,
        data,
        loss,
        optimizer,
        forward,
        causal,
        path=name,
        settings=settings,
        scheduler=scheduler,
        train_step=train_step,
    )
    overrides = dict(
        only=only,
        skip=skip,
        seed=seed,
        device=device,
        budget=budget,
        strict=strict,
        time_budget_s=time_budget_s,
        threads=threads,
        probes=probes,
    )
    return _run(s, config_from, overrides)


def check_file(path: str, **options: Any) -> Report:
    """Run the battery on a setup file; options as in ``check``. Raises ``SetupError`` for unusable setups, and for
    a setup whose import or preflight ran past its time limit (``time_budget_s``; the message names the phase and
    the line of your code it was running)."""
    from nncheck.config import load_config
    from nncheck.report import Report
    from nncheck.runner import run_file
    from nncheck.setup import SetupError

    sr = run_file(os.fspath(path), load_config(path), options)
    if sr.error is not None:
        raise SetupError(sr.error)
    return Report([sr])


def _run(setup: Setup, config_from: str | None, overrides: dict[str, Any]) -> Report:
    """Defaults < the pyproject nearest to ``config_from`` (or the cwd) < ``overrides``; setup errors raise."""
    from nncheck.config import load_config
    from nncheck.report import Report
    from nncheck.runner import run_setup
    from nncheck.setup import SetupError

    sr = run_setup(setup, load_config(config_from), overrides)
    if sr.error is not None:
        raise SetupError(sr.error)
    return Report([sr])
