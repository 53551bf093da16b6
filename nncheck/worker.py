"""Run each setup in a worker process that ``nncheck run`` can stop: the hard half of "never hang".

The CLI (the parent) never runs the user's code. Each setup file runs in its own child process, which sends the
runner's events back over a pipe (each phase with its time limit, each probe's result, the final report). The parent
kills the child, with its process group, when a phase runs ``kill_grace_s`` past its limit: the in-process deadline
(``nncheck.deadline``) had its chance and the user's code blocked or swallowed it. Before killing, the parent asks
the child for its Python stack (``faulthandler`` on SIGUSR1) to name the line the user's code was stuck on. A child
that dies (a crash in C code, ``os._exit``, the kernel's out-of-memory killer) is reported with its exit code and,
for a fatal signal, its stack. Either way the setup's report keeps the probes that finished, says what stopped it
(``SetupReport.stopped``), the next setups run in fresh children, and the exit code is 3.

The children's stdout is their stderr: what the user's code prints (at import, in forward, from C code) goes to
stderr, so a report written to stdout (``--format json`` / ``junit``) stays valid.

Children are forked from a server process that has imported torch and nncheck's probes once (multiprocessing's
``forkserver``, Linux), so a child starts in milliseconds and shares nothing with the other setups. Elsewhere they
are spawned (each imports torch itself). The parent imports neither torch nor the probes.
"""

from __future__ import annotations

import contextlib
import faulthandler
import linecache
import multiprocessing
import os
import re
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from nncheck.config import Config
from nncheck.files import is_user_file
from nncheck.report import SetupReport, stop_message

Listener = Callable[[str, dict[str, Any]], None]

# How long after a phase's own deadline fired the child gets to stop by itself before it is killed: the in-process
# deadline fires again every 0.5 s, and a probe stuck in one call may take a moment to unwind. Half the limit, within
# these bounds.
MIN_KILL_GRACE_S = 2.0
MAX_KILL_GRACE_S = 10.0
# Until the child reports its first phase: starting it (a spawned child imports torch: seconds to a minute).
STARTUP_S = 120.0
# How long the parent waits for the child's stack after asking for it.
STACK_WAIT_S = 1.0
PRELOAD = "nncheck._preload"
# How often a child checks that the CLI is still there.
ORPHAN_CHECK_S = 1.0


def kill_grace_s(limit_s: float) -> float:
    return min(MAX_KILL_GRACE_S, max(MIN_KILL_GRACE_S, limit_s / 2))


@dataclass
class Job:
    """What a child needs to run one setup file as if it ran in the CLI's own process."""

    path: str
    config: Config
    overrides: dict[str, Any]
    cwd: str
    env: dict[str, str]
    sys_path: list[str]
    stack_file: str
    parent_pid: int = 0  # the CLI: the child ends itself when it is gone (killed, or interrupted mid-start)


@dataclass
class _Phase:
    name: str
    limit_s: float
    started: float
    probe: str | None = None
    kill_at: float = field(init=False)

    def __post_init__(self) -> None:
        self.kill_at = self.started + self.limit_s + kill_grace_s(self.limit_s)


# ---------------------------------------------------------------------------------------------- the child
def _orphan_watch(parent_pid: int) -> None:
    """Kill this child's process group once the CLI that started it is gone (its children go with it)."""
    while True:
        time.sleep(ORPHAN_CHECK_S)
        try:
            os.kill(parent_pid, 0)
        except ProcessLookupError:
            if hasattr(os, "killpg"):
                with contextlib.suppress(OSError):
                    os.killpg(os.getpgrp(), signal.SIGKILL)
            os._exit(1)
        except OSError:  # pragma: no cover - alive, owned by another user
            pass


def _child(conn: Any, job: Job) -> None:
    """The child's body: run one setup file, send every event to the parent, never raise."""
    if hasattr(os, "setpgrp"):  # POSIX: its own process group, killed with whatever it started (DataLoader workers)
        with contextlib.suppress(OSError):
            os.setpgrp()
    if job.parent_pid:
        threading.Thread(target=_orphan_watch, args=(job.parent_pid,), name="nncheck-orphan-watch", daemon=True).start()
    try:
        os.chdir(job.cwd)
        os.environ.clear()
        os.environ.update(job.env)
        sys.path[:] = job.sys_path
        sys.stdout.flush()
        os.dup2(2, 1)  # the user's output, Python's and C code's, goes to stderr: stdout carries only the report
        stack = open(job.stack_file, "w")  # noqa: SIM115 - open for the life of the process
        faulthandler.enable(file=stack, all_threads=True)  # a fatal signal (a crash in C code) dumps the stack
        if hasattr(signal, "SIGUSR1"):  # and so does the parent's request (POSIX)
            faulthandler.register(signal.SIGUSR1, file=stack, all_threads=True)

        from nncheck.runner import run_file

        def send(event: str, info: dict[str, Any]) -> None:
            if event == "probe_end":
                info = {**info, "result": info["result"].plain()}
            elif event == "setup_end":
                info = {**info, "report": info["report"].plain()}
            conn.send((event, info))

        run_file(job.path, job.config, job.overrides, send)
    except BaseException as e:  # anything left is reported to the parent, which writes the report
        with contextlib.suppress(Exception):
            conn.send(("crash", {"message": f"{type(e).__name__}: {e}"}))
    finally:
        with contextlib.suppress(Exception):
            conn.close()


# ---------------------------------------------------------------------------------------------- the parent
_CONTEXT: Any = None


def _context() -> Any:
    """The multiprocessing context: a forkserver that preloads torch and the probes (Linux), else spawn."""
    global _CONTEXT
    if _CONTEXT is None:
        if sys.platform.startswith("linux") and "forkserver" in multiprocessing.get_all_start_methods():
            _CONTEXT = multiprocessing.get_context("forkserver")
            _CONTEXT.set_forkserver_preload([PRELOAD])
        else:  # pragma: no cover - macOS (fork after torch / Objective-C is unsafe), Windows
            _CONTEXT = multiprocessing.get_context("spawn")
    return _CONTEXT


def start_server() -> None:
    """Start the forkserver now (it imports torch in the background while the CLI does other work)."""
    ctx = _context()
    if ctx.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        with contextlib.suppress(Exception):
            forkserver.ensure_running()


_FRAME = re.compile(r'^\s*File "(?P<file>.+)", line (?P<line>\d+) in (?P<fn>.+)$')


def stuck_line(dump: str) -> str:
    """``file:line: code`` of the user's innermost frame in a faulthandler dump: in the thread running nncheck (the
    one whose stack holds the runner), else in any thread; ``""`` when no frame is the user's."""
    blocks: list[list[tuple[str, int]]] = []
    for line in dump.splitlines():
        if line.startswith(("Thread ", "Current thread ")):
            blocks.append([])
        m = _FRAME.match(line)
        if m and blocks:
            blocks[-1].append((m.group("file"), int(m.group("line"))))
    runner = [b for b in blocks if any(f.endswith(os.path.join("nncheck", "runner.py")) for f, _ in b)]
    for block in runner + blocks:
        for filename, lineno in block:  # most recent call first
            if is_user_file(filename):
                code = linecache.getline(filename, lineno).strip()
                return f"{filename}:{lineno}" + (f": {code}" if code else "")
    return ""


def _read_stack(path: str, since: int = 0) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            f.seek(since)
            return f.read()
    except OSError:
        return ""


def _ask_stack(pid: int, path: str) -> str:
    """Ask the child for its stack (SIGUSR1 -> faulthandler) and wait a moment for it."""
    size = os.path.getsize(path) if os.path.exists(path) else 0
    if not hasattr(signal, "SIGUSR1"):  # pragma: no cover - Windows
        return ""
    try:
        os.kill(pid, signal.SIGUSR1)
    except OSError:
        return ""
    end = time.monotonic() + STACK_WAIT_S
    text = ""
    while time.monotonic() < end:
        time.sleep(0.05)
        text = _read_stack(path, size)
        if text.rstrip().endswith(")") or "\n\n" in text:  # a complete block or more
            time.sleep(0.05)
            return _read_stack(path, size)
    return text


def _kill(proc: Any) -> None:
    if hasattr(os, "killpg"):
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.kill()
    proc.join(10)


def _exit_text(code: int | None) -> str:
    if code is None:
        return "exit code unknown"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by signal {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


def run_isolated(path: str, config: Config, overrides: dict[str, Any], listener: Listener) -> SetupReport:
    """Run one setup file in a child process (see the module docstring); always return its report."""
    ctx = _context()
    fd, stack_file = tempfile.mkstemp(prefix="nncheck-stack-", suffix=".txt")
    os.close(fd)
    job = Job(path, config, dict(overrides), os.getcwd(), dict(os.environ), list(sys.path), stack_file, os.getpid())
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(sender, job), name=f"nncheck {path}")
    t0 = time.monotonic()
    results: list[Any] = []
    report: SetupReport | None = None
    crash = ""
    phase = _Phase("load", STARTUP_S, t0)
    started = False
    try:
        proc.start()
        started = True
        sender.close()
        while report is None:
            now = time.monotonic()
            if now >= phase.kill_at:
                dump = _ask_stack(proc.pid, stack_file)
                _kill(proc)
                report = _stopped(path, config, overrides, results, phase, "killed", stuck_line(dump), t0)
                break
            if receiver.poll(min(phase.kill_at - now, 0.5)):
                try:
                    event, info = receiver.recv()
                except (EOFError, OSError):  # the child ended without its report
                    proc.join(10)
                    where = stuck_line(_read_stack(stack_file))
                    report = _stopped(path, config, overrides, results, phase, "died", where, t0, proc.exitcode)
                    break
                except Exception as e:  # a message that cannot be read here: keep going, say it if the child dies
                    crash = f"a message of the worker could not be read: {type(e).__name__}: {e}"
                    continue
                if event in ("phase", "probe_start"):
                    name = info.get("phase", "probe")
                    phase = _Phase(name, float(info["limit_s"]), time.monotonic(), info.get("id"))
                elif event == "probe_end":
                    results.append(info["result"])
                elif event == "setup_end":
                    report = info["report"]
                elif event == "crash":
                    crash = info.get("message", "")
                if event != "setup_end":  # the parent announces the end itself, below
                    listener(event, info)
            elif not proc.is_alive():
                proc.join(10)
                dump = _read_stack(stack_file)
                report = _stopped(path, config, overrides, results, phase, "died", stuck_line(dump), t0, proc.exitcode)
    except BaseException:  # KeyboardInterrupt: stop the child with us
        if started:
            _kill(proc)
        raise
    finally:
        receiver.close()
        with contextlib.suppress(OSError):
            sender.close()
        if started:
            proc.join(10)
            if proc.is_alive():  # pragma: no cover - it sent its report and then hung in atexit handlers
                _kill(proc)
        with contextlib.suppress(OSError):
            os.unlink(stack_file)
    assert report is not None
    if crash and report.stopped:
        report.notes.append(f"the worker process reported: {crash}")
    listener("setup_end", {"path": path, "report": report})
    return report


def _stopped(
    path: str,
    config: Config,
    overrides: dict[str, Any],
    results: list[Any],
    phase: _Phase,
    how: str,
    where: str,
    t0: float,
    exitcode: int | None = None,
) -> SetupReport:
    """The report of a child that was killed or died: the probes that finished, and why it stopped."""
    from nncheck.config import with_arguments

    with contextlib.suppress(Exception):  # the seed, device and budget the report shows
        config = with_arguments(config, overrides)
    stopped: dict[str, Any] = {
        "phase": "probe" if phase.probe else phase.name,
        "probe": phase.probe,
        "after_s": round(time.monotonic() - phase.started, 2),
        "limit_s": phase.limit_s,
        "how": how,
        "where": where,
    }
    if how == "died":
        stopped["exit"] = _exit_text(exitcode)
    return SetupReport(
        path=path,
        results=list(results),
        duration_s=time.monotonic() - t0,
        seed=config.seed,
        device=config.device,
        budget=config.budget,
        strict=config.strict,
        error=stop_message(path, stopped, config.time_budget_s is not None),
        stopped=stopped,
    )


@contextlib.contextmanager
def user_output_to_stderr() -> Iterator[None]:
    """For an in-process run: what the user's code prints (Python and C) goes to stderr while the block runs."""
    sys.stdout.flush()
    saved_fd = None
    with contextlib.suppress(OSError, ValueError, AttributeError):
        if sys.stdout.fileno() == 1 and sys.stderr.fileno() == 2:
            saved_fd = os.dup(1)
            os.dup2(2, 1)
    saved = sys.stdout
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stdout = saved
        if saved_fd is not None:
            os.dup2(saved_fd, 1)
            os.close(saved_fd)
