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

On a machine shared by several users nothing another user can write decides
which GPUs a trial gets (``check_lock_dir``): the lock directory (and each
directory above it) must be owned by root or by the user, and sticky if
others may write in it; ``devices`` must be a regular file owned by root or
the user that no one else may write.  Symbolic links, FIFOs and devices are
never opened as lock files or GPU lists.  In Bazel's sandbox (a user
namespace that maps only the user's uid) root's files and other users' look
alike: there a directory of an unmapped owner passes as root's (it can hold
or free GPUs, not choose them), a GPU list does not.  Root creates the
default directory with mode 1777 (shared by every user, as ``/tmp`` is);
another user creates it with mode 0755 (their own: others are told so and
how to share it).  A trial waits for its GPUs at most its target's
``timeout`` (without one, ``DATABAZEL_GPU_WAIT`` seconds of its ``env``,
3600 by default; 0: no limit), then fails naming the GPUs and the processes
that hold them; these failures are ``MachineError``s, never recorded as a
trial's result.

Which GPU a trial ran on is decided at run time, outside the action: it is
never part of the cache key.  A trial without ``gpus`` gets
``CUDA_VISIBLE_DEVICES=""`` (no GPU, as Ray gives a task with ``num_gpus=0``)
unless its ``env`` sets the variable.

One module, past 450 lines, for one job: finding the GPUs, the lock files
shared with other builds on the machine and the wait for free ones are one
protocol, and its messages name who holds what.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import fcntl
import os
import pwd
import re
import stat
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

from contract import MachineError

LOCK_DIR_VARIABLE = "DATABAZEL_GPU_LOCK_DIR"
DEFAULT_LOCK_DIR = "/tmp/databazel-gpus"
DEVICES_FILE = "devices"
VISIBLE = "CUDA_VISIBLE_DEVICES"
WAIT_VARIABLE = "DATABAZEL_GPU_WAIT"
DEFAULT_WAIT_SECONDS = 3600.0

# How often a trial waiting for a GPU tries again, and how often it says so.
POLL_SECONDS = 0.2
NOTICE_SECONDS = 60.0
# A devices file is a short list of ids.
MAX_DEVICES_BYTES = 64 * 1024

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def lock_dir(environ: Mapping[str, str] = os.environ) -> str:
    return environ.get(LOCK_DIR_VARIABLE) or DEFAULT_LOCK_DIR


def wait_limit(
    timeout: float | None, environ: Mapping[str, str] = os.environ
) -> tuple[float | None, str]:
    """How long a trial may wait for its GPUs (None: no limit), and what says so."""
    if timeout:
        return timeout, f"the target's timeout of {timeout:g} s"
    text = environ.get(WAIT_VARIABLE)
    if text is None or text == "":
        return DEFAULT_WAIT_SECONDS, (
            f"the default of {DEFAULT_WAIT_SECONDS:g} s for a target without "
            f"`timeout` ({WAIT_VARIABLE} in `env` changes it)"
        )
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise MachineError(
            f"{WAIT_VARIABLE} in `env` must be a number of seconds (0: wait without "
            f"limit), got {text!r}"
        )
    return (seconds or None), f"{WAIT_VARIABLE} = {text} of the target's `env`"


def _read_int(path: str, default: int) -> int:
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return default


@functools.cache
def _id_map() -> tuple[set[int], int | None]:
    """The uids root's files show here, and the uid of users this namespace does not map.

    Bazel's linux-sandbox runs an action in a user namespace that maps only
    the user's own uid: the files of every other user, root included, show
    the overflow uid (65534). Outside a user namespace: ({0}, None).
    """
    try:
        with open("/proc/self/uid_map", encoding="ascii") as f:
            ranges = [tuple(map(int, line.split())) for line in f if line.strip()]
    except (OSError, ValueError):
        return {0}, None
    if ranges == [(0, 0, 4294967295)]:
        return {0}, None
    overflow = _read_int("/proc/sys/kernel/overflowuid", 65534)
    for inner, outer, count in ranges:
        if outer <= 0 < outer + count:
            return {inner - outer}, overflow
    # Root is not mapped: its files look like anyone else's.
    return {overflow}, overflow


def _who(uid: int) -> str:
    if uid == _id_map()[1]:
        return (
            f"a user this action's sandbox does not map (all of them show uid {uid} "
            "there)"
        )
    try:
        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a Unix socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return kind
    return "not a regular file"


def _trusted_owner(uid: int) -> bool:
    """Owned by this user or by root (for a directory: what might be root's, in a sandbox)."""
    return uid == os.geteuid() or uid in _id_map()[0]


def _trusted_list_owner(uid: int) -> bool:
    """Owned by this user or by root, known for sure: the GPU list decides, unlike a directory."""
    return uid == os.geteuid() or (uid in _id_map()[0] and uid != _id_map()[1])


def _directory_problem(st: os.stat_result) -> str | None:
    """Why another user could change what this directory holds (None: no one can)."""
    if not stat.S_ISDIR(st.st_mode):
        return f"is {_kind(st.st_mode)}, not a directory"
    if not _trusted_owner(st.st_uid):
        return f"is owned by {_who(st.st_uid)}, not by you or root"
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022 and not mode & stat.S_ISVTX:
        return (
            f"is writable by other users (mode {mode:04o}) and not sticky: any of "
            "them could replace its lock files"
        )
    return None


def _lock_dir_error(directory: str, problem: str) -> MachineError:
    return MachineError(
        f"the GPU lock directory {directory} {problem}; another user could choose "
        "or hold your trials' GPUs. Remove it (or have its owner do so), have root "
        f"create it for every user (`install -d -m 1777 {directory}`), or set "
        f"{LOCK_DIR_VARIABLE} in the target's `env` to a directory of your own"
    )


def check_lock_dir(directory: str) -> None:
    """Fails unless only root and this user can change `directory`; creates it if missing.

    Each directory above it is checked the same way (a sticky `/tmp` passes).
    """
    path = os.path.abspath(directory)
    parent = os.path.dirname(path)
    ancestor = "/"
    for part in [p for p in os.path.realpath(parent).split("/") if p]:
        ancestor = os.path.join(ancestor, part)
        try:
            problem = _directory_problem(os.stat(ancestor))
        except OSError as e:
            raise MachineError(
                f"cannot use the GPU lock directory {directory}: {ancestor}: {e.strerror}"
            ) from None
        if problem:
            raise _lock_dir_error(directory, f"is in {ancestor}, which {problem}")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        mode = 0o1777 if os.geteuid() == 0 else 0o755
        try:
            os.mkdir(path, mode)
            os.chmod(path, mode)  # not narrowed by the umask
        except FileExistsError:
            pass
        except OSError as e:
            raise MachineError(
                f"cannot create the GPU lock directory {directory}: {e.strerror}; "
                f"set {LOCK_DIR_VARIABLE} in the target's `env` to a directory you "
                "may create"
            ) from None
        st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise _lock_dir_error(directory, "is a symbolic link")
    problem = _directory_problem(st)
    if problem:
        raise _lock_dir_error(directory, problem)


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


def _read_devices(path: str) -> str | None:
    """The text of a devices file only root or this user can write; None if there is none."""
    try:
        fd = os.open(path, _OPEN)
    except FileNotFoundError:
        return None
    except OSError as e:
        problem = "is a symbolic link" if e.errno == errno.ELOOP else e.strerror
        raise MachineError(f"the GPU list {path} {problem}; remove it") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            problem = f"is {_kind(st.st_mode)}"
        elif not _trusted_list_owner(st.st_uid):
            problem = f"is owned by {_who(st.st_uid)}, not by you or root"
        elif stat.S_IMODE(st.st_mode) & 0o022:
            problem = (
                f"is writable by other users (mode {stat.S_IMODE(st.st_mode):04o})"
            )
        else:
            data = f.read(MAX_DEVICES_BYTES + 1)
            if len(data) > MAX_DEVICES_BYTES:
                problem = f"is larger than {MAX_DEVICES_BYTES} bytes"
            else:
                try:
                    return data.decode("utf-8")
                except UnicodeDecodeError:
                    problem = "is not UTF-8 text"
    raise MachineError(
        f"the GPU list {path} {problem}: it is not trusted to choose your trials' "
        "GPUs; remove it (or make it yours, mode 0644)"
    )


def list_gpus(
    directory: str, probe: Callable[[], list[str]] = _nvidia_smi
) -> list[str]:
    """The GPU ids of this machine: `directory`/devices, else nvidia-smi's."""
    path = os.path.join(directory, DEVICES_FILE)
    text = _read_devices(path)
    if text is None:
        ids = probe()
    else:
        ids = [
            line.strip()
            for line in text.splitlines()
            if line.strip() and not line.startswith("#")
        ]
    for gpu in ids:
        if not _SAFE_ID.match(gpu):
            raise MachineError(
                f"GPU id {gpu[:80]!r} (from {path} or nvidia-smi) is not a device "
                "index or UUID"
            )
    return list(dict.fromkeys(ids))


def _open_lock(directory: str, gpu: str) -> int:
    """A read-only descriptor of GPU `gpu`'s lock file, created if need be.

    Lock files are readable by everyone (flock needs no write access), so
    that every user of a shared lock directory can lock them; another user's
    lock file is used as it is, but only if it is a regular file.
    """
    path = os.path.join(directory, gpu + ".lock")
    try:
        fd = os.open(path, _OPEN)
    except FileNotFoundError:
        try:
            made = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _OPEN, 0o644)
            with contextlib.suppress(OSError):
                os.fchmod(made, 0o644)  # not narrowed by the umask
            os.close(made)
        except FileExistsError:
            pass
        except OSError as e:
            raise MachineError(
                f"cannot create the GPU lock file {path}: {e.strerror}; every user of "
                f"a shared lock directory must be able to create files in it (mode "
                f"1777), or set {LOCK_DIR_VARIABLE} in the target's `env` to a "
                "directory of your own"
            ) from None
        return _open_lock(directory, gpu)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise MachineError(
                f"the GPU lock file {path} is a symbolic link; remove it"
            ) from None
        raise MachineError(
            f"cannot open the GPU lock file {path}: {e.strerror}"
        ) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise MachineError(f"the GPU lock file {path} is {_kind(mode)}; remove it")
    return fd


def try_lock(directory: str, gpus: Sequence[str], count: int) -> list[tuple[str, int]]:
    """Locks `count` free GPUs of `gpus`, or none: [(id, descriptor)] or []."""
    held: list[tuple[str, int]] = []
    try:
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
    except BaseException:
        for _, fd in held:
            os.close(fd)
        raise
    for _, fd in held:
        os.close(fd)
    return []


def _process(pid: int) -> str:
    """`pid N (user U: COMMAND LINE)`, as far as /proc shows it."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read(4096).replace(b"\0", b" ").decode("utf-8", "replace")
        uid = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return f"pid {pid} (exited: a process it started holds the lock)"
    command = " ".join(command.split())  # one line, whatever the arguments hold
    if len(command) > 120:
        command = command[:117] + "..."
    return f"pid {pid} ({_who(uid)}: {command})"


def holders(directory: str, gpus: Sequence[str]) -> dict[str, list[str]]:
    """The processes that hold each GPU's lock, by /proc/locks (described as `_process`)."""
    files: dict[tuple[int, int, int], str] = {}
    for gpu in gpus:
        with contextlib.suppress(OSError):
            st = os.stat(os.path.join(directory, gpu + ".lock"), follow_symlinks=False)
            files[(os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)] = gpu
    found: dict[str, list[str]] = {gpu: [] for gpu in gpus}
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return found
    for line in lines:
        fields = line.split()
        if "->" in fields or len(fields) < 6 or fields[1] != "FLOCK":
            continue  # a waiting request, or not a flock
        pid, device = fields[4], fields[5].split(":")
        try:
            key = (int(device[0], 16), int(device[1], 16), int(device[2]))
        except (IndexError, ValueError):
            continue
        gpu = files.get(key)
        if gpu is not None and pid.isdigit():
            found[gpu].append(
                _process(int(pid)) if int(pid) else "a process in another PID namespace"
            )
    return found


def _is_free(directory: str, gpu: str) -> bool:
    fd = _open_lock(directory, gpu)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # and with it the lock, if it was taken
    return True


def _describe_holders(directory: str, gpus: Sequence[str]) -> str:
    held = holders(directory, gpus)
    unseen = (
        "a process this action cannot see (outside its sandbox: `lslocks` on the "
        "host names it)"
    )
    return "; ".join(
        f"{gpu}: free now"
        if _is_free(directory, gpu)
        else f"{gpu}: held by {', '.join(held[gpu]) or unseen}"
        for gpu in gpus
    )


@contextlib.contextmanager
def allocate(
    count: int,
    target: str,
    directory: str,
    probe: Callable[[], list[str]] = _nvidia_smi,
    notice: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    limit: tuple[float | None, str] = (None, "no limit"),
) -> Iterator[tuple[list[str], list[int]]]:
    """Holds `count` GPUs while the block runs: yields (their ids, the lock descriptors).

    Waits while fewer than `count` are free, for at most `limit` (seconds or
    None, and what set it, as `wait_limit` gives). Give the descriptors to
    the script (they are close-on-exec), so that the GPUs stay locked until
    it has exited too.
    """
    check_lock_dir(directory)
    gpus = list_gpus(directory, probe)
    if len(gpus) < count:
        found = f"only {len(gpus)} ({', '.join(gpus)})" if gpus else "none"
        raise MachineError(
            f"{target} declares gpus = {count}, and this machine has {found}: "
            "nvidia-smi lists no more (or "
            f"{directory}/{DEVICES_FILE} lists no more); build it on a machine with "
            "the GPUs, remotely on GPU workers, or with fewer `gpus`"
        )
    seconds, source = limit
    started = clock()
    told = started
    while True:
        held = try_lock(directory, gpus, count)
        if held:
            break
        now = clock()
        if seconds is not None and now - started >= seconds:
            raise MachineError(
                f"waited {now - started:.0f} s for {count} of the {len(gpus)} GPUs in "
                f"{directory}, the most {source} allows, and fewer were free; "
                f"{_describe_holders(directory, gpus)}"
            )
        if notice is not None and now - told >= NOTICE_SECONDS:
            told = now
            notice(
                f"{target}: waiting {now - started:.0f} s for {count} of the "
                f"{len(gpus)} GPUs, which other trials hold "
                f"({_describe_holders(directory, gpus)})"
            )
        sleep(POLL_SECONDS)
    try:
        yield [gpu for gpu, _ in held], [fd for _, fd in held]
    finally:
        for _, fd in held:
            with contextlib.suppress(OSError):
                os.close(fd)


def script_environment(
    count: int, ids: Sequence[str], environ: Mapping[str, str]
) -> dict[str, str]:
    """What the runner adds to the script's environment for `count` GPUs (`ids`)."""
    if count:
        return {VISIBLE: ",".join(ids)}
    if VISIBLE in environ:
        return {}  # the target's `env` says which GPUs it may see
    return {VISIBLE: ""}
