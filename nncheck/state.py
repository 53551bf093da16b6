"""Global state that probes may touch, and the means to put it back exactly as it was.

nncheck promises that after a run the user's global RNGs (torch, CUDA, numpy, random), torch's
determinism flags, cuDNN flags, grad mode and default dtype are as they were before.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class RngStates:
    """Every random generator a training step may draw from (torch CPU and CUDA, numpy, random): captured at one
    point and put back later, so that a run interrupted there continues exactly as if it had not been."""

    torch_rng: torch.Tensor
    cuda_rng: list[torch.Tensor] | None
    numpy_rng: Any
    python_rng: Any

    @classmethod
    def capture(cls) -> RngStates:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        return cls(torch.get_rng_state(), cuda, np.random.get_state(), random.getstate())

    def restore(self) -> None:
        torch.set_rng_state(self.torch_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)
        np.random.set_state(self.numpy_rng)
        random.setstate(self.python_rng)


@dataclass
class GlobalState:
    """Every random generator (``RngStates``) and the global torch flags a setup or a probe may change."""

    rngs: RngStates
    deterministic: bool
    deterministic_warn_only: bool
    cudnn_deterministic: bool
    cudnn_benchmark: bool
    grad_enabled: bool
    default_dtype: torch.dtype

    @classmethod
    def capture(cls) -> GlobalState:
        return cls(
            rngs=RngStates.capture(),
            deterministic=torch.are_deterministic_algorithms_enabled(),
            deterministic_warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
            cudnn_deterministic=torch.backends.cudnn.deterministic,
            cudnn_benchmark=torch.backends.cudnn.benchmark,
            grad_enabled=torch.is_grad_enabled(),
            default_dtype=torch.get_default_dtype(),
        )

    def restore(self) -> None:
        self.rngs.restore()
        torch.use_deterministic_algorithms(self.deterministic, warn_only=self.deterministic_warn_only)
        torch.backends.cudnn.deterministic = self.cudnn_deterministic
        torch.backends.cudnn.benchmark = self.cudnn_benchmark
        torch.set_grad_enabled(self.grad_enabled)
        torch.set_default_dtype(self.default_dtype)


@contextlib.contextmanager
def preserved_global_state() -> Iterator[GlobalState]:
    """Run a block and put every global flag and RNG back afterwards, even on error."""
    state = GlobalState.capture()
    try:
        yield state
    finally:
        state.restore()


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and random. Use inside ``preserved_global_state``."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    # torch.manual_seed also queues lazy seeding of every device backend with a stack trace each call
    # (0.2-3 ms); seed the CPU generator directly and CUDA only where it exists.
    torch.default_generator.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


@contextlib.contextmanager
def preserved_rngs() -> Iterator[None]:
    """Run a block without it changing any random generator's state (the block may draw; the state comes back)."""
    states = RngStates.capture()
    try:
        yield
    finally:
        states.restore()
