"""Imported once by the worker processes' server (``nncheck.worker``): torch, the probes and the first optimizer's
lazy imports are paid there, before any setup runs, so that each forked worker starts in milliseconds."""

from __future__ import annotations

try:
    from nncheck.runner import _warm_up

    _warm_up()
except Exception:  # pragma: no cover - the workers then pay the imports themselves (and report what fails)
    pass
