"""Writing outputs and checking what a script wrote.

Every output is written atomically (a temporary file, then os.replace), so
that no step leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterable
from typing import Callable

from contract import OutputContractError, RunnerError, error_line

MAX_LISTED_FILES = 10


def replace_atomic(path: str, write: Callable[[str], None]) -> None:
    """Create `path` with `write(tmp)` on a temporary file beside it, then os.replace.

    Whatever fails, `path` is either untouched or complete, and no temporary
    file is left behind.
    """
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(
        dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp"
    )
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_atomic(path: str, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)

    replace_atomic(path, write)


def copy_atomic(source: str, path: str) -> None:
    """Copy `source` byte for byte to `path` atomically."""

    def write(tmp: str) -> None:
        shutil.copyfile(source, tmp)

    replace_atomic(path, write)


def remove_path(path: str) -> None:
    """Remove a file, symlink or directory at `path` if there is one."""
    with contextlib.suppress(OSError):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.unlink(path)


# Bazel opens every output to move, hash and cache it: a FIFO blocks it for
# good, a socket fails the move, and a symbolic link would make whatever it
# points to (a host file, a source file) the cached output.  The runner checks
# outputs with lstat only, never opening them.


def run_tool(
    target: str, tool: str, outputs: Iterable[str], work: Callable[[], None]
) -> int:
    """Run a tool's `work`; if it fails, remove `outputs` and print one error line.

    Returns the exit code: 0, or 1 with every path of `outputs` (read after
    the failure, so `work` may add to it) removed, never half-written.
    """
    try:
        work()
        return 0
    except (RunnerError, OSError) as e:
        message = str(e)
    except Exception as e:  # noqa: BLE001 - any failure is one error, never a traceback
        message = f"internal error in the databazel {tool}: {type(e).__name__}: {e}"
    return fail_without_outputs(target, message, outputs)


def fail_without_outputs(target: str, message: str, outputs: Iterable[str]) -> int:
    """Remove `outputs`, print the error line of `target` and return 1 (the exit code)."""
    for path in outputs:
        remove_path(path)
    print(error_line(target, message), file=sys.stderr)
    return 1


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


def list_dir(directory: str) -> str:
    try:
        names = sorted(os.listdir(directory))
    except OSError as e:
        return f"it cannot be listed ({e.strerror})"
    if not names:
        return "the directory is empty"
    shown = ", ".join(names[:MAX_LISTED_FILES])
    more = len(names) - MAX_LISTED_FILES
    return f"it contains: {shown}" + (f" (and {more} more)" if more > 0 else "")
