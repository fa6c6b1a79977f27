"""Drive real Bazel on fixture workspaces that load databazel from this checkout.

One `Workspace` is one directory with its own output base (one Bazel server).
Tests share a workspace per session and put each scenario in its own package,
so the suite pays for one server start and one Python environment.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import textwrap
import time
import types
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The --incompatible_* flags later Bazel releases flipped (tests/test_newer_bazel.py).
NEWER_BAZEL_RC = REPO / "tools/newer_bazel.bazelrc"


def _load_wire() -> types.ModuleType:
    """databazel/private/wire.py, the protocol buffer reader, for execution logs."""
    spec = importlib.util.spec_from_file_location(
        "databazel_wire", REPO / "databazel/private/wire.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


wire = _load_wire()


def starlark_string(value: str) -> str:
    """A Starlark string literal for `value`: UTF-8 source, escapes for the rest."""
    escaped = (
        value.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\t", "\\t")
        .replace("\r", "\\r")
    )
    return f'"{escaped}"'


# The one flag that turns warm workers off: each trial a new process in
# Bazel's sandbox (docs/warm-workers.md). In this checkout itself the flag's
# label has no repository name (`REPO_SANDBOXED`).
SANDBOXED = ("--@databazel//databazel:warm=false",)
REPO_SANDBOXED = ("--//databazel:warm=false",)


def remote_flags(port: int) -> tuple[str, ...]:
    """The flags of `--config=remote` in this checkout's .bazelrc, for a BuildGrid on PORT.

    The config names tools/buildgrid.sh's documented port, 50051; fixture
    workspaces do not read the checkout's .bazelrc, so they get the flags.
    """
    flags = []
    for line in (REPO / ".bazelrc").read_text().splitlines():
        if line.startswith("build:remote "):
            flags += line.split()[1:]
    assert flags, "no `build:remote` lines in .bazelrc"
    return tuple(f.replace("127.0.0.1:50051", f"127.0.0.1:{port}") for f in flags)


class Probe:
    """How the tests see into a trial: a loopback TCP server its script reports to.

    An isolated trial (the default, docs/warm-workers.md) can write no file
    the test could read, and a file the test makes after the trial started
    may not be visible to it. A fixture script built with `network = True`
    and `DATABAZEL_PROBE` (`probe.address`) in its `env` sends one request
    per connection: `append PATH LINE` (the server appends LINE to PATH, on
    the test's side: the logs tests count), `exists PATH` (answered `yes`
    or `no`: the gates tests release) or `read PATH` (answered with its
    content). PROBE_CLIENT is the client.
    """

    def __init__(self) -> None:
        import socketserver
        import threading

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                command, path, text = (
                    self.rfile.readline().decode().rstrip("\n").split("\t", 2)
                )
                if command == "append":
                    with open(path, "a", encoding="utf-8") as f:
                        f.write(text + "\n")
                    self.wfile.write(b"ok")
                elif command == "exists":
                    self.wfile.write(b"yes" if os.path.exists(path) else b"no")
                elif command == "read":
                    with open(path, "rb") as f:
                        self.wfile.write(f.read())

        socketserver.ThreadingTCPServer.daemon_threads = True
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.address = "127.0.0.1:%d" % self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# The client of Probe (`append_line`, `exists`, `read_text`), for the
# scripts the tests write: the fixture's lib/probe.py, whose scripts import it.
PROBE_CLIENT = (Path(__file__).parent / "e2e/fixture/lib/probe.py").read_text()


def processes_under(path: Path) -> list[int]:
    """The pids of processes whose working directory or command line is under `path`.

    For an output base: its server, its workers and their trials.
    """
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
            cmdline = (
                Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
            )
            state = (
                Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()[0]
            )
        except OSError:
            continue
        if state != "Z" and (cwd.startswith(str(path)) or str(path) in cmdline):
            found.append(int(entry))
    return found


def tool(*args: str) -> subprocess.CompletedProcess[str]:
    """Runs tools/ARGS[0] with the other arguments; the caller checks the result."""
    return subprocess.run(
        [str(REPO / "tools" / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )


# The exit status of tools/cache_server.sh and tools/buildgrid.sh for a port in use.
PORT_IN_USE = 3


def start_on_a_free_port(
    start: Callable[[int], subprocess.CompletedProcess[str]], tries: int = 5
) -> int:
    """Starts a server with `start(port)` on a free port of 127.0.0.1; returns the port.

    A port is free when it is picked, but another process may take it before
    the server binds it: a start that says so (PORT_IN_USE) is tried again
    on another port; any other failure fails the test.
    """
    for _ in range(tries):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = start(port)
        if proc.returncode != PORT_IN_USE:
            assert proc.returncode == 0, f"{proc.args}:\n{proc.stdout}{proc.stderr}"
            return port
    raise AssertionError(
        f"{tries} ports in a row were taken before the server bound them"
    )


def missing_server(kind: str) -> str | None:
    """Why the servers of the remote tests cannot run here (None: they can).

    `./setup.sh --no-remote` installs neither nginx's WebDAV module nor BuildGrid.
    """
    if kind == "nginx":
        nginx = shutil.which("nginx")  # as tools/cache_server.sh finds it
        version = (
            subprocess.run([nginx, "-V"], capture_output=True, text=True, check=False)
            if nginx
            else None
        )
        if version is None or "--with-http_dav_module" not in version.stderr:
            return (
                "needs nginx with WebDAV (tools/cache_server.sh), which "
                "`./setup.sh --no-remote` does not install; run ./setup.sh"
            )
    elif kind == "buildgrid":
        venv = os.environ.get("DATABAZEL_BUILDGRID_VENV") or str(
            REPO / ".local" / "buildgrid-venv"
        )
        if not os.access(os.path.join(venv, "bin", "bgd"), os.X_OK):
            return (
                f"needs BuildGrid in {venv} (tools/buildgrid.sh), which "
                "`./setup.sh --no-remote` does not install; run ./setup.sh"
            )
    else:
        raise ValueError(kind)
    return None


def needs_server(kind: str):  # noqa: ANN201 - a pytest mark
    """A mark that skips a test, saying why, where `missing_server(kind)` is missing."""
    import pytest

    reason = missing_server(kind)
    return pytest.mark.skipif(reason is not None, reason=reason or "")


def wait_until(condition, seconds: float, what: str) -> None:
    """Polls `condition()` every 0.1 s; fails the test after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def progress_events(log: Path) -> list[tuple[str, str]]:
    """The (event, x) lines the fixture's `gate` behaviour appends to $PROGRESS_LOG."""
    if not log.exists():
        return []
    return [tuple(line.split()) for line in log.read_text().splitlines()]  # type: ignore[misc]


def processes_run(stderr: str) -> int | None:
    """The processes a build ran, from Bazel's `INFO: N processes: ...` line (None without one).

    "42 processes: 17 internal, 25 linux-sandbox.": the non-internal ones ran
    (cache hits included; a spawn that failed is not counted).
    """
    match = re.search(r"^INFO: (\d+) process(?:es)?(:.*|\.)$", stderr, re.MULTILINE)
    if not match:
        return None
    parts = dict(
        (kind.strip(" ."), int(count))
        for count, kind in re.findall(r"(\d+) ([\w-]+)", match.group(2) or "")
    )
    return int(match.group(1)) - parts.get("internal", 0)


@dataclasses.dataclass
class Result:
    """What `bazel ARGS` did: exit status, output and (for builds) its execution log."""

    returncode: int
    stdout: str
    stderr: str
    execution_log: Path | None = None

    @functools.cached_property
    def spawns(self) -> list[dict]:
        """The spawns of the execution log, checked against Bazel's `INFO: N processes` line.

        A missing log fails the test (an assertion that nothing ran must not
        pass because nothing was logged), unless the build failed before it
        ran anything and Bazel said so ("INFO: 0 processes."). The spawns that
        succeeded (and the tests that ran, passed or failed) must be as many as
        Bazel counted.
        """
        processes = processes_run(self.stderr)
        tail = self.stderr[-3000:]
        if self.execution_log is None:
            raise AssertionError("this command wrote no execution log")
        if not self.execution_log.exists():
            if self.returncode != 0 and processes == 0:
                return []
            raise AssertionError(
                f"Bazel wrote no execution log at {self.execution_log} "
                f"(exit {self.returncode}):\n{tail}"
            )
        if processes is None:
            raise AssertionError(
                f"no `INFO: N processes` line to check the execution log against:\n{tail}"
            )
        spawns = _read_execution_log(self.execution_log)
        # Bazel counts a test that ran and failed (its test action completed),
        # not another spawn that failed.
        succeeded = sum(
            1
            for s in spawns
            if s.get("mnemonic") == "TestRunner"
            or (not s.get("status") and not s.get("exitCode"))
        )
        if succeeded != processes:
            raise AssertionError(
                f"the execution log has {succeeded} spawns that succeeded, "
                f"Bazel counted {processes} processes:\n{tail}"
            )
        return spawns

    def executed(self, mnemonic: str | None = None) -> int:
        """Spawns Bazel really ran (not served by a cache), optionally of one mnemonic."""
        return sum(
            1
            for s in self.spawns
            if not s.get("remoteCacheHit")
            and (mnemonic is None or s.get("mnemonic") == mnemonic)
        )

    def executed_by_mnemonic(self) -> Counter:
        return Counter(
            s.get("mnemonic", "?") for s in self.spawns if not s.get("remoteCacheHit")
        )


# Fields of Bazel's SpawnExec message (src/main/protobuf/spawn.proto) that the
# tests read, by field number, under the names of the JSON execution log.
_SPAWN_STRINGS = {9: "progressMessage", 10: "mnemonic", 12: "runner", 14: "status"}
_SPAWN_INTS = {13: "remoteCacheHit", 15: "exitCode"}


def _read_execution_log(path: Path) -> list[dict]:
    """The spawns of a binary execution log (length-delimited SpawnExec messages).

    The binary log, not the JSON one: every spawn lists each of its inputs
    (thousands of package files), and Bazel 4.2 converts the JSON log at the
    end of the build, which costs about 0.4 s per trial. Only the fields in
    _SPAWN_STRINGS and _SPAWN_INTS are decoded, with databazel's protocol
    buffer reader (databazel/private/wire.py).
    """
    data = path.read_bytes()
    spawns, pos = [], 0
    while pos < len(data):
        size, pos = wire.read_varint(data, pos)
        spawn: dict = {}
        for field, value in wire.fields(data[pos : pos + size]):
            if field in _SPAWN_INTS and isinstance(value, int):
                spawn[_SPAWN_INTS[field]] = value
            elif field in _SPAWN_STRINGS and isinstance(value, bytes):
                spawn[_SPAWN_STRINGS[field]] = value.decode()
        pos += size
        spawn["remoteCacheHit"] = bool(spawn.get("remoteCacheHit"))
        spawns.append(spawn)
    return spawns


def _make_writable_and_remove(path: Path) -> None:
    def onerror(func, p, _exc):
        os.chmod(os.path.dirname(p), stat.S_IRWXU)
        if os.path.isdir(p) and not os.path.islink(p):
            os.chmod(p, stat.S_IRWXU)
        func(p)

    shutil.rmtree(path, onerror=onerror)


class Workspace:
    """A workspace directory and the output base (the Bazel server) tests use for it."""

    # Whether build-like commands write an execution log (for Result.spawns).
    execution_log = True

    def __init__(
        self, root: Path, output_base: Path, convenience_symlinks: bool = True
    ) -> None:
        self.root = root
        self.output_base = output_base
        self.convenience_symlinks = convenience_symlinks
        self._log_counter = 0
        self._bin: Path | None = None

    @classmethod
    def fixture(cls, root: Path, output_base: Path, python_env: str = "") -> Workspace:
        """A new workspace that loads databazel from this checkout as `@databazel`."""
        workspace = cls(root, output_base)
        root.mkdir(parents=True, exist_ok=True)
        workspace.write(
            "WORKSPACE",
            f"""
            workspace(name = "fixture")

            local_repository(
                name = "databazel",
                path = "{REPO}",
            )

            load(
                "@databazel//databazel:repositories.bzl",
                "databazel_dependencies",
                "python_env",
            )

            # bazel-skylib; the environment is the fixture's own, below.
            databazel_dependencies(python_env_name = None)

            python_env(
                name = "fixture_python",
                {python_env}
            )

            register_toolchains("@fixture_python//:toolchain")
            """,
        )
        rc = [
            # As every workspace of this repository: newer Bazel's semantics.
            f"import {NEWER_BAZEL_RC}",
            "build --incompatible_strict_action_env",
            "build --nosandbox_debug",
            "build --experimental_sandbox_base=/dev/shm",
            "build --show_result=0",
        ]
        local_rc = REPO / ".bazelrc.local"
        if local_rc.exists():
            rc.append(f"try-import {local_rc}")
        workspace.write(".bazelrc", "\n".join(rc) + "\n")
        workspace.write("BUILD", "")
        return workspace

    def write(self, relpath: str, content: str, executable: bool = False) -> Path:
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(content).lstrip("\n"))
        if executable:
            path.chmod(0o755)
        return path

    @contextlib.contextmanager
    def workspace_addition(self, text: str) -> Iterator[None]:
        """Appends `text` to the WORKSPACE file for the duration of the block."""
        path = self.root / "WORKSPACE"
        original = path.read_text()
        path.write_text(original + "\n" + textwrap.dedent(text).lstrip("\n"))
        try:
            yield
        finally:
            path.write_text(original)

    def _command(self, args: tuple[str, ...]) -> tuple[list[str], Path | None]:
        """The bazel command line for ARGS, and the execution log it will write."""
        command, rest = args[0], list(args[1:])
        log = None
        if command in ("build", "test", "run"):
            if self.execution_log:
                self._log_counter += 1
                log = self.output_base.parent / f"exec_{self._log_counter}.binpb"
                rest = [f"--execution_log_binary_file={log}"] + rest
            if not self.convenience_symlinks:
                rest = ["--symlink_prefix=/"] + rest
        return [
            "bazel",
            f"--output_base={self.output_base}",
            "--max_idle_secs=600",
            command,
            *rest,
        ], log

    def start(self, *args: str, stderr: Path | None = None) -> subprocess.Popen:
        """Starts `bazel ARGS` in the background; the caller waits or kills.

        Output is discarded, except stderr when a file is given for it.
        """
        command, _log = self._command(args)
        with open(stderr or os.devnull, "w") as err:
            return subprocess.Popen(
                command,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )

    def server_pid(self) -> int | None:
        """The pid of this workspace's Bazel server, if one is running."""
        try:
            return int((self.output_base / "server" / "server.pid.txt").read_text())
        except (OSError, ValueError):
            return None

    def bazel(self, *args: str, check: bool = False, timeout: float = 600) -> Result:
        """Runs `bazel ARGS` in the workspace; build-like commands get an execution log."""
        command, log = self._command(args)
        proc = subprocess.run(
            command,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        result = Result(proc.returncode, proc.stdout, proc.stderr, log)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"bazel {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-6000:]}"
            )
        return result

    def build(
        self, *targets: str, check: bool = True, flags: tuple[str, ...] = ()
    ) -> Result:
        return self.bazel("build", *flags, *targets, check=check)

    def bin(self, relpath: str) -> Path:
        """Path of an output under bazel-bin."""
        if self.convenience_symlinks:
            return self.root / "bazel-bin" / relpath
        if self._bin is None:
            self._bin = Path(self.bazel("info", "bazel-bin", check=True).stdout.strip())
        return self._bin / relpath

    def action_inputs(self, expression: str) -> list[tuple[str, str, set[str]]]:
        """(mnemonic, first output, input paths) of each action `bazel aquery EXPRESSION` lists."""
        out = self.bazel("aquery", "--output=jsonproto", expression, check=True).stdout
        graph = json.loads(out)
        fragments = {f["id"]: f for f in graph.get("pathFragments", [])}

        def path(fragment_id: int) -> str:
            parts = []
            while fragment_id:
                fragment = fragments[fragment_id]
                parts.append(fragment["label"])
                fragment_id = fragment.get("parentId", 0)
            return "/".join(reversed(parts))

        artifacts = {
            a["id"]: path(a["pathFragmentId"]) for a in graph.get("artifacts", [])
        }
        depsets = {d["id"]: d for d in graph.get("depSetOfFiles", [])}
        expanded: dict[int, set[str]] = {}

        def files(depset_id: int) -> set[str]:
            if depset_id not in expanded:
                node = depsets[depset_id]
                found = {artifacts[a] for a in node.get("directArtifactIds", [])}
                for child in node.get("transitiveDepSetIds", []):
                    found |= files(child)
                expanded[depset_id] = found
            return expanded[depset_id]

        actions = []
        for action in graph.get("actions", []):
            inputs: set[str] = set()
            for depset_id in action.get("inputDepSetIds", []):
                inputs |= files(depset_id)
            first = artifacts[action["outputIds"][0]] if action.get("outputIds") else ""
            actions.append((action.get("mnemonic", ""), first, inputs))
        return actions

    def shutdown(self) -> None:
        subprocess.run(
            ["bazel", f"--output_base={self.output_base}", "shutdown"],
            cwd=self.root,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def remove(self, keep_root: bool = False) -> None:
        """Shuts the server down and deletes the output base (and the workspace, unless kept)."""
        self.shutdown()
        for path in (self.output_base,) if keep_root else (self.output_base, self.root):
            if path.exists():
                _make_writable_and_remove(path)
