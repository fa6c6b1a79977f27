"""The script's process: starting it, waiting for it, stopping it.

A script starts one of three ways: as a new program (Bazel sandboxed the
action, or a remote executor runs it), as a program inside namespaces of
its own (`isolation.py`: the runner runs unsandboxed on this machine), or,
in a warm worker, forked from the worker's parent (`worker.py`, given as
`FORK_LAUNCHER`), inside the same namespaces. In every case the runner holds
a `Child` and waits for it through a pidfd, so it learns the moment the
script exits.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

import isolation


class Child:
    """A process this one started (a Popen look-alike); `popen` when subprocess made it."""

    def __init__(self, pid: int, popen: subprocess.Popen[bytes] | None = None) -> None:
        self.pid = pid
        self.popen = popen
        self.returncode: int | None = None
        # Called once, when the process has exited (a warm worker reads what
        # the script reported).
        self.on_exit: Callable[[], None] | None = None
        self._pidfd: int | None = None
        with contextlib.suppress(OSError, AttributeError):
            self._pidfd = os.pidfd_open(pid)

    def poll(self) -> int | None:
        if self.returncode is None:
            if self.popen is not None:
                self.returncode = self.popen.poll()
            else:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
            if self.returncode is not None:
                if self._pidfd is not None:
                    os.close(self._pidfd)
                    self._pidfd = None
                if self.on_exit is not None:
                    self.on_exit()
                    self.on_exit = None
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """The exit code (negative: the signal), or TimeoutExpired after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.001
        while self.poll() is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0)
            if self._pidfd is not None:
                poller = select.poll()
                poller.register(self._pidfd, select.POLLIN)
                poller.poll(None if left is None else max(1, int(left * 1000)))
            else:
                time.sleep(delay if left is None else min(delay, left))
                delay = min(delay * 2, 0.02)
        assert self.returncode is not None
        return self.returncode


# How a warm worker forks a plain .py script (worker.py's WarmParent.launch:
# command, env, stdout, stderr, sandbox, pass_fds), or declines (None).
Launcher = Callable[
    [list[str], dict[str, str], int, int, isolation.Sandbox | None, Sequence[int]],
    Child | None,
]


FORK_LAUNCHER: Launcher | None = None

# Called in a new script process before it runs (the runner's guard learns its pid).
ON_START: Callable[[int], None] = lambda pid: None  # noqa: E731


def thread_count() -> int:
    """The threads of this process (Linux: every thread, not only Python's)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        import threading

        return threading.active_count()


def start(
    command: list[str],
    env: dict[str, str],
    stdout: int,
    stderr: int,
    pass_fds: Sequence[int],
    sandbox: isolation.Sandbox | None,
    python_script: bool,
) -> Child:
    """Start the script: forked by the warm worker, isolated, or as a plain program."""
    if python_script and FORK_LAUNCHER is not None:
        child = FORK_LAUNCHER(command, env, stdout, stderr, sandbox, pass_fds)
        if child is not None:
            return child
    if sandbox is None:
        return _popen(command, stdout, stderr, env, pass_fds)
    if thread_count() == 1:
        return fork(
            stdout,
            stderr,
            sandbox,
            lambda: isolation.exec_command(command, env, pass_fds),
        )
    # Forking a process with threads is unsafe: a new interpreter does it.
    helper = os.path.join(os.path.dirname(os.path.abspath(__file__)), "isolation.py")
    return _popen(
        [sys.executable, "-I", "-S", helper, sandbox.to_argument(), *command],
        stdout,
        stderr,
        env,
        pass_fds,
    )


def _popen(
    argv: list[str],
    stdout: int,
    stderr: int,
    env: dict[str, str],
    pass_fds: Sequence[int],
) -> Child:
    """Start `argv` in a session of its own, stdin from /dev/null."""
    popen = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        env=env,
        pass_fds=tuple(pass_fds),
        start_new_session=True,
        # The child tells the guard its pid itself, before it runs: it may
        # kill the runner before the runner could.
        preexec_fn=lambda: ON_START(os.getpid()),
    )
    return Child(popen.pid, popen)


def fork(
    stdout: int,
    stderr: int,
    sandbox: isolation.Sandbox | None,
    run: Callable[[], int],
) -> Child:
    """Fork a process that runs `run()` (in `sandbox`, unless None) as a script would.

    The child has a session of its own, stdin from /dev/null and the given
    stdout and stderr, and dies with this process.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return Child(pid)
    try:
        signal.signal(signal.SIGUSR2, signal.SIG_DFL)  # the worker's (watch_parent)
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(stdout, 1)
        os.dup2(stderr, 2)
        ON_START(os.getpid())
    except BaseException:  # noqa: BLE001 - a forked process never returns
        os._exit(1)
    isolation.run_isolated(sandbox, run, parent)


# Seconds between SIGTERM and SIGKILL when a script is stopped.
KILL_GRACE_SECONDS = 5.0


def stop(process: Child, grace: float = KILL_GRACE_SECONDS) -> None:
    """Stop the script and every process it started (its own session).

    SIGTERM, then SIGKILL after `grace` seconds (at once with 0).
    """
    steps = (
        ((signal.SIGTERM, grace), (signal.SIGKILL, None))
        if grace
        else ((signal.SIGKILL, None),)
    )
    for sig, wait in steps:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


# How often the runner checks for a timeout, a termination signal or, in a
# warm worker, the end of Bazel.
_POLL_SECONDS = 0.1

# A warm worker's parent (worker.py sets it): Bazel's server. When it dies (even
# of SIGKILL) the worker is orphaned, and stops its script and itself at once:
# nothing of a failed build may finish later and write an output.
PARENT: int | None = None


class Orphaned(BaseException):
    """Raised in a warm worker when Bazel's server has died (`watch_parent`)."""


def watch_parent() -> None:
    """Make this process (a warm worker) learn at once when Bazel's server dies.

    The kernel sends SIGUSR2 when the parent *thread* that started the worker
    ends (PR_SET_PDEATHSIG); only if that was the server's end (this process
    is orphaned) does the signal raise Orphaned. The wait loop also checks
    every _POLL_SECONDS, in case the signal came before it was set.
    """
    global PARENT
    PARENT = os.getppid()

    def handler(signum: int, frame: object) -> None:
        if os.getppid() != PARENT:
            signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # once
            raise Orphaned()

    signal.signal(signal.SIGUSR2, handler)
    isolation.parent_death_signal(signal.SIGUSR2)


def wait(process: Child, timeout: float | None) -> str | None:
    """Wait for the script; stop it on timeout or when the runner is told to stop.

    The script runs in a session of its own (so that a timeout can kill
    everything it started), which also takes it out of the runner's process
    group: SIGTERM, SIGINT and SIGHUP sent to the runner are passed on here.

    Returns None when the script ended by itself, "timeout" when it was killed
    for the timeout; raises SystemExit(128 + signal) when the runner was told
    to stop.
    """
    received: list[int] = []

    def handler(signum: int, frame: object) -> None:
        received.append(signum)

    signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {sig: signal.signal(sig, handler) for sig in signals}
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while not received:
            try:
                left = (
                    _POLL_SECONDS
                    if deadline is None
                    else min(_POLL_SECONDS, max(0.0, deadline - time.monotonic()))
                )
                process.wait(left)
                return None
            except subprocess.TimeoutExpired:
                if PARENT is not None and os.getppid() != PARENT:
                    raise Orphaned() from None
                if deadline is not None and time.monotonic() >= deadline:
                    stop(process)
                    return "timeout"
        stop(process)
        raise SystemExit(128 + received[0])
    except Orphaned:
        stop(process, grace=0)
        os._exit(1)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
