"""Run a user's training or evaluation script as a Bazel action.

Bazel calls this file with paths relative to the action's working directory
(the execroot)::

    python3 runner.py train --target //pkg:name --hyperparams-file HP.json \\
        --model-output OUT --data PATH [--data PATH ...] --script SCRIPT \\
        [--python-script] [--pythonpath DIR ...] [--timeout SECONDS] \\
        [--epoch K [--init-model CHECKPOINT]]

    python3 runner.py evaluate --target //pkg:name --model MODEL \\
        --data PATH [--data PATH ...] --metrics-output METRICS.json \\
        --output-dir DIR --script SCRIPT [--python-script] [--pythonpath DIR ...] \\
        [--timeout SECONDS]

The user script is invoked without a shell, with stdin from /dev/null::

    train:    SCRIPT --data DATA --model-output-path OUT --hyperparams JSON \\
                  [--epoch K [--init-model-path CHECKPOINT]]
    evaluate: SCRIPT --model-path MODEL --data-path DATA --output-dir DIR

* ``--epoch K`` (training in epochs, ``model(epochs = N)``): the script runs
  epoch K (1-based) and gets ``--epoch K``; from the second epoch on it also
  gets ``--init-model-path`` with the checkpoint epoch K - 1 wrote, to resume
  from.  Without ``--epoch`` the script gets neither flag.  A checkpoint that
  is a failed epoch's record (``--allow-failure``) is not given to the script:
  the record is passed on as this epoch's result.

* ``--python-script`` runs SCRIPT with this interpreter (``sys.executable``),
  with PYTHONSAFEPATH=1 and the script's directory, unresolved, first on
  PYTHONPATH (so only declared sibling modules import in a sandbox); without it SCRIPT must itself be executable (a py_binary launcher, a
  ``#!/bin/sh`` script, ...).
* ``--pythonpath DIR`` (repeatable) prepends DIR, made absolute, to the
  script's PYTHONPATH, in the given order.  The rest of the environment is the
  runner's own.
* JSON is the hyperparameters file re-serialised as a compact JSON object of
  strings with sorted keys, e.g. ``{"C":"0.1","max_iter":"100"}``.  It reaches
  the script as a single argv element, byte for byte.
* DATA: with exactly one ``--data`` path the script gets that path unchanged.
  With several, the runner creates a temporary directory holding one symlink
  per path (to its absolute path), laid out by each path's location relative
  to the deepest directory containing all of them (``os.path.commonpath`` of
  their parent directories), and passes that directory.  For example
  ``--data d/train/x.csv --data d/test/y.csv`` gives ``TMP/train/x.csv`` and
  ``TMP/test/y.csv``.  The directory is removed when the script has finished.
* ``--timeout SECONDS``: the script runs in a session of its own; when it is
  still running after SECONDS, it and every process it started get SIGTERM,
  then SIGKILL 5 s later, and the runner fails saying so.  SIGTERM, SIGINT or
  SIGHUP sent to the runner stop the script the same way.
* evaluate: DIR is created if needed.  After the script exits 0 the runner
  reads ``DIR/metrics.json`` (format: ``METRICS_FORMAT``) and writes its
  canonical form to METRICS.json.

The script's stdout and stderr go to temporary files.  On success the runner
prints nothing.  On any failure it prints one error starting with
``databazel: error: <target>: `` (with the last 20 lines of the script's stderr,
when the script failed), removes the declared output file, and exits 1.

``--allow-failure`` (both subcommands) turns a failure of the trial (the script
failed or broke the contract) into a recorded result: the runner prints a
``databazel: warning:`` line, writes a failure record (``FailureRecord``) in
place of the output and exits 0.  train writes FAILED_MODEL_HEADER followed by
the record's JSON as the model file; evaluate writes the record's canonical
JSON as the metrics file (``{"status": "failed", ...}``), and does so without
running its script when the model it gets is a failed training's record.
Without ``--allow-failure``, evaluating such a model is an error.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import math
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any, Callable, Protocol, TypedDict

METRICS_FORMAT = """\
The evaluation script must write DIR/metrics.json (DIR is the path given by
--output-dir) containing one JSON object that maps metric names to numbers:

    {"accuracy": 0.9731, "log_loss": 0.0912, "num_examples": 10000}

* at least one entry; every key is a non-empty string; no key appears twice;
* every value is a finite JSON number (integer or decimal);
* not allowed as values: true/false, null, strings (e.g. "0.97"), lists,
  nested objects, NaN, Infinity, -Infinity.

databazel rewrites it canonically (keys sorted, 2-space indent, trailing
newline) into the evaluation target's .metrics.json output."""

ERROR_PREFIX = "databazel: error: "
TAIL_LINES = 20
TAIL_BYTES = 8 * 1024
MAX_LISTED_FILES = 10


class RunnerError(Exception):
    """A failure the user has to fix; its message is printed as one error."""


class ContractError(RunnerError):
    """A script or input file does not follow the databazel contract."""


class OutputContractError(ContractError):
    """The script exited 0, but what it wrote does not follow the contract."""


class ScriptFailed(RunnerError):
    """The user's script exited non-zero or was killed."""

    def __init__(self, message: str, returncode: int, stderr_tail: str) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr_tail = stderr_tail


class FailedModel(RunnerError):
    """evaluate got a failed training's record instead of a model."""


class FailureRecord(TypedDict):
    """What a failed trial leaves instead of its model or metrics (``--allow-failure``)."""

    status: str  # always "failed"
    stage: str  # "train" or "evaluate": the step that failed
    target: str  # the label of the target whose script failed
    exit_code: int | None  # the script's exit code; None if it was killed or never ran
    signal: str | None  # e.g. "SIGKILL" when the script was killed
    error: str  # databazel's error message
    stderr_tail: str  # the last lines of the script's stderr ("" if none)


# The first bytes of a model file that is a failed training's record.
FAILED_MODEL_HEADER = b"databazel failed trial v1\n"


# ---------------------------------------------------------------------------
# Small helpers shared with report.py


def error_line(target: str, message: str) -> str:
    """Return the user-facing error text for `target`."""
    return f"{ERROR_PREFIX}{target}: {message}"


def write_atomic(path: str, text: str) -> None:
    """Write `text` (UTF-8) to `path` via a temporary file and os.replace."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(
        dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def remove_path(path: str) -> None:
    """Remove a file, symlink or directory at `path` if there is one."""
    with contextlib.suppress(OSError):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.unlink(path)


def tail(path: str, max_lines: int = TAIL_LINES, max_bytes: int = TAIL_BYTES) -> str:
    """Return the last `max_lines` non-blank-terminated lines of a text file.

    Only the last `max_bytes` bytes are read; a line cut by that limit is
    dropped unless it is the only one.  Undecodable bytes become U+FFFD.
    """
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        start = max(0, size - max_bytes)
        f.seek(start)
        data = f.read(max_bytes)
    if start > 0:
        newline = data.find(b"\n")
        if 0 <= newline < len(data.rstrip(b"\n")):
            data = data[newline + 1 :]
    lines = data.decode("utf-8", errors="replace").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines[-max_lines:])


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


# ---------------------------------------------------------------------------
# Hyperparameters and metrics


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ContractError(f"duplicate key {json.dumps(key, ensure_ascii=False)}")
        result[key] = value
    return result


def _load_json(text: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicates)
    except json.JSONDecodeError as e:
        raise ContractError(f"not valid JSON: {e}") from None
    except RecursionError:
        raise ContractError("not valid JSON: nested too deeply") from None
    except ValueError as e:
        # Python refuses integers of more than 4,300 digits (sys.int_info).
        raise ContractError(f"not valid JSON: {str(e).split(';')[0]}") from None


def _describe(value: Any) -> str:
    """Describe a JSON value for an error message, e.g. 'a string "0.9"'."""
    if isinstance(value, bool):
        return f"a boolean ({json.dumps(value)})"
    if value is None:
        return "null"
    if isinstance(value, str):
        shown = json.dumps(
            value if len(value) <= 60 else value[:57] + "...", ensure_ascii=False
        )
        return f"a string {shown}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a nested object"
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, float) and math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return f"a number ({value!r})"


def parse_hyperparams(text: str) -> dict[str, str]:
    """Parse a hyperparameters file: a JSON object of string keys and values."""
    data = _load_json(text)
    if not isinstance(data, dict):
        raise ContractError(
            f"expected a JSON object of strings, found {_describe(data)}"
        )
    for key, value in data.items():
        if not isinstance(value, str):
            raise ContractError(
                f"hyperparameter {json.dumps(key, ensure_ascii=False)} has "
                f"{_describe(value)} value; all values must be strings"
            )
    return data


def encode_hyperparams(hyperparams: dict[str, str]) -> str:
    """The compact, key-sorted JSON passed to the script via --hyperparams."""
    return json.dumps(
        hyperparams, sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )


def parse_metrics(text: str) -> dict[str, float | int]:
    """Parse and validate metrics JSON text (see METRICS_FORMAT).

    Raises ContractError saying exactly what is wrong.
    """
    data = _load_json(text)
    if not isinstance(data, dict):
        raise ContractError(f"expected a JSON object, found {_describe(data)}")
    if not data:
        raise ContractError("the object is empty; at least one metric is required")
    metrics: dict[str, float | int] = {}
    for key, value in data.items():
        name = json.dumps(key, ensure_ascii=False)
        if not key:
            raise ContractError("a metric has an empty name")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ContractError(
                f"metric {name} has {_describe(value)} value; it must be a number"
            )
        try:
            finite = math.isfinite(value)
        except OverflowError:  # an integer beyond the range of a double
            raise ContractError(
                f"metric {name} is an integer of {len(str(abs(value)))} digits, "
                "too large for a floating-point number"
            ) from None
        if not finite:
            raise ContractError(
                f"metric {name} is {_describe(value)}; it must be a finite number"
            )
        metrics[key] = value
    return metrics


def format_metrics(metrics: dict[str, float | int]) -> str:
    """The canonical text of a metrics file."""
    return json.dumps(metrics, sort_keys=True, indent=2, allow_nan=False) + "\n"


# ---------------------------------------------------------------------------
# Running the script


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
def data_path(paths: Sequence[str], attribute: str = "data") -> Iterator[str]:
    """Yield the single data path, or a temporary directory of symlinks.

    `attribute` names where the paths come from (`training_data`, `test_data`)
    in errors.
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
    directory = tempfile.mkdtemp(prefix="databazel-data-")
    try:
        for target, rel in zip(absolute, relative):
            link = os.path.join(directory, rel)
            os.makedirs(os.path.dirname(link), exist_ok=True)
            os.symlink(target, link)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def script_env(pythonpath: Sequence[str]) -> dict[str, str]:
    """os.environ with the given directories prepended to PYTHONPATH."""
    env = dict(os.environ)
    parts = [os.path.abspath(d) for d in pythonpath]
    if parts:
        if env.get("PYTHONPATH"):
            parts.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(parts)
    return env


_MISSING_MODULE = re.compile(r"ModuleNotFoundError: No module named '([^'.]+)")


def _environment_modules() -> dict[str, Any] | None:
    """The python_env repository's modules.json: which distribution provides which module.

    The file is not an input of the action (a new package would otherwise
    re-run every trial); it is found through the interpreter's pyvenv.cfg,
    which links to the repository. Only error messages use it, so when it
    cannot be found (a remote worker, another toolchain) the message is
    less specific, never wrong.
    """
    venv = os.path.dirname(os.path.dirname(sys.executable))
    cfg = os.path.realpath(os.path.join(venv, "pyvenv.cfg"))
    path = os.path.join(os.path.dirname(os.path.dirname(cfg)), "modules.json")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def missing_module_hint(stderr_tail: str) -> str:
    """What to add to `deps` when the script failed importing a module, else ""."""
    found = _MISSING_MODULE.findall(stderr_tail)
    if not found:
        return ""
    module = found[-1]
    index = _environment_modules()
    modules = index.get("modules", {}) if index else {}
    if isinstance(modules, dict) and module in modules:
        return (
            f"The script imports `{module}`, which no entry of the target's `deps` "
            f'provides: add "@{index["repository"]}//:{modules[module]}" '  # type: ignore[index]
            "(distribution " + str(modules[module]) + ") to `deps`."
        )
    where = f" of @{index['repository']}" if index else ""
    return (
        f"The script imports `{module}`, which is in none of its `deps`: add the "
        f"py_library that provides it to the target's `deps` (no distribution{where} "
        "provides it: a package must also be in the environment's requirements lock)."
    )


def _signal_name(returncode: int) -> str:
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return str(-returncode)


def _exit_description(returncode: int) -> str:
    if returncode < 0:
        return f"was killed by signal {_signal_name(returncode)}"
    return f"exited with code {returncode}"


class Process(Protocol):
    """A running script: a subprocess.Popen, or a warm worker's forked child."""

    pid: int
    returncode: int | None

    def wait(self, timeout: float | None = None) -> int: ...


# How a warm worker (worker.py) starts a plain .py script: a child forked
# from its parent, with (script, args, env, stdout fd, stderr fd).
SCRIPT_LAUNCHER: (
    Callable[[str, list[str], dict[str, str], int, int], Process] | None
) = None

# Seconds between SIGTERM and SIGKILL when a script is stopped.
KILL_GRACE_SECONDS = 5.0


def _stop(process: Process) -> None:
    """Stop the script and every process it started (its own session)."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_SECONDS), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


# How often the runner checks for a timeout or a termination signal.
_POLL_SECONDS = 0.1


def _wait(process: Process, timeout: float | None) -> str | None:
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
                process.wait(_POLL_SECONDS)
                return None
            except subprocess.TimeoutExpired:
                if deadline is not None and time.monotonic() >= deadline:
                    _stop(process)
                    return "timeout"
        _stop(process)
        raise SystemExit(128 + received[0])
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# Linux's limit on the length of one argument (MAX_ARG_STRLEN: 32 pages).
MAX_ARGUMENT_BYTES = 128 * 1024


def too_long_message(
    kind: str, script: str, command: Sequence[str], env: dict[str, str]
) -> str:
    """Why exec refused the command line with E2BIG, naming the argument."""
    longest = max(command, key=lambda a: len(os.fsencode(a)))
    size = len(os.fsencode(longest))
    if size >= MAX_ARGUMENT_BYTES:
        index = list(command).index(longest)
        flag = command[index - 1] if index > 0 else "the script's path"
        what = (
            "the hyperparameters (--hyperparams)"
            if flag == "--hyperparams"
            else f"the argument after {flag}"
        )
        return (
            f"cannot run {kind} script {script}: {what} take {size:,} bytes, over "
            f"Linux's limit of {MAX_ARGUMENT_BYTES:,} bytes for one argument "
            "(MAX_ARG_STRLEN); pass large values in a data file instead"
        )
    total = sum(len(os.fsencode(a)) + 1 for a in command) + sum(
        len(os.fsencode(k)) + len(os.fsencode(v)) + 2 for k, v in env.items()
    )
    return (
        f"cannot run {kind} script {script}: its arguments and environment take "
        f"{total:,} bytes, over the system's limit (ARG_MAX, "
        f"{os.sysconf('SC_ARG_MAX'):,} bytes); pass large values in a data file instead"
    )


def run_script(
    kind: str,
    script: str,
    python_script: bool,
    pythonpath: Sequence[str],
    script_args: list[str],
    timeout: float | None = None,
) -> None:
    """Run the user script (no shell); raise RunnerError unless it exits 0.

    With `timeout` (seconds), a script still running after it is killed with
    everything it started, and the error says so.
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
    if python_script:
        env["PYTHONSAFEPATH"] = "1"
    log_dir = tempfile.mkdtemp(prefix="databazel-logs-")
    try:
        stdout_log = os.path.join(log_dir, "stdout")
        stderr_log = os.path.join(log_dir, "stderr")
        with open(stdout_log, "wb") as out, open(stderr_log, "wb") as err:
            try:
                process: Process
                if SCRIPT_LAUNCHER is not None and python_script:
                    process = SCRIPT_LAUNCHER(
                        command[1], command[2:], env, out.fileno(), err.fileno()
                    )
                else:
                    process = subprocess.Popen(
                        command,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=err,
                        env=env,
                        start_new_session=True,
                    )
            except OSError as e:
                if e.errno == errno.E2BIG:
                    raise RunnerError(
                        too_long_message(kind, script, command, env)
                    ) from None
                raise RunnerError(f"cannot run {kind} script {script}: {e}") from None
            except ValueError as e:  # a NUL byte in an argument or variable
                raise RunnerError(f"cannot run {kind} script {script}: {e}") from None
            _tell_guard(process.pid)
            timed_out = _wait(process, timeout) == "timeout"
            returncode = process.wait()
        if timed_out:
            message = (
                f"{kind} script {script} was still running after the timeout of "
                f"{timeout:g} s and was killed; raise the target's `timeout` "
                "or make the script faster\n"
            )
        elif returncode != 0:
            message = f"{kind} script {script} {_exit_description(returncode)}\n"
        else:
            return
        stderr_tail = tail(stderr_log)
        hint = missing_module_hint(stderr_tail)
        if hint:
            message += hint + "\n"
        if stderr_tail:
            message += "Last lines of its stderr:\n" + _indent(stderr_tail)
        else:
            message += "(its stderr was empty)"
            stdout_tail = tail(stdout_log)
            if stdout_tail:
                message += "\nLast lines of its stdout:\n" + _indent(stdout_tail)
        raise ScriptFailed(message, returncode, stderr_tail)
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)


# ---------------------------------------------------------------------------
# Outputs that are not regular files

# Bazel opens every output to move, hash and cache it: a FIFO blocks it for
# good, a socket fails the move, and a symbolic link would make whatever it
# points to (a host file, a source file) the cached output.  The runner checks
# outputs with lstat only, never opening them.


def describe_mode(path: str, mode: int) -> str:
    """What a non-regular file at `path` is, e.g. 'a FIFO (named pipe)'."""
    if stat.S_ISLNK(mode):
        try:
            target = os.readlink(path)
        except OSError:
            return "a symbolic link"
        dangling = "" if os.path.exists(path) else ", which does not exist"
        return f"a symbolic link (to {target}{dangling})"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a Unix socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a regular file"


def special_entries(directory: str) -> list[tuple[str, str]]:
    """(path, description) of every entry under `directory` that is neither a
    regular file nor a directory (symbolic links included), depth first.

    Symbolic links are not followed; nothing is opened.
    """
    found: list[tuple[str, str]] = []
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError:
        return found
    for entry in entries:
        mode = entry.stat(follow_symlinks=False).st_mode
        if stat.S_ISDIR(mode):
            found.extend(special_entries(entry.path))
        elif not stat.S_ISREG(mode):
            found.append((entry.path, describe_mode(entry.path, mode)))
    return found


def remove_special_entries(directory: str) -> None:
    """Remove what special_entries finds, and `directory` itself if it is one."""
    try:
        mode = os.lstat(directory).st_mode
    except OSError:
        return
    if not stat.S_ISDIR(mode):
        remove_path(directory)
        return
    for path, _ in special_entries(directory):
        remove_path(path)


def check_output_dir(kind: str, script: str, directory: str) -> None:
    """Fail unless everything under `directory` is a regular file or directory."""
    mode = os.lstat(directory).st_mode
    if not stat.S_ISDIR(mode):
        raise OutputContractError(
            f"{kind} script {script} replaced the output directory {directory} "
            f"with {describe_mode(directory, mode)}; write files into it instead"
        )
    found = special_entries(directory)
    if found:
        listed = "; ".join(
            f"{os.path.relpath(path, directory)}: {what}"
            for path, what in found[:MAX_LISTED_FILES]
        )
        more = len(found) - MAX_LISTED_FILES
        raise OutputContractError(
            f"{kind} script {script} left {len(found)} "
            f"entr{'y' if len(found) == 1 else 'ies'} in {directory} that "
            f"{'is' if len(found) == 1 else 'are'} neither a regular file nor a "
            f"directory ({listed}{f'; and {more} more' if more > 0 else ''}); "
            "Bazel can only store regular files as outputs: write the content "
            "itself (copy a file instead of linking to it)"
        )


def check_output_file(kind: str, script: str, path: str, what: str, flag: str) -> None:
    """Fail unless `path` is a regular file (checked with lstat, never opened)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        raise OutputContractError(
            f"{kind} script {script} exited 0 but wrote no {what} at {path}; "
            f"the script must write the {what} file to the path given by {flag}"
        ) from None
    if stat.S_ISDIR(mode):
        raise OutputContractError(
            f"{kind} script {script} exited 0 but wrote a directory at {path} "
            f"where a {what} file was expected; write a single file to the path "
            f"given by {flag} (archive several files into one)"
        )
    if not stat.S_ISREG(mode):
        raise OutputContractError(
            f"{kind} script {script} exited 0 but wrote {describe_mode(path, mode)} "
            f"at {path} where a {what} file was expected; write the file itself "
            "(copy it instead of linking to it)"
        )


def train(args: argparse.Namespace) -> None:
    try:
        with open(args.hyperparams_file, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise RunnerError(
            f"cannot read hyperparameters file {args.hyperparams_file}: {e}"
        ) from None
    try:
        hyperparams = parse_hyperparams(text)
    except ContractError as e:
        raise ContractError(
            f"invalid hyperparameters file {args.hyperparams_file}: {e}"
        ) from None

    out: str = args.model_output
    remove_path(out)
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    script_args = [
        "--data",
        "",  # the data path, below
        "--model-output-path",
        out,
        "--hyperparams",
        encode_hyperparams(hyperparams),
    ]
    if args.init_model is not None and args.epoch is None:
        raise RunnerError("--init-model needs --epoch")
    if args.epoch is not None:
        script_args += ["--epoch", str(args.epoch)]
    if args.init_model is not None:
        if not os.path.isfile(args.init_model):
            raise RunnerError(f"checkpoint {args.init_model} does not exist")
        failed = read_failed_model(args.init_model)
        if failed is not None:
            raise FailedModel(
                f"the checkpoint {args.init_model} is the failure record of "
                f"{failed['target']}, whose {failed['stage']} step failed: "
                f"{failed['error']}"
            )
        script_args += ["--init-model-path", args.init_model]
    with data_path(args.data, "training_data") as data:
        script_args[1] = data
        run_script(
            "train",
            args.script,
            args.python_script,
            args.pythonpath,
            script_args,
            args.timeout,
        )
    check_output_file("train", args.script, out, "model", "--model-output-path")


def _list_dir(directory: str) -> str:
    try:
        names = sorted(os.listdir(directory))
    except OSError as e:
        return f"it cannot be listed ({e.strerror})"
    if not names:
        return "the directory is empty"
    shown = ", ".join(names[:MAX_LISTED_FILES])
    more = len(names) - MAX_LISTED_FILES
    return f"it contains: {shown}" + (f" (and {more} more)" if more > 0 else "")


def evaluate(args: argparse.Namespace) -> None:
    output: str = args.metrics_output
    out_dir: str = args.output_dir
    script: str = args.script
    remove_path(output)
    os.makedirs(out_dir, exist_ok=True)
    metrics_file = os.path.join(out_dir, "metrics.json")
    remove_path(metrics_file)
    failed = read_failed_model(args.model) if os.path.isfile(args.model) else None
    if failed is not None:
        raise FailedModel(
            f"the model {args.model} is the failure record of {failed['target']}, "
            f"whose {failed['stage']} step failed: {failed['error']}"
        )
    with data_path(args.data, "test_data") as data:
        run_script(
            "evaluate",
            script,
            args.python_script,
            args.pythonpath,
            ["--model-path", args.model, "--data-path", data, "--output-dir", out_dir],
            args.timeout,
        )
    check_output_dir("evaluate", script, out_dir)
    if os.path.lexists(metrics_file):
        check_output_file(
            "evaluate", script, metrics_file, "metrics.json", "--output-dir"
        )
    else:
        raise OutputContractError(
            f"evaluate script {script} exited 0 but wrote no metrics.json in {out_dir} "
            f"({_list_dir(out_dir)}); the script must write DIR/metrics.json where DIR "
            "is the path given by --output-dir"
        )
    try:
        with open(metrics_file, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise OutputContractError(
            f"evaluate script {script} wrote {metrics_file} that is not UTF-8 text"
        ) from None
    try:
        metrics = parse_metrics(text)
    except ContractError as e:
        raise OutputContractError(
            f"evaluate script {script} wrote an invalid {metrics_file}: {e}\n"
            'Expected a JSON object mapping metric names to finite numbers, e.g. {"accuracy": 0.97}'
        ) from None
    write_atomic(output, format_metrics(metrics))


# ---------------------------------------------------------------------------
# Failure records (--allow-failure)


def failure_record(stage: str, target: str, error: RunnerError) -> FailureRecord:
    """The record of a trial that failed with `error` in `stage`."""
    returncode = error.returncode if isinstance(error, ScriptFailed) else None
    if isinstance(error, OutputContractError):
        returncode = 0  # the script exited 0 but broke the contract
    return {
        "status": "failed",
        "stage": stage,
        "target": target,
        "exit_code": returncode if returncode is None or returncode >= 0 else None,
        "signal": _signal_name(returncode)
        if returncode is not None and returncode < 0
        else None,
        "error": str(error),
        "stderr_tail": error.stderr_tail if isinstance(error, ScriptFailed) else "",
    }


def format_failure(record: FailureRecord) -> str:
    """The canonical JSON text of a failure record."""
    return json.dumps(record, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def parse_failure(data: Any) -> FailureRecord | None:
    """The failure record in parsed JSON `data`, or None if it is not one."""
    if not isinstance(data, dict) or data.get("status") != "failed":
        return None
    fields = {"stage": str, "target": str, "error": str, "stderr_tail": str}
    for key, kind in fields.items():
        if not isinstance(data.get(key), kind):
            raise ContractError(f"a failure record needs a string {json.dumps(key)}")
    for key in ("exit_code", "signal"):
        value = data.get(key)
        if value is not None and not isinstance(
            value, int if key == "exit_code" else str
        ):
            raise ContractError(f"a failure record has an invalid {json.dumps(key)}")
    return {
        "status": "failed",
        "stage": data["stage"],
        "target": data["target"],
        "exit_code": data.get("exit_code"),
        "signal": data.get("signal"),
        "error": data["error"],
        "stderr_tail": data["stderr_tail"],
    }


def parse_metrics_or_failure(
    text: str,
) -> tuple[dict[str, float | int], FailureRecord | None]:
    """Parse an evaluation's metrics file: (metrics, None), or ({}, failure record)."""
    failure = parse_failure(_load_json(text))
    return ({}, failure) if failure is not None else (parse_metrics(text), None)


def read_failed_model(path: str) -> FailureRecord | None:
    """The failure record a failed training left as its model file, or None."""
    with open(path, "rb") as f:
        if f.read(len(FAILED_MODEL_HEADER)) != FAILED_MODEL_HEADER:
            return None
        text = f.read().decode("utf-8", errors="replace")
    try:
        failure = parse_failure(_load_json(text))
    except ContractError:
        failure = None
    if failure is None:
        raise ContractError(f"model {path} starts like a failure record but is not one")
    return failure


def record_failure(args: argparse.Namespace, error: RunnerError) -> None:
    """Write the failure record in place of the command's output."""
    if args.command == "train":
        init = args.init_model
        failed_init = read_failed_model(init) if init and os.path.isfile(init) else None
        record = failed_init or failure_record("train", args.target, error)
        remove_path(args.model_output)
        os.makedirs(os.path.dirname(args.model_output) or ".", exist_ok=True)
        with open(args.model_output, "wb") as f:
            f.write(FAILED_MODEL_HEADER + format_failure(record).encode("utf-8"))
    else:
        failed_model = (
            read_failed_model(args.model) if os.path.isfile(args.model) else None
        )
        record = failed_model or failure_record("evaluate", args.target, error)
        os.makedirs(args.output_dir, exist_ok=True)
        write_atomic(args.metrics_output, format_failure(record))


# ---------------------------------------------------------------------------
# Command line


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(
            f"expected a positive number of seconds, got {text}"
        )
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runner.py", description="databazel action runner"
    )
    # A top-level entry of site-packages the script may import (of the
    # packages in `deps`): a warm worker (worker.py) links exactly these.
    parser.add_argument("--site-package", action="append", default=[])
    commands = parser.add_subparsers(dest="command", required=True)
    train_cmd = commands.add_parser("train")
    train_cmd.add_argument("--hyperparams-file", required=True)
    train_cmd.add_argument("--model-output", required=True)
    train_cmd.add_argument("--epoch", type=_positive_int, default=None)
    train_cmd.add_argument("--init-model", default=None)
    eval_cmd = commands.add_parser("evaluate")
    eval_cmd.add_argument("--model", required=True)
    eval_cmd.add_argument("--metrics-output", required=True)
    eval_cmd.add_argument("--output-dir", required=True)
    for cmd in (train_cmd, eval_cmd):
        cmd.add_argument("--target", required=True)
        cmd.add_argument("--data", action="append", required=True)
        cmd.add_argument("--script", required=True)
        cmd.add_argument("--python-script", action="store_true")
        cmd.add_argument("--pythonpath", action="append", default=[])

        cmd.add_argument("--timeout", type=_positive_seconds, default=None)
        cmd.add_argument("--allow-failure", action="store_true")
    return parser


def expand_argv(argv: list[str]) -> list[str]:
    """The arguments, with a last `@FILE` (Bazel's params file) replaced by its lines.

    Bazel passes the arguments in a params file, one per line, so that the
    same action can also run in a persistent worker.
    """
    if argv and argv[-1].startswith("@"):
        with open(argv[-1][1:], encoding="utf-8") as f:
            return argv[:-1] + f.read().splitlines()
    return argv


# Variables of `env` that change where Python finds modules: the worker's own
# process starts without them (its scripts get them back, see worker.py).
_WORKER_UNSAFE_ENV = (
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PYTHONUSERBASE",
    "PYTHONEXECUTABLE",
    "PYTHONPLATLIBDIR",
    "PYTHONSAFEPATH",
    "PYTHONINSPECT",
)
WORKER_SAVED_ENV = "DATABAZEL_WORKER_SAVED_ENV"


def _reexec_worker(argv: list[str]) -> None:
    """Start the worker again without -I, so that its scripts get `env`'s PYTHON*.

    A sandboxed script is a new interpreter that honours PYTHONHASHSEED,
    PYTHONUTF8, PYTHONWARNINGS, ...; a forked one inherits the worker's, so
    the worker must honour them too. Those that would change the runner's own
    imports are set aside and given back to the scripts.
    """
    env = dict(os.environ)
    saved = {k: env.pop(k) for k in _WORKER_UNSAFE_ENV if k in env}
    env[WORKER_SAVED_ENV] = json.dumps(saved)
    os.execve(
        sys.executable, [sys.executable, "-S", os.path.abspath(__file__), *argv], env
    )


def main(argv: list[str] | None = None) -> int:
    argv = expand_argv(sys.argv[1:] if argv is None else argv)
    if "--persistent_worker" in argv:
        if sys.flags.isolated:
            _reexec_worker(argv)
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import worker  # beside this file; only warm runs need it

        site = [v for k, v in zip(argv, argv[1:]) if k == "--site-package"]
        return worker.serve(
            sys.modules[__name__], site, sys.stdin.buffer, sys.stdout.buffer
        )
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    finally:
        if args.command == "evaluate":
            # Whatever happened, Bazel may move the directory: nothing in it
            # may block or fail that (a FIFO, a socket) or point elsewhere.
            remove_special_entries(args.output_dir)


def _run(args: argparse.Namespace) -> int:
    output: str = args.model_output if args.command == "train" else args.metrics_output
    try:
        try:
            if args.command == "train":
                train(args)
            else:
                evaluate(args)
            return 0
        except RunnerError as e:
            if not args.allow_failure:
                raise
            record_failure(args, e)
            print(
                f"databazel: warning: {args.target}: the trial failed; recorded as "
                f"its result (allow_failure): {str(e).splitlines()[0]}",
                file=sys.stderr,
            )
            return 0
    except (RunnerError, OSError) as e:
        message = str(e)
    except SystemExit as e:
        # Stopped by a signal (see _wait): leave no output behind.
        remove_path(output)
        if isinstance(e.code, int) and e.code > 128:
            print(
                error_line(
                    args.target,
                    f"the databazel runner was told to stop (signal "
                    f"{_signal_name(128 - e.code)}); it stopped the {args.command} "
                    "script and every process it started",
                ),
                file=sys.stderr,
            )
        raise
    except Exception as e:  # noqa: BLE001 - any failure is one error, never a traceback
        message = f"internal error in the databazel runner: {type(e).__name__}: {e}"
    remove_path(output)
    print(error_line(args.target, message), file=sys.stderr)
    return 1


# The write end of a pipe to the guard (see guarded_main), which the runner
# tells the script's process id.
_guard_pipe: int | None = None


def _tell_guard(pid: int) -> None:
    if _guard_pipe is not None:
        with contextlib.suppress(OSError):
            os.write(_guard_pipe, f"{pid}\n".encode())


def guarded_main() -> int:
    """Run main() in a child process and report it if that child is killed.

    A script can kill its runner (for example `os.kill(os.getppid(), SIGKILL)`),
    which then cannot say anything.  The guard is the process Bazel started:
    it passes SIGTERM, SIGINT and SIGHUP on to the runner, and when the runner
    dies of any other signal it stops the script, removes the outputs and
    prints the error line the runner could not.
    """
    global _guard_pipe
    argv = expand_argv(sys.argv[1:])
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
    for flag in ("--model-output", "--metrics-output"):
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
            f"the databazel runner was killed by signal {_signal_name(-killed_by)} "
            f"while it ran the {command} script; something killed it, most "
            "likely the script itself (for example by signalling its parent "
            "process) or the system's out-of-memory killer",
        ),
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(guarded_main())
