"""What the runner says about a script that failed: the tail of its stderr,
how it exited, what to add to `deps` when it could not import a module, and
why the system refused a command line that is too long (E2BIG)."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence

from records import signal_name

TAIL_LINES = 20
TAIL_BYTES = 8 * 1024


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


def indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


_MISSING_MODULE = re.compile(r"ModuleNotFoundError: No module named '([^'.]+)")


# Variables of `env` that change where Python finds its standard library.
_PYTHON_HOME_ENV = ("PYTHONHOME", "PYTHONPLATLIBDIR")


def missing_module_hint(
    stderr_tail: str,
    pythonpath: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> str:
    """What to add to `deps` when the script failed importing a module, else "".

    `pythonpath`: the script's import roots, which name the package
    repositories the target already uses (distributions.py). A module of the
    standard library (`encodings`, when Python cannot even start) is no
    `deps` problem: the hint names the variables of the script's environment
    `env` that moved the standard library, if any.
    """
    found = _MISSING_MODULE.findall(stderr_tail)
    if not found:
        return ""
    module = found[-1]
    if module in sys.stdlib_module_names:
        moved = [f"{k}={env[k]}" for k in _PYTHON_HOME_ENV if env and env.get(k)]
        start = (
            "Python could not start"
            if "Fatal Python error" in stderr_tail
            else "The script could not import a module"
        )
        return (
            f"{start}: it found no `{module}`, a module of its own standard "
            "library (not something `deps` gives); "
            + (
                f"the target's `env` sets {', '.join(moved)}, which points Python "
                "away from it: remove that from `env`."
                if moved
                else "the Python environment's interpreter is incomplete."
            )
        )
    import distributions  # only on this error path: it reads the output base

    providers, hubs = distributions.providers(module, pythonpath)
    if providers:
        also = "".join(f" (or {p.describe()})" for p in providers[1:])
        return (
            f"The script imports `{module}`, which no entry of the target's `deps` "
            f"provides: add {providers[0].describe()}{also} to `deps`."
        )
    where = " of " + " or ".join(f"@{h}" for h in hubs) if hubs else ""
    return (
        f"The script imports `{module}`, which is in none of its `deps`: add the "
        f"py_library that provides it to the target's `deps` (no distribution{where} "
        "provides it: a package must also be in the requirements lock of its repository)."
    )


def exit_description(returncode: int) -> str:
    if returncode < 0:
        return f"was killed by signal {signal_name(returncode)}"
    return f"exited with code {returncode}"


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
