"""Isolating a script the way Bazel's Linux sandbox does, with Linux namespaces.

Bazel sandboxes an action it runs as a new process (``linux-sandbox``), but
not a request to a persistent worker, nor an action of the ``local``
strategy.  There databazel isolates the script itself, in the process that
runs it:

* **What it sees of the execroot.**  A private execroot holds a link to each
  input of the action (the script, its data, the files of ``deps`` and
  ``data``, the declared distributions of site-packages) and empty
  directories for its outputs; in a new mount namespace it is mounted over
  the execroot's path, so the script's relative and absolute paths reach
  exactly the inputs.  A file that is not an input does not exist.  Outputs
  are moved to the real execroot only after the script exited 0.
* **What it may write.**  Every other mount is read-only; ``/tmp`` and
  ``/dev/shm`` are new, empty and private to the trial.  Nothing a trial
  writes reaches the worker (its site directory, its module list), the
  environment's packages or a later trial.
* **Network.**  Without ``network = True`` the script gets a network
  namespace of its own, with only a loopback interface: it reaches no host,
  not even this machine's ``127.0.0.1``.
* **Processes.**  The script runs as the second process of a new PID
  namespace under a small init (``_init``), which reaps orphans; when the
  script exits, or its runner or worker dies (``PR_SET_PDEATHSIG``), the
  kernel kills every process left in the namespace (a daemon included).
  ``/proc`` shows only the namespace.  The script has no capabilities, so it
  cannot undo any of this.

For a user who is not root, a user namespace (the user mapped to itself)
gives the rights to make the other namespaces, as in Bazel's sandbox.
Without user namespaces, `IsolationError` says what to change.

One module, past 450 lines, for one job: the namespaces, the mounts of the
view and the helper process that enters them must change together (each
relies on the order the others set up), and splitting them would only move
that order into the imports.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import fcntl
import json
import os
import shutil
import signal
import socket
import struct
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from typing import NoReturn


class IsolationError(Exception):
    """The namespaces of an isolated trial could not be set up."""


CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MOUNT_ATTR_RDONLY = 0x1
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
# mount_setattr(2), Linux 5.12; one number on every architecture.
SYS_MOUNT_SETATTR = 442
PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

_libc: ctypes.CDLL | None = None


def _c() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _mount(
    source: str | None,
    target: str,
    fstype: str | None,
    flags: int,
    data: str | None = None,
) -> None:
    _check(
        _c().mount(
            None if source is None else os.fsencode(source),
            os.fsencode(target),
            None if fstype is None else fstype.encode(),
            ctypes.c_ulong(flags),
            None if data is None else data.encode(),
        ),
        f"mount {target}",
    )


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def _set_read_only(path: str, read_only: bool, recursive: bool) -> None:
    attr = _MountAttr(
        attr_set=MOUNT_ATTR_RDONLY if read_only else 0,
        attr_clr=0 if read_only else MOUNT_ATTR_RDONLY,
    )
    result = _c().syscall(
        ctypes.c_long(SYS_MOUNT_SETATTR),
        ctypes.c_int(AT_FDCWD),
        os.fsencode(path),
        ctypes.c_uint(AT_RECURSIVE if recursive else 0),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )
    if result != 0 and ctypes.get_errno() == errno.ENOSYS and read_only:
        _remount_each_read_only(path)
        return
    _check(result, f"mount_setattr {path}")


def _remount_each_read_only(top: str) -> None:
    """For kernels before 5.12: remount every mount under `top` read-only, one by one."""
    keep = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC}
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        mounts = [line.split() for line in f]
    for fields in sorted(mounts, key=lambda m: m[4]):
        point = fields[4].encode().decode("unicode_escape")
        if point != top and not point.startswith(top.rstrip("/") + "/"):
            continue
        flags = MS_REMOUNT | MS_BIND | 0x1  # MS_RDONLY
        for option in fields[5].split(","):
            flags |= keep.get(option, 0)
        with contextlib.suppress(OSError):  # an unmountable view (a lazy autofs)
            _mount(None, point, None, flags)


def _prctl(option: int, arg: int) -> int:
    return int(
        _c().prctl(
            ctypes.c_int(option),
            ctypes.c_ulong(arg),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
        )
    )


def parent_death_signal(sig: int) -> None:
    """Have the kernel send `sig` to this process when its parent (thread) ends."""
    _prctl(PR_SET_PDEATHSIG, sig)


def die_with_parent(parent: int) -> None:
    """SIGKILL this process when its parent dies (and now, if it already has).

    `parent` is what getppid() returns while the parent lives.
    """
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


def drop_privileges() -> None:
    """No capabilities, now or after an exec (root included), and no new ones."""
    for cap in range(64):
        if _prctl(PR_CAPBSET_DROP, cap) != 0:
            break  # past the last capability this kernel knows
    _c().prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    _check(_c().capset(header, data), "capset")


# Directories every trial may write, each a private overlay of what is there:
# it reads what the machine has, and what it writes is gone when it ends.
PRIVATE_DIRS = ("/tmp", "/dev/shm")


def _fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def _private_overlay(path: str, lower: int) -> None:
    """Mount over `path` an overlay of it (`lower`, a descriptor) on a new tmpfs."""
    _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")
    for name in ("upper", "work"):
        os.mkdir(os.path.join(path, name))
    os.chmod(os.path.join(path, "upper"), os.stat(_fd_path(lower)).st_mode & 0o7777)
    _mount(
        "overlay",
        path,
        "overlay",
        MS_NOSUID | MS_NODEV,
        f"lowerdir={_fd_path(lower)},upperdir={path}/upper,workdir={path}/work",
    )


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", IFF_UP))


# ---------------------------------------------------------------------------
# What the script sees


SITE_PACKAGES = "/site-packages/"


def site_package_entry(path: str) -> str:
    """`.../site-packages/numpy` for a file of package numpy; the path itself otherwise."""
    i = path.find(SITE_PACKAGES)
    if i < 0:
        return path
    end = i + len(SITE_PACKAGES)
    return path[:end] + path[end:].split("/")[0]


@dataclasses.dataclass
class View:
    """What an isolated script sees: paths relative to the execroot (its working directory)."""

    inputs: list[str]
    outputs: list[str]
    output_dirs: list[str]
    network: bool = False


def runfiles_inputs(executable: str, execroot: str) -> list[str]:
    """The files of an executable's runfiles tree that live in the execroot.

    A runfiles tree is a directory of links to the absolute paths of its
    files; in the private execroot those paths must lead to links too.
    """
    manifest = executable + ".runfiles/MANIFEST"
    if not os.path.isfile(manifest):
        manifest = executable + ".runfiles_manifest"
    found = []
    with contextlib.suppress(OSError):
        with open(manifest, encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                _, _, target = line.rstrip("\n").partition(" ")
                if target.startswith(execroot + os.sep):
                    found.append(site_package_entry(os.path.relpath(target, execroot)))
    return found


def state_root(execroot: str) -> str:
    """Where isolated trials keep their private execroots: beside the execroot.

    Not in /tmp or /dev/shm, which every trial gets empty, and on the file
    system of the outputs, so that moving one out is a rename.
    """
    return os.path.join(os.path.dirname(os.path.dirname(execroot)), "databazel-sandbox")


class Sandbox:
    """A private execroot for one script, and the namespaces it runs in."""

    def __init__(self, view: View, execroot: str, directory: str) -> None:
        self.view = view
        self.execroot = execroot
        self.directory = directory
        self.root = os.path.join(directory, "root")
        self.real = os.path.join(directory, "real")
        # Where databazel's own code in the script's process writes what the
        # worker reads afterwards (worker.py: the modules it imported).
        self.report = os.path.join(directory, "report")
        self.network = view.network

    @classmethod
    def create(cls, view: View, execroot: str | None = None) -> Sandbox:
        execroot = execroot or os.getcwd()
        base = state_root(execroot)
        os.makedirs(base, mode=0o700, exist_ok=True)
        directory = tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=base)
        box = cls(view, execroot, directory)
        try:
            box._populate()
        except BaseException:
            box.remove()
            raise
        return box

    def _populate(self) -> None:
        os.mkdir(self.real)
        os.mkdir(self.root)
        os.mkdir(self.report)
        made: set[str] = set()

        def parent_of(rel: str) -> str:
            parent = os.path.join(self.root, os.path.dirname(rel))
            if parent not in made:
                os.makedirs(parent, exist_ok=True)
                made.add(parent)
            return parent

        linked: set[str] = set()
        for rel in sorted({os.path.normpath(p) for p in self.view.inputs}):
            if rel.startswith("..") or os.path.isabs(rel) or rel == ".":
                continue
            # Inside an entry linked already (a distribution's directory): seen.
            parent = os.path.dirname(rel)
            while parent and parent not in linked:
                parent = os.path.dirname(parent)
            if parent:
                continue
            parent_of(rel)
            os.symlink(os.path.join(self.real, rel), os.path.join(self.root, rel))
            linked.add(rel)
        for rel in self.view.outputs:
            parent_of(os.path.normpath(rel))
        for rel in self.view.output_dirs:
            os.makedirs(os.path.join(self.root, os.path.normpath(rel)), exist_ok=True)

    def enter(self) -> None:
        """In the forked process that will start the script: the namespaces and mounts.

        Afterwards the working directory is the private execroot and the next
        fork starts PID 1 of the new PID namespace.
        """
        uid, gid = os.getuid(), os.getgid()
        flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC
        if not self.network:
            flags |= CLONE_NEWNET
        if uid != 0:
            flags |= CLONE_NEWUSER
        try:
            _check(_c().unshare(ctypes.c_int(flags)), "unshare")
            if uid != 0:
                for name, text in (
                    ("setgroups", "deny"),
                    ("uid_map", f"{uid} {uid} 1"),
                    ("gid_map", f"{gid} {gid} 1"),
                ):
                    with open(f"/proc/self/{name}", "w", encoding="ascii") as f:
                        f.write(text)
            _mount(None, "/", None, MS_REC | MS_PRIVATE)
            # Paths as they are now: /tmp's overlay (below) hides mounts under it.
            fds = {
                path: os.open(path, os.O_PATH | os.O_DIRECTORY)
                for path in (self.execroot, self.root, self.report, *PRIVATE_DIRS)
                if os.path.isdir(path)
            }
            _set_read_only("/", True, recursive=True)
            for private in PRIVATE_DIRS:
                if private in fds:
                    _private_overlay(private, fds[private])
            _mount(_fd_path(fds[self.execroot]), self.real, None, MS_BIND | MS_REC)
            for source, target in (
                (self.root, self.execroot),
                (self.report, self.report),
            ):
                _mount(_fd_path(fds[source]), target, None, MS_BIND)
                _set_read_only(target, False, recursive=False)
            for fd in fds.values():
                os.close(fd)
            os.chdir(self.execroot)
            if not self.network:
                _loopback_up()
        except OSError as e:
            detail = e.strerror or str(e)
            raise IsolationError(
                f"{detail}: {e.filename}" if e.filename else detail
            ) from None

    def collect(self) -> None:
        """Move the outputs the script wrote to the real execroot (after it exited 0)."""
        for rel in [*self.view.outputs, *self.view.output_dirs]:
            source = os.path.join(self.root, rel)
            if not os.path.lexists(source):
                continue
            destination = os.path.join(self.execroot, rel)
            if os.path.isdir(destination) and not os.path.islink(destination):
                shutil.rmtree(destination)
            elif os.path.lexists(destination):
                os.unlink(destination)
            os.makedirs(os.path.dirname(destination) or ".", exist_ok=True)
            os.rename(source, destination)

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    def to_argument(self) -> str:
        """This sandbox as one argument of `python isolation.py` (see main)."""
        return json.dumps(
            {
                "view": dataclasses.asdict(self.view),
                "execroot": self.execroot,
                "directory": self.directory,
            }
        )

    @classmethod
    def from_argument(cls, text: str) -> Sandbox:
        data = json.loads(text)
        return cls(View(**data["view"]), data["execroot"], data["directory"])


def remove_stale(execroot: str) -> None:
    """Remove the private execroots of processes that died before removing theirs."""
    base = state_root(execroot)
    with contextlib.suppress(OSError):
        for name in os.listdir(base):
            pid = name.split("-", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(os.path.join(base, name), ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------------
# Running the script in it


def _init(child: int, status_pipe: int) -> NoReturn:
    """PID 1 of the trial's namespace: reap every process, report the script's status."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(
            sig, signal.SIG_IGN
        )  # the script gets its own (one process group)
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(1)
        if pid == child:
            os.write(status_pipe, str(status).encode())
            os._exit(0)


def run_isolated(
    sandbox: Sandbox | None, start: Callable[[], int], parent: int
) -> NoReturn:
    """In a process forked to run a script: isolate it, run `start()`, exit as it did.

    `start` runs in the script's process and returns its exit code (it may
    also exec). This process ends as the script ended: with its exit code, or
    killed by the same signal. `parent` is the process that forked this one.
    """
    code = 1
    try:
        die_with_parent(parent)
        if sandbox is None:
            os._exit(start() & 0xFF)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        me = os.getpid()
        try:
            sandbox.enter()
        except IsolationError as e:
            os.write(2, f"{FAILURE_PREFIX}{e}\n".encode())
            os._exit(ISOLATION_FAILED)
        read_end, write_end = os.pipe()
        init = os.fork()
        if init == 0:
            os.close(read_end)
            die_with_parent(0)  # its parent is outside its PID namespace
            _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            script = os.fork()
            if script == 0:
                os.close(write_end)
                die_with_parent(1)
                for sig in (signal.SIGTERM, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                drop_privileges()
                code = start()
                os._exit(code & 0xFF)
            _init(script, write_end)
        os.close(write_end)
        _, init_status = os.waitpid(init, 0)
        with os.fdopen(read_end, "rb") as f:
            reported = f.read()
        if not reported:
            os._exit(128 + signal.SIGKILL if os.WIFSIGNALED(init_status) else 1)
        status = int(reported)
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            signal.signal(sig, signal.SIG_DFL)
            os.kill(me, sig)
        code = os.waitstatus_to_exitcode(status)
    except BaseException:  # noqa: BLE001 - a forked process never returns
        with contextlib.suppress(BaseException):
            import traceback

            traceback.print_exc()
    os._exit(code & 0xFF)


# The exit code of a forked process whose namespaces could not be made (the
# runner turns it into an IsolationError naming the cause).
ISOLATION_FAILED = 125
FAILURE_PREFIX = "databazel: isolation: "


def exec_command(
    command: Sequence[str], env: dict[str, str], pass_fds: Iterable[int] = ()
) -> int:
    """`start` for a script that is a program: exec it (stdin, stdout, stderr as set)."""
    for fd in pass_fds:
        os.set_inheritable(fd, True)
    try:
        os.execve(command[0], list(command), env)
    except OSError as e:
        os.write(2, f"databazel: cannot run {command[0]}: {e}\n".encode())
        return 127


# ---------------------------------------------------------------------------
# Where isolation is databazel's job


def bazel_sandboxed(directory: str) -> bool:
    """Whether `directory` is the execroot of Bazel's Linux sandbox, which isolates the action."""
    return f"{os.sep}linux-sandbox{os.sep}" in directory + os.sep


def unsandboxed_execroot(directory: str) -> bool:
    """Whether `directory` is an execroot Bazel did not isolate on this machine.

    The output base's own execroot (the ``local`` strategy) and the
    process-wrapper sandbox, which isolates neither network nor processes.
    A remote executor's directory is neither: isolating there is its job.
    """
    if f"{os.sep}processwrapper-sandbox{os.sep}" in directory + os.sep:
        return True
    output_base = os.path.dirname(os.path.dirname(directory))
    return os.path.basename(os.path.dirname(directory)) == "execroot" and os.path.isdir(
        os.path.join(output_base, "action_cache")
    )


def main(argv: list[str]) -> NoReturn:
    """`isolation.py SANDBOX COMMAND...`: run COMMAND in the sandbox (a populated `Sandbox`).

    How a process with threads, which must not fork, starts an isolated script:
    this new interpreter is the process that sets up the namespaces.
    """
    sandbox = Sandbox.from_argument(argv[0])
    command = argv[1:]
    env = dict(os.environ)
    run_isolated(sandbox, lambda: exec_command(command, env), os.getppid())


if __name__ == "__main__":
    main(sys.argv[1:])
