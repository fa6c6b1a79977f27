"""Warm trials: the runner as a Bazel persistent worker.

Bazel starts ``python3 -S runner.py --persistent_worker`` once per worker key
(the runner, the interpreter, the environment variables and the Python
packages of the target: its ``deps`` are the action's tools) and sends it one
``WorkRequest`` per training or evaluation (singleplex, protocol buffers on
stdin/stdout, the protocol Bazel 4.2 speaks without flags).

Each request runs exactly as the runner runs in a sandbox (same argv,
environment, working directory, stdin from /dev/null, timeout, messages and
failure records), except that a plain ``.py`` script is not started as a new
interpreter: the worker forks a child from its pristine parent, which has
imported the target's packages once, and the child runs the script with
``runpy``.  The parent never runs user code, so nothing a trial's script does
(module state, monkeypatching, globals) reaches the next trial.  The parent
learns which package modules the scripts import and imports them itself
between requests, so later trials find them loaded.  With databazel's one
OpenMP/BLAS thread (``OMP_NUM_THREADS=1``), importing numpy, scikit-learn or
torch starts no thread; a package that does start one makes the parent stop
forking (a fork copies no thread, only the locks threads hold): its later
scripts run as new interpreters, still without a runner start-up or a sandbox.

Isolation kept: only the distributions the target declares (the entries of
package directories the runner's ``--site-package`` arguments name:
python_env's site-packages, rules_python's pip repositories) are importable.  Isolation
traded away without ``--worker_sandboxing``: files outside the inputs are
visible, as with any unsandboxed action.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import io
import json
import os
import runpy
import signal
import site
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterable, Sequence
from typing import Any, BinaryIO

import supervise
from wire import fields, read_message, varint

SITE_PACKAGES = "/site-packages/"


# ---------------------------------------------------------------------------
# The worker protocol: length-delimited WorkRequest / WorkResponse messages
# (src/main/protobuf/worker_protocol.proto), the few fields used here, in the
# protocol buffer wire format of wire.py.


class WorkRequest:
    """The arguments and id of a request (its inputs are not used: Bazel 4.2
    leaves the tools out of them, so the packages come as startup arguments)."""

    def __init__(self, data: bytes) -> None:
        self.arguments: list[str] = []
        self.request_id = 0
        for field, value in fields(data):
            if field == 1 and isinstance(value, bytes):
                self.arguments.append(value.decode("utf-8"))
            elif field == 3 and isinstance(value, int):
                self.request_id = value


def encode_response(exit_code: int, output: str, request_id: int) -> bytes:
    body = b""
    if exit_code:
        body += b"\x08" + varint(exit_code)
    if output:
        text = output.encode("utf-8")
        body += b"\x12" + varint(len(text)) + text
    if request_id:
        body += b"\x18" + varint(request_id)
    return varint(len(body)) + body


# ---------------------------------------------------------------------------
# The warm parent and its forked children


class ForkedScript:
    """A script running in a child forked from the warm parent (a Popen look-alike)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.001
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0)
            time.sleep(delay)
            delay = min(delay * 2, 0.02)
        assert self.returncode is not None
        return self.returncode


class WarmParent:
    """The worker's pristine state: the declared packages, imported once."""

    def __init__(self) -> None:
        self.base_path = [p for p in sys.path if p != os.path.dirname(__file__)]
        self.site_dir: str | None = None
        self.package_roots: list[str] = []
        self.stamps: list[tuple[str, int, int, int]] = []
        self.preloaded: set[str] = set()
        # False once the parent has a thread besides its own: forking it would
        # copy locks that thread may hold (an OpenMP or a CUDA runtime's), so
        # scripts then run as new processes, the cold way.
        self.forkable = True
        self.learned_file = os.path.join(
            tempfile.mkdtemp(prefix="databazel-worker-"), "modules.json"
        )

    def prepare(self, site_packages: Sequence[str]) -> None:
        """The declared distributions made importable, and `site`'s builtins.

        The worker's `--site-package` startup arguments (part of the worker
        key) name the top-level entries of the package directories of the
        target's `deps`. Those of a `site-packages` directory (python_env's)
        get one link each in a site directory of their own; a directory that
        holds a distribution's `.dist-info` elsewhere (a rules_python pip
        repository, one distribution each, whose root is on the script's
        PYTHONPATH as in a sandbox) is a package root: the parent imports
        from it too. The other entries are first-party code, never imported
        ahead.
        """
        by_root: dict[str, list[str]] = {}
        for p in site_packages:
            path = os.path.abspath(p)
            by_root.setdefault(os.path.dirname(path), []).append(path)
        entries = {}
        for root, paths in sorted(by_root.items()):
            if root.endswith(SITE_PACKAGES.rstrip("/")):
                entries.update((os.path.basename(p), p) for p in paths)
            elif any(p.endswith(".dist-info") for p in paths):
                self.package_roots.append(root)
        self.stamps = self._stamps(
            [*entries.values(), *(p for r in self.package_roots for p in by_root[r])]
        )
        self.site_dir = os.path.join(
            os.path.dirname(self.learned_file), "site-packages"
        )
        os.makedirs(self.site_dir)
        for top, target in sorted(entries.items()):
            os.symlink(target, os.path.join(self.site_dir, top))
        site.addsitedir(self.site_dir)
        sys.path.extend(self.package_roots)
        # What `site` gives every script, which `python -S` skipped.
        for setup in ("setquit", "setcopyright", "sethelper"):
            getattr(site, setup, lambda: None)()

    @staticmethod
    def _stamps(paths: Iterable[str]) -> list[tuple[str, int, int, int]]:
        """(path, inode, size, mtime) of every distribution's RECORD."""
        out = []
        for path in sorted(paths):
            if path.endswith(".dist-info"):
                with contextlib.suppress(OSError):
                    st = os.stat(os.path.join(path, "RECORD"))
                    out.append((path, st.st_ino, st.st_size, st.st_mtime_ns))
        return out

    def stale(self) -> bool:
        """Whether the environment was re-created since this worker imported from it.

        A package whose version changed has another `.dist-info` name, hence
        another worker; this catches the rest (the same version rebuilt).
        """
        return self._stamps(s[0] for s in self.stamps) != self.stamps

    def learn(self) -> None:
        """Import the package modules the last script imported (never user code)."""
        try:
            with open(self.learned_file, encoding="utf-8") as f:
                names = json.load(f)
            os.unlink(self.learned_file)
        except (OSError, ValueError):
            return
        for name in sorted(set(names) - self.preloaded):
            self.preloaded.add(name)
            with contextlib.suppress(BaseException):
                importlib.import_module(name)
        if thread_count() > 1:
            self.forkable = False

    def launch(
        self,
        script: str,
        script_args: list[str],
        env: dict[str, str],
        stdout: int,
        stderr: int,
    ) -> ForkedScript:
        """Fork a child that runs `script` as `python script ARGS` would."""
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid:
            return ForkedScript(pid)
        code = 1
        try:
            code = self._child(script, script_args, env, stdout, stderr)
        finally:
            os._exit(code)

    def _child(
        self,
        script: str,
        args: list[str],
        env: dict[str, str],
        stdout: int,
        stderr: int,
    ) -> int:
        os.setsid()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(stdout, 1)
        os.dup2(stderr, 2)
        sys.stdin = io.TextIOWrapper(open(0, "rb", closefd=False))
        sys.stdout = io.TextIOWrapper(open(1, "wb", closefd=False))
        sys.stderr = io.TextIOWrapper(
            open(2, "wb", closefd=False), errors="backslashreplace", line_buffering=True
        )
        # A package's import root (py_library `imports`) is the environment's
        # whole site-packages directory; outside a sandbox it would make every
        # installed distribution importable. The declared ones are in site_dir.
        pythonpath = [
            p
            for p in env.get("PYTHONPATH", "").split(os.pathsep)
            if p and not p.rstrip("/").endswith("/site-packages")
        ]
        env = dict(env, PYTHONPATH=os.pathsep.join(pythonpath))
        os.environ.clear()
        os.environ.update(env)
        sys.path[:] = pythonpath + self.base_path + [self.site_dir or ""]
        # The runner's own modules (contract, records, ...) are not the
        # script's: a module of the same name beside the script must import.
        own = os.path.dirname(os.path.abspath(__file__))
        for name, module in list(sys.modules.items()):
            if os.path.dirname(getattr(module, "__file__", None) or "") == own:
                del sys.modules[name]
        sys.argv[:] = [script, *args]
        code = 0
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as e:
            if e.code is None:
                code = 0
            elif isinstance(e.code, int):
                code = e.code
            else:
                print(e.code, file=sys.stderr)
                code = 1
        except BaseException:
            exc_type, value, tb = sys.exc_info()
            assert exc_type is not None and value is not None
            sys.excepthook(exc_type, value, tb)
            code = 1
        with contextlib.suppress(BaseException):
            atexit._run_exitfuncs()
        self._report_modules()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
        return code & 0xFF

    def _report_modules(self) -> None:
        """Tell the parent which package modules this script imported."""
        if not self.site_dir:
            return
        roots = tuple(r + os.sep for r in (self.site_dir, *self.package_roots))
        names = []
        for name, module in list(sys.modules.items()):
            path = getattr(module, "__file__", None) or ""
            if path.startswith(roots) and name not in self.preloaded:
                names.append(name)
        with contextlib.suppress(OSError):
            with open(self.learned_file, "w", encoding="utf-8") as f:
                json.dump(names, f)


def thread_count() -> int:
    """The threads of this process (Linux: every thread, not only Python's)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        import threading

        return threading.active_count()


def serve(
    runner: Any, site_packages: Sequence[str], stdin: BinaryIO, stdout: BinaryIO
) -> int:
    """Answer WorkRequests until Bazel closes stdin; `runner.main(argv)` runs one."""
    # What runner.py set aside to import its own modules safely.
    os.environ.update(json.loads(os.environ.pop(runner.WORKER_SAVED_ENV, "{}")))
    parent = WarmParent()
    parent.prepare(site_packages)
    main = runner.main
    while True:
        data = read_message(stdin)
        if data is None:
            return 0
        request = WorkRequest(data)
        stale = parent.stale()
        # A stale worker answers this request the cold way, then exits, and
        # Bazel starts a new one for the next.
        supervise.SCRIPT_LAUNCHER = (
            parent.launch if parent.forkable and not stale else None
        )
        output = io.StringIO()
        with contextlib.redirect_stderr(output):
            try:
                code = main(request.arguments)
            except SystemExit as e:  # the runner was told to stop
                stdout.write(encode_response(1, output.getvalue(), request.request_id))
                stdout.flush()
                raise e
            except BaseException:  # noqa: BLE001 - reported, the worker goes on
                traceback.print_exc()
                code = 1
        stdout.write(encode_response(code, output.getvalue(), request.request_id))
        stdout.flush()
        if stale:
            return 0
        parent.learn()
