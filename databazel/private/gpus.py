"""GPU trials: one GPU per trial at a time, shared by every build on a machine.

A target with ``gpus = N`` runs its script with ``--gpus N``.  Bazel 4.2's
scheduler knows nothing of GPUs, so the runner allocates them itself, just
before it starts the script:

* The machine's GPUs are the lines of ``<lock dir>/devices`` if that file
  exists (a stand-in for tests, or a subset of the GPUs an administrator gives
  databazel), else what ``nvidia-smi --query-gpu=uuid`` lists.
* Each GPU has a lock file ``<lock dir>/<id>.lock``; a trial takes an
  exclusive ``flock`` on N of them (all or none, so that two trials never
  hold half of what each needs), and waits, polling, while fewer are free.
  The lock directory is machine-wide (default ``/tmp/databazel-gpus``, which
  Bazel 4.2's linux-sandbox leaves writable and shared; ``env`` can set
  ``DATABAZEL_GPU_LOCK_DIR``), so builds of every workspace and output base
  share the GPUs.
* The script gets ``CUDA_VISIBLE_DEVICES`` set to its GPUs and inherits the
  locks: they are released when the runner and the script have both exited,
  however they end (flock locks die with the last open descriptor).

Which GPU a trial ran on is decided at run time, outside the action: it is
never part of the cache key.  A trial without ``gpus`` gets
``CUDA_VISIBLE_DEVICES=""`` (no GPU, as Ray gives a task with ``num_gpus=0``)
unless its ``env`` sets the variable.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence

from contract import RunnerError

LOCK_DIR_VARIABLE = "DATABAZEL_GPU_LOCK_DIR"
DEFAULT_LOCK_DIR = "/tmp/databazel-gpus"
DEVICES_FILE = "devices"
VISIBLE = "CUDA_VISIBLE_DEVICES"

# How often a trial waiting for a GPU tries again, and how often it says so.
POLL_SECONDS = 0.2
NOTICE_SECONDS = 60.0

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")


def lock_dir(environ: dict[str, str] | os._Environ[str] = os.environ) -> str:
    return environ.get(LOCK_DIR_VARIABLE) or DEFAULT_LOCK_DIR


def _nvidia_smi() -> list[str]:
    """The UUIDs of the machine's GPUs by nvidia-smi; [] without it."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=uuid", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def list_gpus(
    directory: str, probe: Callable[[], list[str]] = _nvidia_smi
) -> list[str]:
    """The GPU ids of this machine: `directory`/devices, else nvidia-smi's."""
    try:
        with open(os.path.join(directory, DEVICES_FILE), encoding="utf-8") as f:
            ids = [
                line.strip() for line in f if line.strip() and not line.startswith("#")
            ]
    except FileNotFoundError:
        ids = probe()
    except OSError as e:
        raise RunnerError(
            f"cannot read the GPU list {directory}/{DEVICES_FILE}: {e}"
        ) from None
    for gpu in ids:
        if not _SAFE_ID.match(gpu):
            raise RunnerError(
                f"GPU id {gpu!r} (from {directory}/{DEVICES_FILE} or nvidia-smi) is not "
                "a device index or UUID"
            )
    return list(dict.fromkeys(ids))


def _open_lock(directory: str, gpu: str) -> int:
    """A read-only descriptor of GPU `gpu`'s lock file, created if need be.

    The directory and files are writable by everyone (the GPUs are the
    machine's, not a user's); flock needs no write access to the file.
    """
    path = os.path.join(directory, gpu + ".lock")
    with contextlib.suppress(FileNotFoundError):
        return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    if not os.path.isdir(directory):
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory)
            os.chmod(directory, 0o1777)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o666)
        os.close(fd)
    return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)


def try_lock(directory: str, gpus: Sequence[str], count: int) -> list[tuple[str, int]]:
    """Locks `count` free GPUs of `gpus`, or none: [(id, descriptor)] or []."""
    held: list[tuple[str, int]] = []
    for gpu in gpus:
        fd = _open_lock(directory, gpu)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        held.append((gpu, fd))
        if len(held) == count:
            return held
    for _, fd in held:
        os.close(fd)
    return []


@contextlib.contextmanager
def allocate(
    count: int,
    target: str,
    directory: str,
    probe: Callable[[], list[str]] = _nvidia_smi,
    notice: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[tuple[list[str], list[int]]]:
    """Holds `count` GPUs while the block runs: yields (their ids, the lock descriptors).

    Waits while fewer than `count` are free. Give the descriptors to the
    script (they are close-on-exec), so that the GPUs stay locked until it
    has exited too.
    """
    gpus = list_gpus(directory, probe)
    if len(gpus) < count:
        found = f"only {len(gpus)} ({', '.join(gpus)})" if gpus else "none"
        raise RunnerError(
            f"{target} declares gpus = {count}, and this machine has {found}: "
            "nvidia-smi lists no more (or "
            f"{directory}/{DEVICES_FILE} lists no more); build it on a machine with "
            "the GPUs, remotely on GPU workers, or with fewer `gpus`"
        )
    started = clock()
    told = started
    while True:
        held = try_lock(directory, gpus, count)
        if held:
            break
        now = clock()
        if notice is not None and now - told >= NOTICE_SECONDS:
            told = now
            notice(
                f"{target}: waiting {now - started:.0f} s for {count} of the "
                f"{len(gpus)} GPUs, which other trials hold"
            )
        sleep(POLL_SECONDS)
    try:
        yield [gpu for gpu, _ in held], [fd for _, fd in held]
    finally:
        for _, fd in held:
            with contextlib.suppress(OSError):
                os.close(fd)


def script_environment(
    count: int, ids: Sequence[str], environ: dict[str, str]
) -> dict[str, str]:
    """What the runner adds to the script's environment for `count` GPUs (`ids`)."""
    if count:
        return {VISIBLE: ",".join(ids)}
    if VISIBLE in environ:
        return {}  # the target's `env` says which GPUs it may see
    return {VISIBLE: ""}
