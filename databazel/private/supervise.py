"""Running the user's script: its data and environment, its process (timeouts,
signals, the guard against a killed runner); what its failure says is in
script_errors.py."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Callable

import isolation
import process
from contract import ContractError, RunnerError, ScriptFailed, error_line
from outputs import remove_path, remove_special_entries
from records import signal_name
from script_errors import (
    exit_description,
    indent,
    missing_module_hint,
    tail,
    too_long_message,
)

# Where Bazel puts what actions generate, relative to the execroot.
OUTPUT_TREE = "bazel-out"


def check_not_source_directory(path: str, attribute: str) -> None:
    """Reject a directory of the source tree given as data.

    Bazel tracks a source directory as one file whose content it never reads:
    changing or adding a file inside it re-runs nothing, so the model would
    silently go stale.  A directory an action generated (`declare_directory`)
    is tracked file by file and is fine.
    """
    if not os.path.isdir(path):
        return
    if os.path.normpath(path).split(os.sep)[0] == OUTPUT_TREE:
        return
    pattern = os.path.basename(os.path.normpath(path))
    raise ContractError(
        f"`{attribute}` includes {path}, a directory of the source tree: Bazel "
        "does not see changes to the files inside it, so nothing would re-run "
        "when they change; list its files instead, for example "
        f'`{attribute} = glob(["{pattern}/**"])` (or a filegroup with that glob) '
        "in the directory's package"
    )


@contextlib.contextmanager
def data_path(
    paths: Sequence[str], attribute: str = "data", directory: str = ""
) -> Iterator[str]:
    """Yield the single data path, or `directory`, made a tree of links to the paths.

    `attribute` names where the paths come from (`training_data`, `test_data`)
    in errors. `directory` is a path relative to the working directory that
    names the action (beside its output), so that a script gets the same
    arguments on every run and machine; its links are relative too. It is
    removed when the script has finished.
    """
    for path in paths:
        if not os.path.lexists(path):
            raise RunnerError(f"data path {path} does not exist")
        check_not_source_directory(path, attribute)
    if len(paths) == 1:
        yield paths[0]
        return
    absolute = sorted({os.path.abspath(p) for p in paths})
    root = os.path.commonpath([os.path.dirname(p) for p in absolute])
    relative = [os.path.relpath(p, root) for p in absolute]
    taken = set(relative)
    for rel in relative:
        parent = os.path.dirname(rel)
        while parent:
            if parent in taken:
                raise RunnerError(f"data paths overlap: {root}/{parent} contains {rel}")
            parent = os.path.dirname(parent)
    remove_path(directory)
    try:
        for target, rel in zip(absolute, relative):
            link = os.path.join(directory, rel)
            os.makedirs(os.path.dirname(link), exist_ok=True)
            os.symlink(
                os.path.relpath(target, os.path.dirname(os.path.abspath(link))), link
            )
        yield directory
    finally:
        remove_path(directory)


def script_env(pythonpath: Sequence[str]) -> dict[str, str]:
    """os.environ with the given directories prepended to PYTHONPATH."""
    env = dict(os.environ)
    parts = [os.path.abspath(d) for d in pythonpath]
    if parts:
        if env.get("PYTHONPATH"):
            parts.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(parts)
    return env


# When run_script reached each step (time.monotonic()): a warm worker logs
# where a request's time went (worker.py).
TIMES: dict[str, float] = {}

# Whether this runner is a warm worker's (worker.py sets it): Bazel runs a
# worker's requests unsandboxed, so databazel isolates the scripts itself.
IN_WORKER = False


def sandbox_for(view: isolation.View | None) -> isolation.Sandbox | None:
    """The isolation databazel gives a script, where Bazel gives none; None elsewhere.

    In a warm worker, or an action Bazel runs unsandboxed on this machine
    (the `local` strategy), the script runs in namespaces of its own
    (isolation.py). In Bazel's Linux sandbox or on a remote executor, Bazel's
    or the executor's isolation stands. `view` None: the target is built
    unisolated (`--@databazel//databazel:isolate=false`).
    """
    if view is None:
        return None
    cwd = os.getcwd()
    if not IN_WORKER and not isolation.unsandboxed_execroot(cwd):
        return None
    return isolation.Sandbox.create(view, cwd)


def isolation_message(kind: str, detail: str) -> str:
    return (
        f"cannot isolate the {kind} script: {detail}. Where Bazel does not sandbox a "
        "trial (a warm worker, the default, or the local strategy), databazel runs it "
        "in Linux namespaces of its own, as Bazel's sandbox does, and this machine "
        "refused them (are user namespaces disabled? see `sysctl "
        "user.max_user_namespaces` and kernel.unprivileged_userns_clone). Build with "
        "--@databazel//databazel:warm=false to use Bazel's own sandbox, or with "
        "--@databazel//databazel:isolate=false to run trials without isolation "
        "(cached under other keys than isolated ones)"
    )


def run_script(
    kind: str,
    script: str,
    python_script: bool,
    pythonpath: Sequence[str],
    script_args: list[str],
    timeout: float | None = None,
    extra_env: dict[str, str] | None = None,
    pass_fds: Sequence[int] = (),
    view: isolation.View | None = None,
) -> None:
    """Run the user script (no shell); raise RunnerError unless it exits 0.

    With `timeout` (seconds), a script still running after it is killed with
    everything it started, and the error says so. `extra_env` is added to the
    script's environment; `pass_fds` are descriptors the script inherits (the
    locks of its GPUs, gpus.py). `view` is what the script may see and write
    where databazel isolates it (`sandbox_for`).
    """
    if not os.path.isfile(script):
        raise RunnerError(f"{kind} script {script} does not exist or is not a file")
    if not python_script and not os.access(script, os.X_OK):
        raise RunnerError(
            f"{kind} script {script} is not executable; make it executable "
            "or run it as a Python file"
        )
    prefix = [sys.executable] if python_script else []
    command = prefix + [os.path.abspath(script)] + script_args
    if python_script:
        # Python puts the *resolved* directory of the script first on sys.path:
        # in a sandbox that is the source tree, where undeclared siblings would
        # import. Import from the script's directory as the action sees it.
        pythonpath = [os.path.dirname(os.path.abspath(script)), *pythonpath]
    env = script_env(pythonpath)
    env.update(extra_env or {})
    if python_script:
        env["PYTHONSAFEPATH"] = "1"
    log_dir = tempfile.mkdtemp(prefix="databazel-logs-")
    sandbox = None
    TIMES.clear()
    TIMES["begin"] = time.monotonic()
    try:
        try:
            sandbox = sandbox_for(view)
        except OSError as e:
            raise RunnerError(
                f"cannot isolate the {kind} script: cannot make its private execroot: {e}"
            ) from None
        stdout_log = os.path.join(log_dir, "stdout")
        stderr_log = os.path.join(log_dir, "stderr")
        with open(stdout_log, "wb") as out, open(stderr_log, "wb") as err:
            try:
                TIMES["start"] = time.monotonic()
                child = process.start(
                    command,
                    env,
                    out.fileno(),
                    err.fileno(),
                    pass_fds,
                    sandbox,
                    python_script,
                )
            except OSError as e:
                if e.errno == errno.E2BIG:
                    raise RunnerError(
                        too_long_message(kind, script, command, env)
                    ) from None
                raise RunnerError(f"cannot run {kind} script {script}: {e}") from None
            except ValueError as e:  # a NUL byte in an argument or variable
                raise RunnerError(f"cannot run {kind} script {script}: {e}") from None
            _tell_guard(child.pid)
            TIMES["started"] = time.monotonic()
            timed_out = process.wait(child, timeout) == "timeout"
            TIMES["exited"] = time.monotonic()
            returncode = child.wait()
        if sandbox is not None and returncode == isolation.ISOLATION_FAILED:
            first = tail(stderr_log).partition("\n")[0]
            if first.startswith(isolation.FAILURE_PREFIX):
                raise RunnerError(
                    isolation_message(kind, first[len(isolation.FAILURE_PREFIX) :])
                )
        if timed_out:
            message = (
                f"{kind} script {script} was still running after the timeout of "
                f"{timeout:g} s and was killed; raise the target's `timeout` "
                "or make the script faster\n"
            )
        elif returncode != 0:
            message = f"{kind} script {script} {exit_description(returncode)}\n"
        else:
            if sandbox is not None:
                sandbox.collect()
                TIMES["collected"] = time.monotonic()
            return
        stderr_tail = tail(stderr_log)
        hint = missing_module_hint(stderr_tail, pythonpath, env)
        if hint:
            message += hint + "\n"
        if stderr_tail:
            message += "Last lines of its stderr:\n" + indent(stderr_tail)
        else:
            message += "(its stderr was empty)"
            stdout_tail = tail(stdout_log)
            if stdout_tail:
                message += "\nLast lines of its stdout:\n" + indent(stdout_tail)
        raise ScriptFailed(message, returncode, stderr_tail)
    finally:
        if sandbox is not None:
            sandbox.remove()
        shutil.rmtree(log_dir, ignore_errors=True)
        TIMES["end"] = time.monotonic()


# The write end of a pipe to the guard (see guarded_main), which the runner
# tells the script's process id.
_guard_pipe: int | None = None


def _tell_guard(pid: int) -> None:
    if _guard_pipe is not None:
        with contextlib.suppress(OSError):
            os.write(_guard_pipe, f"{pid}\n".encode())


process.ON_START = _tell_guard


def guarded_main(main: Callable[[], int], argv: list[str]) -> int:
    """Run `main` in a child process and report it if that child is killed.

    `argv` is the runner's command line (its params file expanded).

    A script can kill its runner (for example `os.kill(os.getppid(), SIGKILL)`),
    which then cannot say anything.  The guard is the process Bazel started:
    it passes SIGTERM, SIGINT and SIGHUP on to the runner, and when the runner
    dies of any other signal it stops the script, removes the outputs and
    prints the error line the runner could not.
    """
    global _guard_pipe
    if "--persistent_worker" in argv:
        return main()  # one request at a time, each supervised by the worker
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _guard_pipe = write_end
        code = 1
        try:
            code = main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(write_end)
    forwarded: list[int] = []

    def forward(signum: int, frame: object) -> None:
        forwarded.append(signum)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    _, status = os.waitpid(pid, 0)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    killed_by = os.WTERMSIG(status)
    with os.fdopen(read_end, "rb") as pipe:
        script_pids = [int(line) for line in pipe.read().split()]
    for script_pid in script_pids:
        with contextlib.suppress(OSError):
            os.killpg(script_pid, signal.SIGKILL)
    # The runner parsed these (the guard saves itself the time): Bazel gives
    # each flag and its value as two arguments.
    flags = dict(zip(argv, argv[1:]))
    for flag in ("--model-output-path", "--metrics-output"):
        if flag in flags:
            remove_path(flags[flag])
    if "--output-dir" in flags:
        remove_special_entries(flags["--output-dir"])
    if killed_by in forwarded:
        return 128 + killed_by
    command = argv[0] if argv else "?"
    print(
        error_line(
            flags.get("--target", "?"),
            f"the databazel runner was killed by signal {signal_name(-killed_by)} "
            f"while it ran the {command} script; something killed it, most "
            "likely the script itself (for example by signalling its parent "
            "process) or the system's out-of-memory killer",
        ),
        file=sys.stderr,
    )
    return 1
