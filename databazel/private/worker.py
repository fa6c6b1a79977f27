"""Warm trials: the runner as a Bazel persistent worker (the default).

Bazel starts ``python3 -S tool.py runner --persistent_worker`` once per worker key
(the runner, the interpreter, the environment variables and the Python
packages of the target: their site-packages entries are the worker's startup
arguments) and sends it one ``WorkRequest`` per training or evaluation
(singleplex, protocol buffers on stdin/stdout, the protocol Bazel 4.2 speaks
without flags).

Each request runs exactly as the runner runs in Bazel's sandbox (same argv,
environment, working directory, stdin from /dev/null, timeout, messages and
failure records), and the script is isolated as in that sandbox
(isolation.py: a private execroot of the action's inputs, read-only file
systems, no network, a PID namespace).  What a worker saves is the start-up:
a plain ``.py`` script is not started as a new interpreter, but forked from
the worker's pristine parent, which has imported the target's packages once,
and run with ``runpy``.  The parent never runs user code, so nothing a
trial's script does (module state, monkeypatching, globals, files) reaches
the next trial.  The parent learns which package modules the scripts import
and imports them itself between requests, so later trials find them loaded.

With databazel's one OpenMP/BLAS thread (``OMP_NUM_THREADS=1``), importing
numpy, scikit-learn or torch starts no thread; a package that does start one
makes the parent stop forking (a fork copies no thread, only the locks
threads hold): its later scripts run as new interpreters, still without a
runner start-up or a sandbox.  So do scripts whose ``env`` sets a ``PYTHON*``
variable that only a new interpreter honours (``PYTHONOPTIMIZE``,
``PYTHONDEVMODE``, ...).
Only the distributions the target declares (the entries of package
directories the runner's ``--site-package`` arguments name: python_env's
site-packages, rules_python's pip repositories) are importable.

One module, past 450 lines, for one job: Bazel's worker protocol, the warm
parent that imports ahead and the forked child per request share the state
of one process (sys.modules, sys.path), which this module owns.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import importlib.util
import io
import json
import os
import runpy
import shutil
import site
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Iterable, Sequence
from typing import Any, BinaryIO

import isolation
import process
import supervise
from wire import read_message, read_varint, varint

SITE_PACKAGES = "/site-packages/"

# ---------------------------------------------------------------------------
# The worker protocol: length-delimited WorkRequest / WorkResponse messages
# (src/main/protobuf/worker_protocol.proto), the few fields used here, in the
# protocol buffer wire format of wire.py.


class WorkRequest:
    """The arguments and id of a request.

    Its inputs (field 2: a path and a digest for each of the action's
    thousands of files, about 600 KB for a scikit-learn trial) are skipped
    unread: the runner's arguments name every file the script may see.
    """

    def __init__(self, data: bytes) -> None:
        self.arguments: list[str] = []
        self.request_id = 0
        pos, end = 0, len(data)
        while pos < end:
            if data[pos] == 0x12 and data[pos + 1] < 0x80:  # an input, under 128 bytes
                pos += 2 + data[pos + 1]
                continue
            if data[pos] == 0x12 and data[pos + 2] < 0x80:  # an input, under 16 KiB
                pos += 3 + ((data[pos + 1] & 0x7F) | data[pos + 2] << 7)
                continue
            key, pos = read_varint(data, pos)
            field, wire = key >> 3, key & 7
            if wire == 2:
                length, pos = read_varint(data, pos)
                if field == 1:
                    self.arguments.append(data[pos : pos + length].decode("utf-8"))
                pos += length
            elif wire == 0:
                value, pos = read_varint(data, pos)
                if field == 3:
                    self.request_id = value
            else:  # fixed-size fields (none in WorkRequest): skip them
                pos += 8 if wire == 1 else 4


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
# The environment of a forked script

# PYTHON* variables a forked script gets as a new interpreter would: they act
# at run time, and the child applies them (`_apply_runtime_env`).
RUNTIME_ENV = frozenset(
    {
        "PYTHONASYNCIODEBUG",
        "PYTHONBREAKPOINT",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONFAULTHANDLER",
        "PYTHONINTMAXSTRDIGITS",
        "PYTHONIOENCODING",
        "PYTHONPATH",
        "PYTHONPYCACHEPREFIX",
        "PYTHONSAFEPATH",
        "PYTHONUNBUFFERED",
        "PYTHONWARNINGS",
    }
)
# Honoured by the worker's own interpreter when it starts (runner.py keeps
# them in its environment), so its children have them as a new interpreter would.
STARTUP_ENV = frozenset({"PYTHONHASHSEED"})


def forkable_env(env: dict[str, str]) -> bool:
    """Whether a script forked from the worker would see `env` as a new interpreter does.

    Every other PYTHON* variable acts only when an interpreter starts
    (-O, dev mode, a memory allocator, ...): such a script runs as a new
    interpreter. The worker runs in UTF-8 mode (-X utf8), and never adds the
    user's site directory.
    """
    for key, value in env.items():
        if not key.startswith("PYTHON") or key in RUNTIME_ENV or key in STARTUP_ENV:
            continue
        if key == "PYTHONUTF8" and value == "1":
            continue
        if key == "PYTHONNOUSERSITE" and value:
            continue
        return False
    return env.get("PYTHONUTF8") == "1" and bool(env.get("PYTHONNOUSERSITE"))


def _apply_runtime_env(env: dict[str, str]) -> None:
    """What a new interpreter does with RUNTIME_ENV (PYTHONPATH aside)."""
    sys.dont_write_bytecode = bool(env.get("PYTHONDONTWRITEBYTECODE"))
    sys.pycache_prefix = env.get("PYTHONPYCACHEPREFIX") or None
    digits = env.get("PYTHONINTMAXSTRDIGITS")
    if digits and digits.isdigit():
        with contextlib.suppress(ValueError):
            sys.set_int_max_str_digits(int(digits))
    if env.get("PYTHONFAULTHANDLER"):
        import faulthandler

        faulthandler.enable()
    options = [o for o in env.get("PYTHONWARNINGS", "").split(",") if o]
    sys.warnoptions[:] = options
    warnings.resetwarnings()
    warnings.filters[:] = DEFAULT_WARNING_FILTERS
    warnings._processoptions(options)  # type: ignore[attr-defined]
    encoding, _, errors = env.get("PYTHONIOENCODING", "").partition(":")
    unbuffered = bool(env.get("PYTHONUNBUFFERED"))

    def stream(fd: int, mode: str, **kwargs: Any) -> io.TextIOWrapper:
        raw = open(
            fd, mode, closefd=False, buffering=0 if unbuffered and "w" in mode else -1
        )
        return io.TextIOWrapper(
            raw,  # type: ignore[arg-type]
            encoding=encoding or None,
            write_through=unbuffered,
            **kwargs,
        )

    sys.stdin = stream(0, "rb", errors=errors or None)
    sys.stdout = stream(1, "wb", errors=errors or None)
    sys.stderr = stream(
        2, "wb", errors=errors or "backslashreplace", line_buffering=True
    )


# The warning filters of a new interpreter (before -W and PYTHONWARNINGS).
DEFAULT_WARNING_FILTERS = list(warnings.filters)


# ---------------------------------------------------------------------------
# The warm parent and its forked children

# The most of a script's report (its modules) the parent reads: a script
# cannot make the worker read a file of any size.
REPORT_LIMIT = 4 * 1024 * 1024


def _remove_if_pid(pid: int, directory: str) -> None:
    """Remove `directory` if this is process `pid` (the one that made it)."""
    if os.getpid() == pid:
        shutil.rmtree(directory, ignore_errors=True)


class WarmParent:
    """The worker's pristine state: the declared packages, imported once."""

    def __init__(self) -> None:
        self.base_path = [p for p in sys.path if p != os.path.dirname(__file__)]
        self.directory = tempfile.mkdtemp(prefix="databazel-worker-")
        # Removed when the worker exits; not when a forked trial runs the
        # exit functions it inherited (an unisolated trial shares these files).
        atexit.register(_remove_if_pid, os.getpid(), self.directory)
        self.site_dir = os.path.join(self.directory, "site-packages")
        # rules_python's pip repositories the parent imports from (prepare).
        self.package_roots: list[str] = []
        self.stamps: list[tuple[str, int, int, int]] = []
        self.preloaded: set[str] = set()
        self.learned: set[str] = set()
        # When the last forked script started and ended (time.monotonic()).
        self.times: dict[str, float] = {}
        # False once the parent has a thread besides its own: forking it would
        # copy locks that thread may hold (an OpenMP or a CUDA runtime's), so
        # scripts then run as new processes, the cold way.
        self.forkable = True

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
                entries.update(
                    (os.path.basename(p), os.path.realpath(p)) for p in paths
                )
            elif any(p.endswith(".dist-info") for p in paths):
                self.package_roots.append(root)
        self.stamps = self._stamps(
            [*entries.values(), *(p for r in self.package_roots for p in by_root[r])]
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
        """Import the package modules the scripts imported (never user code).

        A name counts only if it imports from the declared distributions:
        what a script reports cannot make the parent import anything else.
        """
        for name in sorted(self.learned - self.preloaded):
            self.preloaded.add(name)
            if not self._declared(name):
                continue
            with contextlib.suppress(BaseException):
                importlib.import_module(name)
        self.learned.clear()
        if process.thread_count() > 1:
            self.forkable = False

    def _declared(self, name: str) -> bool:
        top = name.partition(".")[0]
        if top in sys.modules:
            origin = getattr(sys.modules[top], "__file__", None) or ""
        else:
            try:
                spec = importlib.util.find_spec(top)
            except (ImportError, ValueError):
                return False
            origin = (spec.origin or "") if spec else ""
        return origin.startswith(
            tuple(r + os.sep for r in (self.site_dir, *self.package_roots))
        )

    def launch(
        self,
        command: list[str],
        env: dict[str, str],
        stdout: int,
        stderr: int,
        sandbox: isolation.Sandbox | None,
        pass_fds: Sequence[int],
    ) -> process.Child | None:
        """Fork a child that runs `python SCRIPT ARGS` (`command`) from this parent.

        None when the script must run as a new interpreter instead (this
        parent has threads, or `env` asks what only a new interpreter does).
        """
        if not self.forkable or not forkable_env(env):
            return None
        report = os.path.join(
            sandbox.report if sandbox else self.directory, "modules.json"
        )
        with contextlib.suppress(OSError):
            os.unlink(report)
        child = process.fork(
            stdout,
            stderr,
            sandbox,
            lambda: self._script(command[1], command[2:], env, report),
        )
        child.on_exit = lambda: self._read_report(report)
        return child

    def _script(
        self, script: str, args: list[str], env: dict[str, str], report: str
    ) -> int:
        """In the script's process: run `script` as `python script ARGS` would."""
        # A package's import root (py_library `imports`) is the environment's
        # whole site-packages directory; outside a sandbox it would make every
        # installed distribution importable. The declared ones are in site_dir.
        pythonpath = [
            p
            for p in env.get("PYTHONPATH", "").split(os.pathsep)
            if p and not p.rstrip("/").endswith("/site-packages")
        ]
        os.environ.clear()
        os.environ.update(env)
        _apply_runtime_env(env)
        sys.path[:] = pythonpath + self.base_path + [self.site_dir]
        # The runner's own modules (contract, records, ...) are not the
        # script's: a module of the same name beside the script must import.
        own = os.path.dirname(os.path.abspath(__file__))
        for name, module in list(sys.modules.items()):
            if os.path.dirname(getattr(module, "__file__", None) or "") == own:
                del sys.modules[name]
        sys.argv[:] = [script, *args]
        code = 0
        self.times["script"] = time.monotonic()
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
        self.times["script_end"] = time.monotonic()
        self._report_modules(report)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
        return code

    def _report_modules(self, report: str) -> None:
        """Tell the parent which package modules this script imported."""
        roots = tuple(r + os.sep for r in (self.site_dir, *self.package_roots))
        names = []
        for name, module in list(sys.modules.items()):
            path = getattr(module, "__file__", None) or ""
            if path.startswith(roots) and name not in self.preloaded:
                names.append(name)
        with contextlib.suppress(OSError):
            with open(report, "w", encoding="utf-8") as f:
                json.dump({"modules": names, "times": self.times}, f)

    def _read_report(self, report: str) -> None:
        try:
            with open(report, encoding="utf-8") as f:
                data = json.loads(f.read(REPORT_LIMIT))
            names, times = data["modules"], data["times"]
        except (OSError, ValueError, KeyError, TypeError):
            return
        if isinstance(names, list):
            self.learned.update(n for n in names if isinstance(n, str))
        if isinstance(times, dict):
            self.times.update((k, v) for k, v in times.items() if isinstance(v, float))


def serve(
    runner: Any, site_packages: Sequence[str], stdin: BinaryIO, stdout: BinaryIO
) -> int:
    """Answer WorkRequests until Bazel closes stdin; `runner.run(argv)` runs one."""
    # What runner.py set aside to start without it (see runner._reexec_worker).
    os.environ.update(json.loads(os.environ.pop(runner.WORKER_SAVED_ENV, "{}")))
    isolation.remove_stale(os.getcwd())
    parent = WarmParent()
    parent.prepare(site_packages)
    supervise.IN_WORKER = True
    process.watch_parent()
    startup = [a for p in site_packages for a in ("--site-package", p)]
    main = runner.run
    while True:
        try:
            data = read_message(stdin)
        except process.Orphaned:
            return 0
        if data is None:
            return 0
        received = time.monotonic()
        request = WorkRequest(data)
        parent.times.clear()
        supervise.TIMES.clear()
        stale = parent.stale()
        # A stale worker answers this request the cold way, then exits, and
        # Bazel starts a new one for the next.
        process.FORK_LAUNCHER = None if stale else parent.launch
        output = io.StringIO()
        with contextlib.redirect_stderr(output):
            try:
                code = main(startup + request.arguments)
            except process.Orphaned:  # Bazel's server died: nobody to answer
                os._exit(1)
            except SystemExit as e:  # the runner was told to stop
                stdout.write(encode_response(1, output.getvalue(), request.request_id))
                stdout.flush()
                raise e
            except BaseException:  # noqa: BLE001 - reported, the worker goes on
                traceback.print_exc()
                code = 1
        stdout.write(encode_response(code, output.getvalue(), request.request_id))
        stdout.flush()
        answered = time.monotonic()
        if stale:
            return 0
        parent.learn()
        log_times(request.arguments, received, answered, parent.times)


def log_times(
    arguments: list[str], received: float, answered: float, script: dict[str, float]
) -> None:
    """One line in the worker's log (its stderr): where the request's time went.

    From receiving the request to answering it: the runner until it started
    the script, the script's process until the script ran (the fork and the
    namespaces), the script, its process's exit, the runner afterwards
    (outputs, metrics); then the parent's imports of what it learned.
    """
    t = dict(supervise.TIMES)
    t.update(script)
    target = (
        arguments[arguments.index("--target") + 1] if "--target" in arguments else "?"
    )
    # (the interval, when it ended); an interval without its end is skipped.
    ends = [
        ("runner", t.get("start")),
        ("fork+isolate", t.get("script")),
        ("script", t.get("script_end")),
        ("exit", t.get("exited")),
        ("runner", answered),
    ]
    parts, last = [], received
    for name, at in ends:
        if at is not None:
            parts.append(f"{name} {at - last:.4f}")
            last = at
    print(
        f"databazel worker: {target} {arguments[0] if arguments else '?'} "
        f"{answered - received:.4f} s: "
        + ", ".join(parts)
        + f"; learn {time.monotonic() - answered:.4f}",
        file=sys.__stderr__,
        flush=True,
    )
