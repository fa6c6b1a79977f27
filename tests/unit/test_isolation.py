"""Tests for databazel/private/isolation.py: scripts isolated where Bazel does not sandbox them.

The runner and its warm worker run as Bazel starts them, in a directory laid
out like an output base's execroot (`unsandboxed_execroot`), so the runner
isolates the script itself, as it does in a real warm worker or local action.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import isolation
import pytest
import runner
import wire

# `python3 tool.py runner ARGS`, as the actions start it.
RUNNER = (str(Path(runner.__file__).resolve().parent / "tool.py"), "runner")
SITE = "external/env/venv/lib/python3/site-packages/"
ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "PYTHONUTF8": "1",
    "PYTHONNOUSERSITE": "1",
    "PYTHONHASHSEED": "0",
    "PYTHONDONTWRITEBYTECODE": "1",
}


def _request(arguments: list[str], request_id: int) -> bytes:
    body = b"".join(
        bytes([1 << 3 | 2]) + wire.varint(len(a.encode())) + a.encode()
        for a in arguments
    )
    body += b"\x18" + wire.varint(request_id)
    return wire.varint(len(body)) + body


def _responses(data: bytes) -> list[tuple[int, str]]:
    out, pos = [], 0
    while pos < len(data):
        size, pos = wire.read_varint(data, pos)
        code, text = 0, ""
        for number, value in wire.fields(data[pos : pos + size]):
            if number == 1:
                code = value  # type: ignore[assignment]
            elif number == 2:
                text = value.decode()  # type: ignore[union-attr]
        out.append((code, text))
        pos += size
    return out


@pytest.fixture
def execroot(tmp_path: Path) -> Path:
    return _make_execroot(tmp_path)


def _make_execroot(tmp_path: Path) -> Path:
    """An output base's execroot: a source package, a declared and an undeclared package."""
    base = tmp_path / "output_base"
    (base / "action_cache").mkdir(parents=True)
    root = base / "execroot/ws"
    for name in ("declared", "undeclared"):
        (root / SITE / name).mkdir(parents=True)
        (root / SITE / name / "__init__.py").write_text("VALUE = 1\n")
    (root / SITE / "declared-1.0.dist-info").mkdir()
    (root / SITE / "declared-1.0.dist-info/RECORD").write_text("")
    (root / "pkg").mkdir()
    (root / "pkg/data.txt").write_text("data\n")
    (root / "pkg/secret.txt").write_text("not an input\n")
    (root / "pkg/helper.py").write_text("HELPER = 'declared helper'\n")
    (root / "pkg/sibling.py").write_text("SIBLING = 'undeclared sibling'\n")
    (root / "pkg/hp.json").write_text('{"x": "1"}')
    (root / "bazel-out/bin/pkg").mkdir(parents=True)
    (root / "bazel-out/bin/pkg/other.model").write_text("another target's output\n")
    return root


def _script(root: Path, body: str) -> None:
    (root / "pkg/train.py").write_text(
        "import argparse, json, os, sys\n"
        "p = argparse.ArgumentParser()\n"
        "p.add_argument('--data'); p.add_argument('--model-output-path'); p.add_argument('--hyperparams')\n"
        "a = p.parse_args()\n"
        "result = {}\n" + textwrap.dedent(body) + "\n"
        "with open(a.model_output_path, 'w') as f:\n"
        "    json.dump(result, f, sort_keys=True)\n"
    )


def _train(n: int, *extra: str) -> list[str]:
    return [
        "train",
        "--hyperparams-file",
        "pkg/hp.json",
        "--model-output-path",
        f"bazel-out/bin/pkg/m{n}.model",
        "--data",
        "pkg/data.txt",
        "--target",
        f"//pkg:m{n}",
        "--script",
        "pkg/train.py",
        "--python-script",
        "--input",
        "pkg/helper.py",
        "--pythonpath",
        ".",
        "--pythonpath",  # the packages' import root, as Bazel gives it
        SITE,
        *extra,
    ]


STARTUP = [
    "--site-package",
    SITE + "declared",
    "--site-package",
    SITE + "declared-1.0.dist-info",
]


def _worker(
    root: Path,
    *requests: list[str],
    env: dict[str, str] | None = None,
    user: str | None = None,
    python: str = sys.executable,
) -> list[tuple[int, str]]:
    """The runner as a warm worker in `root`, answering `requests`."""
    data = b"".join(_request(r, i) for i, r in enumerate(requests, start=1))
    proc = subprocess.run(
        [python, "-S", *RUNNER, *STARTUP, "--persistent_worker"],
        input=data,
        cwd=root,
        env=dict(ENV, **(env or {})),
        capture_output=True,
        timeout=120,
        user=user,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return _responses(proc.stdout)


def _runner(
    root: Path, request: list[str], env: dict[str, str] | None = None
) -> tuple[int, str]:
    """The runner as Bazel's local strategy runs it: a new process in the output base's execroot."""
    proc = subprocess.run(
        [sys.executable, "-I", "-S", *RUNNER, *STARTUP, *request],
        cwd=root,
        env=dict(ENV, **(env or {})),
        capture_output=True,
        timeout=120,
    )
    return proc.returncode, proc.stderr.decode()


def _model(root: Path, n: int) -> dict[str, object]:
    return json.loads((root / f"bazel-out/bin/pkg/m{n}.model").read_text())


READS = """
def attempt(what, action):
    try:
        action()
        result[what] = "ok"
    except Exception as e:
        result[what] = type(e).__name__
attempt("data", lambda: open(a.data).read())
attempt("secret", lambda: open("pkg/secret.txt").read())
attempt("secret_absolute", lambda: open(os.path.abspath("pkg/secret.txt")).read())
attempt("other_output", lambda: open("bazel-out/bin/pkg/other.model").read())
attempt("helper", lambda: __import__("helper"))
attempt("sibling", lambda: __import__("sibling"))
attempt("declared", lambda: __import__("declared"))
attempt("undeclared", lambda: __import__("undeclared"))
"""

SANDBOX_READS = {
    "data": "ok",
    "secret": "FileNotFoundError",
    "secret_absolute": "FileNotFoundError",
    "other_output": "FileNotFoundError",
    "helper": "ok",
    "sibling": "ModuleNotFoundError",
    "declared": "ok",
    "undeclared": "ModuleNotFoundError",
}


def test_an_isolated_script_sees_only_its_inputs(execroot: Path) -> None:
    _script(execroot, READS)
    # Forked from the warm parent; then a script that must start as a new
    # interpreter (PYTHONOPTIMIZE acts only at start-up); then the local strategy.
    assert _worker(execroot, _train(1)) == [(0, "")]
    assert _model(execroot, 1) == SANDBOX_READS
    assert _worker(execroot, _train(2), env={"PYTHONOPTIMIZE": "1"}) == [(0, "")]
    assert _model(execroot, 2) == SANDBOX_READS
    assert _runner(execroot, _train(3)) == (0, "")
    assert _model(execroot, 3) == SANDBOX_READS
    # Built unisolated (--@databazel//databazel:isolate=false), it sees everything.
    assert _worker(execroot, _train(4, "--unisolated")) == [(0, "")]
    assert _model(execroot, 4) == dict(
        SANDBOX_READS,
        secret="ok",
        secret_absolute="ok",
        other_output="ok",
        sibling="ok",
    )


@pytest.fixture
def listening() -> Iterator[int]:
    """A loopback port of this machine that accepts connections."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def test_only_network_true_reaches_the_machines_loopback(
    execroot: Path, listening: int
) -> None:
    _script(
        execroot,
        f"""
        import socket
        try:
            socket.create_connection(("127.0.0.1", {listening}), timeout=5).close()
            result["connect"] = "ok"
        except OSError as e:
            result["connect"] = type(e).__name__
        with socket.socket() as own:  # the trial's own loopback works
            own.bind(("127.0.0.1", 0))
            own.listen()
            socket.create_connection(own.getsockname()).close()
        """,
    )
    assert _worker(execroot, _train(1), _train(2, "--network")) == [(0, ""), (0, "")]
    assert _model(execroot, 1) == {"connect": "ConnectionRefusedError"}
    assert _model(execroot, 2) == {"connect": "ok"}
    assert _runner(execroot, _train(3)) == (0, "")
    assert _model(execroot, 3) == {"connect": "ConnectionRefusedError"}


def test_nothing_a_trial_writes_reaches_the_worker_or_a_later_trial(
    execroot: Path,
) -> None:
    """Each trial plants a module where the worker imports from, and edits files.

    Whether a write fails (a read-only mount) or lands in the trial's private
    /tmp (an overlay: this test's execroot is under /tmp) depends on the
    path; what counts is that the next trial, the worker and the machine see
    none of it.
    """
    _script(
        execroot,
        """
        import declared
        site_dir = [p for p in sys.path if p.endswith("site-packages")][-1]
        targets = {
            "site_dir": os.path.join(site_dir, "planted.py"),
            "package": os.path.join(os.path.dirname(declared.__file__), "planted.py"),
            "source": os.path.realpath("pkg/data.txt"),
            "tmp": "/tmp/databazel-planted",
        }
        result["before"] = {k: os.path.exists(v) and "PLANTED" in open(v).read() for k, v in targets.items()}
        try:
            import planted
            result["import_before"] = "ok"
        except ImportError:
            result["import_before"] = "ImportError"
        for path in targets.values():
            try:
                with open(path, "a") as f:
                    f.write("PLANTED = True\\n")
            except OSError:
                pass
        """,
    )
    os.chmod(execroot / "pkg/data.txt", 0o666)
    assert _worker(execroot, _train(1), _train(2)) == [(0, ""), (0, "")]
    for n in (1, 2):
        assert _model(execroot, n) == {
            "before": {
                "site_dir": False,
                "package": False,
                "source": False,
                "tmp": False,
            },
            "import_before": "ImportError",
        }
    assert (execroot / "pkg/data.txt").read_text() == "data\n"
    assert not os.path.exists("/tmp/databazel-planted")
    assert not (execroot / SITE / "declared/planted.py").exists()
    assert not list(Path("/tmp").glob("databazel-worker-*/site-packages/planted.py"))


def _wait_for(path: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _processes_with(marker: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue
            if marker.encode() in environ:
                found.append(int(pid))
    return found


def test_a_daemon_started_by_a_trial_ends_with_it(
    execroot: Path, tmp_path: Path
) -> None:
    marker = f"DATABAZEL_TEST_DAEMON={tmp_path.name}"
    _script(
        execroot,
        """
        import time
        if os.fork() == 0:  # a daemon: double fork, new session
            os.setsid()
            if os.fork() == 0:
                time.sleep(120)
                os._exit(0)
            os._exit(0)
        time.sleep(0.2)
        """,
    )
    key, value = marker.split("=")
    assert _worker(execroot, _train(1), env={key: value}) == [(0, "")]
    assert _processes_with(marker) == []


def test_a_killed_worker_takes_its_trial_along_and_writes_nothing(
    execroot: Path, tmp_path: Path
) -> None:
    marker = f"DATABAZEL_TEST_KILLED={tmp_path.name}"
    _script(
        execroot,
        """
        import time
        if os.fork() == 0:  # a child of the trial, outliving it if it could
            time.sleep(120)
            os._exit(0)
        # Tell the test (a descriptor the worker inherited) that the trial runs.
        os.write(int(os.environ["STARTED_FD"]), b"started")
        time.sleep(120)
        """,
    )
    key, value = marker.split("=")
    read_end, write_end = os.pipe()
    worker = subprocess.Popen(
        [sys.executable, "-S", *RUNNER, *STARTUP, "--persistent_worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=execroot,
        env=dict(ENV, STARTED_FD=str(write_end), **{key: value}),
        pass_fds=[write_end],
    )
    os.close(write_end)
    assert worker.stdin
    worker.stdin.write(_request(_train(1), 1))
    worker.stdin.flush()
    assert os.read(read_end, 7) == b"started"
    assert len(_processes_with(marker)) >= 3  # the worker, the trial, its child
    worker.kill()
    worker.wait()
    deadline = time.monotonic() + 30
    while _processes_with(marker):
        assert time.monotonic() < deadline, _processes_with(marker)
        time.sleep(0.05)
    assert not (execroot / "bazel-out/bin/pkg/m1.model").exists()
    os.close(read_end)


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory every user can reach (pytest's own are the user's only)."""
    path = Path(tempfile.mkdtemp(prefix="databazel-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_a_user_who_is_not_root_is_isolated_too(
    public_dir: Path, listening: int
) -> None:
    if os.getuid() != 0:
        pytest.skip("changing to another user needs root")
    user = pwd.getpwnam("nobody")
    execroot = _make_execroot(public_dir / "home")
    for path in [public_dir / "home", *(public_dir / "home").rglob("*")]:
        os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)

    # The runner is stdlib-only: any Python 3 that user can run will do.
    def usable(python: str | None) -> bool:
        try:
            return (
                bool(python)
                and subprocess.run(
                    [python, "-c", ""],
                    user="nobody",
                    capture_output=True,  # type: ignore[list-item]
                ).returncode
                == 0
            )
        except OSError:
            return False

    python = next(
        (
            p
            for p in (
                sys.executable,
                shutil.which("python3", path="/usr/bin:/usr/local/bin"),
            )
            if usable(p)
        ),
        None,
    )
    if python is None:
        pytest.skip("no Python 3 that user nobody can run")
    if subprocess.run(["test", "-r", RUNNER[0]], user="nobody").returncode:
        pytest.skip(f"user nobody cannot read {RUNNER[0]}")
    _script(
        execroot,
        READS
        + f"""
import socket
attempt("connect", lambda: socket.create_connection(("127.0.0.1", {listening}), timeout=5))
result["uid"] = os.getuid()
""",
    )
    assert _worker(execroot, _train(1), user="nobody", python=python) == [(0, "")]
    assert _model(execroot, 1) == dict(
        SANDBOX_READS, connect="ConnectionRefusedError", uid=user.pw_uid
    )


def test_runtime_python_variables_act_on_the_script_not_the_runner(
    execroot: Path,
) -> None:
    """A sandboxed runner (-I) sees none of env's PYTHON* variables; neither does a warm one."""
    _script(
        execroot,
        """
        import warnings
        result["warnoptions"] = sys.warnoptions
        try:
            warnings.warn("deprecated", DeprecationWarning)
            result["warning"] = "ignored"
        except DeprecationWarning:
            result["warning"] = "raised"
        result["optimize"] = sys.flags.optimize
        """,
    )
    env = {"PYTHONWARNINGS": "error"}
    assert _worker(execroot, _train(1), env=env) == [(0, "")]
    assert _model(execroot, 1) == {
        "warnoptions": ["error"],
        "warning": "raised",
        "optimize": 0,
    }
    assert _runner(execroot, _train(2), env=env) == (0, "")
    assert _model(execroot, 2) == _model(execroot, 1)
    env = {"PYTHONWARNINGS": "error", "PYTHONOPTIMIZE": "2"}
    assert _worker(execroot, _train(3), env=env) == [(0, "")]
    assert _model(execroot, 3) == {
        "warnoptions": ["error"],
        "warning": "raised",
        "optimize": 2,
    }


def test_a_machine_without_namespaces_gets_a_message_naming_the_flags(
    execroot: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Where unshare fails (no user namespaces), the trial fails saying what to change."""
    # A stand-in libc whose unshare fails, preloaded into the runner.
    source = tmp_path / "nons.c"
    source.write_text(
        "#include <errno.h>\nint unshare(int flags) { errno = EPERM; return -1; }\n"
    )
    library = tmp_path / "nons.so"
    if shutil.which("cc") is None:
        pytest.skip("no C compiler for the stand-in")
    subprocess.run(["cc", "-shared", "-fPIC", "-o", library, source], check=True)
    _script(execroot, "")
    [(code, output)] = _worker(execroot, _train(1), env={"LD_PRELOAD": str(library)})
    assert code == 1
    assert output.startswith(
        "databazel: error: //pkg:m1: cannot isolate the train script: unshare: Operation not permitted."
    ), output
    assert "--@databazel//databazel:warm=false" in output
    assert "--@databazel//databazel:isolate=false" in output
    assert not (execroot / "bazel-out/bin/pkg/m1.model").exists()


def test_the_isolation_decision() -> None:
    assert isolation.bazel_sandboxed(
        "/dev/shm/bazel-sandbox.1/linux-sandbox/3/execroot/ws"
    )
    assert not isolation.bazel_sandboxed("/home/u/.cache/bazel/x/execroot/ws")
    assert isolation.unsandboxed_execroot(
        "/o/sandbox/processwrapper-sandbox/4/execroot/ws"
    )
    assert not isolation.unsandboxed_execroot("/var/remote/worker/action-7")


def test_stale_private_execroots_are_removed(execroot: Path) -> None:
    base = Path(isolation.state_root(str(execroot)))
    base.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (base / f"{dead.pid}-abc/root").mkdir(parents=True)
    (base / f"{os.getpid()}-def").mkdir()
    isolation.remove_stale(str(execroot))
    assert sorted(p.name for p in base.iterdir()) == [f"{os.getpid()}-def"]


def test_signals_reach_the_script_and_the_runner_reports_them(execroot: Path) -> None:
    _script(execroot, "import time\ntime.sleep(120)\n")
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", *RUNNER, *STARTUP, *_train(1)],
        cwd=execroot,
        env=ENV,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while not list(Path(isolation.state_root(str(execroot))).glob("*/root")):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "the databazel runner was told to stop (signal SIGTERM)" in err.decode()
    assert not (execroot / "bazel-out/bin/pkg/m1.model").exists()
