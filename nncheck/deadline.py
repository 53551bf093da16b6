"""Deadlines that the user's code cannot swallow: the in-process half of "never hang".

``with deadline(seconds, label) as d:`` raises ``DeadlineExceeded`` in the main thread once ``seconds`` have passed
(SIGALRM). It is a ``BaseException``, so ``except Exception: continue`` in a retry loop does not catch it, and it is
raised again every ``REFIRE_S`` until the ``with`` block is left, so even a loop that catches everything
(``except BaseException``) is interrupted again and again. The code that set the deadline catches it::

    try:
        with deadline(30, "preflight") as d:
            run_user_code()
    except DeadlineExceeded as e:
        if e.deadline is not d:   # an outer deadline: not ours
            raise

Deadlines nest (a probe's inside a setup's): the earliest one arms the timer, and an expired outer deadline is raised
before an inner one. A SIGALRM handler and timer that were installed before the first deadline are given back when
the last one ends.

Limits (README, "Use it as a CI gate"): SIGALRM exists on POSIX only and is delivered to the main thread only;
elsewhere ``deadline`` only records the time (``expired()``) for cooperative checks. A call that blocks inside C code
without returning to Python (a C extension's own loop) is interrupted only when it returns, and a loop that catches
``BaseException`` forever is never left. ``nncheck run`` therefore runs each setup in a worker process that it kills
when a phase overruns its deadline (``nncheck.worker``).

No torch here: the CLI's parent process uses this module without importing torch.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# After a deadline fires, it fires again this often until the block that set it is left (the first one may have been
# swallowed by the user's `except BaseException`).
REFIRE_S = 0.5


@dataclass(eq=False)
class Deadline:
    """One active deadline: its label (a phase: "preflight", "probe overfit-batch"), its length and when it ends."""

    label: str
    seconds: float
    start: float
    at: float
    fired: int = 0  # how many times it has been raised
    done: bool = False

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def expired(self) -> bool:
        return time.monotonic() >= self.start + self.seconds


class DeadlineExceeded(BaseException):
    """Raised (and raised again) in the main thread when ``deadline`` passes. Not an ``Exception`` on purpose."""

    def __init__(self, d: Deadline) -> None:
        super().__init__(f"{d.label}: time limit of {d.seconds:g} s exceeded")
        self.deadline = d


_active: list[Deadline] = []  # outermost first
_saved: tuple[Any, float, float, float] | None = None  # previous handler, its timer (delay, interval), when saved


def supported() -> bool:
    """Whether deadlines can interrupt code here (POSIX, main thread)."""
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


def _arm() -> None:
    live = [d for d in _active if not d.done]
    if not live:
        signal.setitimer(signal.ITIMER_REAL, 0)
        return
    delay = min(d.at for d in live) - time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, max(delay, 1e-3))


def _on_alarm(signum: int, frame: Any) -> None:
    now = time.monotonic()
    for d in _active:  # the outermost expired deadline wins
        if not d.done and d.at <= now:
            d.fired += 1
            d.at = now + REFIRE_S
            _arm()
            raise DeadlineExceeded(d)
    _arm()


@contextlib.contextmanager
def deadline(seconds: float | None, label: str) -> Iterator[Deadline]:
    """Raise ``DeadlineExceeded`` in this block after ``seconds`` (and again every ``REFIRE_S`` until it is left).
    ``seconds=None``: no limit (the Deadline is still yielded, never expires)."""
    global _saved
    now = time.monotonic()
    d = Deadline(label, seconds if seconds is not None else float("inf"), now, now + (seconds or 0.0))
    if seconds is None or not supported():
        yield d
        return
    if not _active:
        previous = signal.signal(signal.SIGALRM, _on_alarm)
        delay, interval = signal.setitimer(signal.ITIMER_REAL, 0)
        _saved = (previous, delay, interval, now)
    _active.append(d)
    _arm()
    try:
        yield d
    finally:
        d.done = True  # from here on the handler ignores it
        # no alarm while the stack is changed: an outer deadline that expires now is raised after the cleanup
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        try:
            _active.remove(d)
            if _active:
                _arm()
            else:
                signal.setitimer(signal.ITIMER_REAL, 0)
                if signal.SIGALRM in signal.sigpending():  # ours, fired during the cleanup: not for the old handler
                    signal.sigwait({signal.SIGALRM})
                if _saved is not None:
                    previous, delay, interval, since = _saved
                    _saved = None
                    signal.signal(signal.SIGALRM, previous)
                    if delay > 0:  # someone else's timer was running: give it back what is left of it
                        signal.setitimer(signal.ITIMER_REAL, max(delay - (time.monotonic() - since), 1e-3), interval)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})


def caught(e: DeadlineExceeded, d: Deadline) -> bool:
    """Whether ``e`` is ``d``'s own expiry (else it belongs to an outer deadline and must propagate)."""
    return e.deadline is d
