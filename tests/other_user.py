"""Another local user, for the tests of a machine shared with other users.

Running as root, a test starts processes with a uid of no account and no
process (no `useradd`, nothing to clean up in /etc/passwd): to the kernel that
is another user. Without root there is no other uid to be: `needs_root`
skips such tests and says why.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

needs_root = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="needs root: the test acts as a second local user (another uid)",
)

# What another user can run: the system's Python (not .venv's, whose
# interpreter may sit in root's home).
PYTHON = "/usr/bin/python3"


def _free_uid() -> int:
    taken = {entry.pw_uid for entry in pwd.getpwall()}
    running = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                running.add(proc.stat().st_uid)
            except OSError:
                pass
    return next(u for u in range(54000, 60000) if u not in taken | running)


OTHER_UID = _free_uid()


def _as_other(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {
        "user": OTHER_UID,
        "group": OTHER_UID,
        "extra_groups": [],
        "cwd": "/",
        "env": {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
        "stdin": subprocess.DEVNULL,
        **kwargs,
    }


def run(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Runs `args` as the other user; fails the test if it fails."""
    return subprocess.run(
        list(args),
        **_as_other({"capture_output": True, "text": True, "check": True, **kwargs}),
    )


def python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Runs Python `code` (sys.argv[1:] = args) as the other user."""
    return run(PYTHON, "-c", code, *args)


def start_python(code: str, *args: str) -> subprocess.Popen[str]:
    """Starts Python `code` as the other user; stdout is a pipe (text)."""
    return subprocess.Popen(
        [PYTHON, "-c", code, *args],
        **_as_other({"stdout": subprocess.PIPE, "text": True}),
    )


@contextlib.contextmanager
def shared_tmp() -> Iterator[Path]:
    """A new directory like /tmp (root's, mode 1777) where both users can make things.

    Directly under /tmp: pytest's own temporary directories are root's only.
    """
    path = Path(tempfile.mkdtemp(prefix="databazel-shared-", dir="/tmp"))
    try:
        path.chmod(0o1777)
        yield path
    finally:
        shutil.rmtree(path)
