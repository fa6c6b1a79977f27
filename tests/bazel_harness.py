"""Drive real Bazel on fixture workspaces that load databazel from this checkout.

One `Workspace` is one directory with its own output base (one Bazel server).
Tests share a workspace per session and put each scenario in its own package,
so the suite pays for one server start and one Python environment.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import shutil
import stat
import subprocess
import textwrap
import time
import types
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


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


@dataclasses.dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    spawns: list[dict]

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
    if not path.exists():
        return []
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
        result = Result(
            proc.returncode,
            proc.stdout,
            proc.stderr,
            _read_execution_log(log) if log else [],
        )
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
