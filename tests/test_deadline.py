"""Deadlines that user code cannot swallow (nncheck.deadline): a BaseException, raised again until the block that set
it is left; nesting; the previous SIGALRM handler and timer given back."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from nncheck.deadline import REFIRE_S, DeadlineExceeded, caught, deadline, supported

pytestmark = pytest.mark.skipif(not supported(), reason="SIGALRM deadlines need POSIX and the main thread")


def test_expires_and_is_not_an_exception():
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded) as e, deadline(0.2, "phase") as d:
        try:
            time.sleep(10)
        except Exception:  # a user's `except Exception` does not catch it
            pytest.fail("caught by except Exception")
    assert caught(e.value, d) and 0.15 < time.monotonic() - t0 < 2
    assert "phase" in str(e.value)


def test_fires_again_when_swallowed():
    swallowed = 0
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded) as e, deadline(0.1, "retry loop") as d:
        while swallowed < 3:
            try:
                time.sleep(10)
            except BaseException:  # swallowed on purpose, as hostile user code does
                swallowed += 1
        time.sleep(10)
    assert swallowed == 3 and e.value.deadline.fired == 4 and caught(e.value, d)
    assert time.monotonic() - t0 < 0.1 + 4 * REFIRE_S + 1


def test_nested_outer_wins_and_inner_is_cleared():
    with pytest.raises(DeadlineExceeded) as e, deadline(0.2, "setup") as outer:
        try:
            with deadline(5, "probe") as inner:
                time.sleep(10)
        except DeadlineExceeded as inner_e:
            assert not caught(inner_e, inner)
            raise
    assert caught(e.value, outer)
    with deadline(0.1, "setup"):
        with pytest.raises(DeadlineExceeded) as e2, deadline(0.05, "probe") as inner:
            time.sleep(10)
        assert caught(e2.value, inner)
        time.sleep(0.01)  # the outer one is still pending: it has not fired yet


def test_no_deadline_and_cleanup():
    with deadline(None, "unlimited") as d:
        time.sleep(0.01)
    assert not d.expired()
    with deadline(0.05, "short"):
        pass
    time.sleep(0.1)  # nothing fires after the block
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_previous_handler_and_timer_are_given_back():
    fired = []

    def handler(signum, frame):
        fired.append(signum)

    before = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        with deadline(0.05, "inner"), pytest.raises(DeadlineExceeded):
            time.sleep(10)
        assert signal.getsignal(signal.SIGALRM) is handler
        remaining = signal.getitimer(signal.ITIMER_REAL)[0]
        assert 0 < remaining < 0.5
        time.sleep(remaining + 0.2)
        assert fired == [signal.SIGALRM]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)


def test_outside_the_main_thread_it_only_records_time():
    out = {}

    def run():
        with deadline(0.01, "thread") as d:
            time.sleep(0.05)
        out["expired"] = d.expired()

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert out == {"expired": True}
