"""Tests for databazel/private/worker.py: the runner as a persistent worker.

The worker runs as Bazel starts it (`python3 -S runner.py --persistent_worker`)
in a directory laid out like an execroot, and gets WorkRequests on stdin.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import runner
import wire

# `python3 tool.py runner ARGS`, as the actions start it.
RUNNER = (str(Path(runner.__file__).resolve().parent / "tool.py"), "runner")


def _request(arguments: list[str], inputs: list[str], request_id: int = 0) -> bytes:
    def field(number: int, payload: bytes) -> bytes:
        return bytes([number << 3 | 2]) + wire.varint(len(payload)) + payload

    body = b"".join(field(1, a.encode()) for a in arguments)
    body += b"".join(field(2, field(1, p.encode())) for p in inputs)
    if request_id:
        body += b"\x18" + wire.varint(request_id)
    return wire.varint(len(body)) + body


def _responses(data: bytes) -> list[dict[str, object]]:
    out, pos = [], 0
    while pos < len(data):
        size, pos = wire.read_varint(data, pos)
        message = {"exit_code": 0, "output": "", "request_id": 0}
        for number, value in wire.fields(data[pos : pos + size]):
            key = {1: "exit_code", 2: "output", 3: "request_id"}[number]
            message[key] = value.decode() if isinstance(value, bytes) else value
        out.append(message)
        pos += size
    return out


def _execroot(tmp_path: Path) -> Path:
    """An execroot with two packages in site-packages, which record who imported them."""
    root = tmp_path / "execroot"
    site = root / "external/env/venv/lib/python3/site-packages"
    record = site / "declared-1.0.dist-info/RECORD"
    record.parent.mkdir(parents=True)
    record.write_text("declared/__init__.py,,\n")
    for name in ("declared", "undeclared"):
        (site / name).mkdir(parents=True)
        (site / name / "__init__.py").write_text(
            textwrap.dedent("""
            import os, sys
            # Who imported this module: its pid (2 for a trial: the second
            # process of its PID namespace) and 1 if that process runs without
            # `site` (the worker and its forks), 0 for a new interpreter.
            IMPORTED_BY = [os.getpid(), sys.flags.no_site]
            STATE = []
            """)
        )
    (root / "pkg").mkdir()
    (root / "pkg/data.txt").write_text("data\n")
    (root / "pkg/hp.json").write_text("{}")
    (root / "pkg/train.py").write_text(
        textwrap.dedent("""
        import argparse, json, os, sys, time
        p = argparse.ArgumentParser()
        p.add_argument("--data"); p.add_argument("--model-output-path"); p.add_argument("--hyperparams")
        a = p.parse_args()
        if os.environ.get("MODE") == "undeclared":
            import undeclared
        import declared
        declared.STATE.append(1)
        with open(a.model_output_path, "w") as f:
            json.dump({"state": len(declared.STATE), "stdin": sys.stdin.read(),
                       "imported_by": declared.IMPORTED_BY,
                       "argv0": sys.argv[0], "cwd": os.getcwd(), "quit": callable(exit)}, f)
        if os.environ.get("MODE") == "sleep":
            time.sleep(600)
        """)
    )
    return root


INPUTS = [
    "external/env/venv/lib/python3/site-packages/declared/__init__.py",
    "pkg/train.py",
    "pkg/data.txt",
]


def _train(n: int, *extra: str) -> list[str]:
    return [
        "train",
        "--hyperparams-file",
        "pkg/hp.json",
        "--model-output-path",
        f"out/m{n}",
        "--data",
        "pkg/data.txt",
        "--target",
        f"//pkg:m{n}",
        "--script",
        "pkg/train.py",
        "--python-script",
        *extra,
    ]


SITE = "external/env/venv/lib/python3/site-packages/"
STARTUP = [
    "--site-package",
    SITE + "declared",
    "--site-package",
    SITE + "declared-1.0.dist-info",
]


def _env(mode: str = "") -> dict[str, str]:
    """The environment Bazel gives a worker: databazel's defaults (common.bzl)."""
    return {
        "PATH": os.environ["PATH"],
        "MODE": mode,
        "PYTHONUTF8": "1",
        "PYTHONNOUSERSITE": "1",
        "PYTHONHASHSEED": "0",
    }


def _serve(
    root: Path, requests: bytes, mode: str = "", startup: list[str] = STARTUP
) -> subprocess.CompletedProcess[bytes]:
    env = _env(mode)
    worker = subprocess.Popen(
        [sys.executable, "-S", *RUNNER, *startup, "--persistent_worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=root,
        env=env,
    )
    out, err = worker.communicate(requests, timeout=120)
    proc = subprocess.CompletedProcess(worker.args, worker.returncode, out, err)
    proc.pid = worker.pid  # type: ignore[attr-defined]
    return proc


def _imported_by(root: Path, n: int) -> tuple[int, int]:
    """Who imported the package trial n used (its IMPORTED_BY)."""
    return tuple(json.loads((root / f"out/m{n}").read_text())["imported_by"])  # type: ignore[return-value]


def test_requests_run_in_forked_children_of_a_warm_parent(tmp_path: Path) -> None:
    root = _execroot(tmp_path)
    (root / "out").mkdir()
    requests = b"".join(_request(_train(n), INPUTS, request_id=n) for n in range(1, 5))
    proc = _serve(root, requests)
    assert proc.returncode == 0, proc.stderr.decode()
    responses = _responses(proc.stdout)
    assert [(r["exit_code"], r["output"], r["request_id"]) for r in responses] == [
        (0, "", n) for n in range(1, 5)
    ]
    for n in range(1, 5):
        model = json.loads((root / f"out/m{n}").read_text())
        # Each trial saw the package's state fresh, as a new process would.
        assert model["state"] == 1
        assert model["stdin"] == ""
        assert model["argv0"] == str(root / "pkg/train.py")
        assert model["cwd"] == str(root)
        assert model["quit"] is True
    # The first trial's child imported the package itself (forked: the
    # second process of its PID namespace, without `site`); the parent
    # learned it and imported it; the three later children inherited it.
    assert [_imported_by(root, n) for n in range(1, 5)] == [(2, 1)] + [
        (proc.pid, 1)
    ] * 3


def test_undeclared_package_is_not_importable(tmp_path: Path) -> None:
    root = _execroot(tmp_path)
    (root / "out").mkdir()
    proc = _serve(root, _request(_train(1), INPUTS), mode="undeclared")
    [response] = _responses(proc.stdout)
    assert response["exit_code"] == 1
    assert "ModuleNotFoundError: No module named 'undeclared'" in str(
        response["output"]
    )
    assert not (root / "out/m1").exists()


def test_timeout_kills_the_child_and_the_worker_goes_on(tmp_path: Path) -> None:
    root = _execroot(tmp_path)
    (root / "out").mkdir()
    requests = _request(_train(1, "--timeout", "1"), INPUTS, 1)
    proc = _serve(root, requests, mode="sleep")
    [response] = _responses(proc.stdout)
    assert response["exit_code"] == 1
    assert (
        "databazel: error: //pkg:m1: train script pkg/train.py was still running "
        "after the timeout of 1 s and was killed"
    ) in str(response["output"])
    assert not (root / "out/m1").exists()


def test_a_recreated_environment_makes_the_worker_answer_cold_and_exit(
    tmp_path: Path,
) -> None:
    root = _execroot(tmp_path)
    (root / "out").mkdir()
    # PYTHONPATH: what the environment's interpreter sees in a process of its own.
    env = _env()
    env["PYTHONPATH"] = str(root / SITE)
    proc = subprocess.Popen(
        [sys.executable, "-S", *RUNNER, *STARTUP, "--persistent_worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=root,
        env=env,
    )
    assert proc.stdin and proc.stdout
    proc.stdin.write(_request(_train(1), INPUTS, 1))
    proc.stdin.flush()
    first = wire.read_message(proc.stdout)  # type: ignore[arg-type]
    assert first is not None
    # python_env re-created the environment (same version, new files).
    record = root / SITE / "declared-1.0.dist-info/RECORD"
    record.unlink()
    record.write_text("declared/__init__.py,,\nother,,\n")
    proc.stdin.write(_request(_train(2), INPUTS, 2))
    proc.stdin.flush()
    second = wire.read_message(proc.stdout)  # type: ignore[arg-type]
    assert second is not None
    assert proc.wait(timeout=30) == 0  # it exits after answering
    assert [r["exit_code"] for r in _responses(_frame(first) + _frame(second))] == [
        0,
        0,
    ]
    assert json.loads((root / "out/m2").read_text())["state"] == 1
    # The second trial ran as a new process (not a child of the stale parent,
    # which would have found the package imported), importing it itself.
    assert _imported_by(root, 2) == (2, 0)


def _frame(message: bytes) -> bytes:
    return wire.varint(len(message)) + message


def test_the_runners_modules_never_shadow_a_scripts_own(tmp_path: Path) -> None:
    root = _execroot(tmp_path)
    (root / "out").mkdir()
    names = ("contract", "outputs", "records", "supervise")
    for name in names:
        (root / f"pkg/{name}.py").write_text(f"WHO = 'the script\\'s {name}'\n")
    (root / "pkg/train.py").write_text(
        textwrap.dedent("""
        import argparse, json
        import contract, outputs, records, supervise
        p = argparse.ArgumentParser()
        p.add_argument("--data"); p.add_argument("--model-output-path"); p.add_argument("--hyperparams")
        a = p.parse_args()
        with open(a.model_output_path, "w") as f:
            json.dump([m.WHO for m in (contract, outputs, records, supervise)], f)
        """)
    )
    inputs = INPUTS + [f"pkg/{name}.py" for name in names]
    siblings = [a for name in names for a in ("--input", f"pkg/{name}.py")]
    requests = b"".join(
        _request(_train(n, *siblings), inputs, request_id=n) for n in (1, 2)
    )
    proc = _serve(root, requests)
    assert proc.returncode == 0, proc.stderr.decode()
    assert [r["exit_code"] for r in _responses(proc.stdout)] == [0, 0]
    for n in (1, 2):
        assert json.loads((root / f"out/m{n}").read_text()) == [
            f"the script's {name}" for name in names
        ]


def test_a_package_that_starts_a_thread_stops_the_forking(tmp_path: Path) -> None:
    """Forking a process with a second thread copies the locks that thread
    holds: once the parent has one, later scripts run as new processes."""
    root = _execroot(tmp_path)
    (root / "out").mkdir()
    init = root / SITE / "declared/__init__.py"
    init.write_text(
        init.read_text()
        + "import threading, time\n"
        + "threading.Thread(target=time.sleep, args=(600,), daemon=True).start()\n"
    )
    # The package's import root, as Bazel gives it: for scripts run as new processes.
    requests = b"".join(
        _request(_train(n, "--pythonpath", SITE), INPUTS, request_id=n)
        for n in range(1, 5)
    )
    proc = _serve(root, requests)
    assert proc.returncode == 0, proc.stderr.decode()
    assert [r["exit_code"] for r in _responses(proc.stdout)] == [0, 0, 0, 0]
    # The first child imported it, then the parent (which learned it, and
    # got a thread), then each later trial in a process of its own.
    assert [_imported_by(root, n) for n in range(1, 5)] == [(2, 1)] + [(2, 0)] * 3
    for n in range(1, 5):
        assert json.loads((root / f"out/m{n}").read_text())["state"] == 1


def _pip_repositories(root: Path) -> list[str]:
    """rules_python's pip_parse layout beside the execroot's python_env: one
    repository per distribution, its root the import root (`declared` and
    `undeclared`), and a repository of first-party code without a `.dist-info`.
    Returns the startup arguments Bazel gives a trial that declares
    `@pypi_declared//:pkg` and `@mylib//:lib`."""
    for name in ("declared", "undeclared"):
        repo = root / f"external/pypi_{name}"
        (repo / f"{name}-2.0.dist-info").mkdir(parents=True)
        (repo / f"{name}-2.0.dist-info/RECORD").write_text(f"{name}/__init__.py,,\n")
        (repo / name).mkdir()
        (repo / name / "__init__.py").write_text(
            (root / SITE / "declared/__init__.py").read_text().replace("declared", name)
        )
    (root / "external/mylib/mylib").mkdir(parents=True)
    (root / "external/mylib/mylib/__init__.py").write_text(
        (root / SITE / "declared/__init__.py").read_text()
    )
    return [
        "--site-package",
        "external/pypi_declared/declared",
        "--site-package",
        "external/pypi_declared/declared-2.0.dist-info",
        "--site-package",
        "external/mylib/mylib",
    ]


def test_pip_repositories_are_declared_only_and_imported_ahead(
    tmp_path: Path,
) -> None:
    root = _execroot(tmp_path)
    (root / "out").mkdir()
    startup = _pip_repositories(root)
    (root / "pkg/train.py").write_text(
        (root / "pkg/train.py")
        .read_text()
        .replace("import declared\n", "import declared, mylib\n")
        .replace(
            '"stdin"',
            '"version": declared.__file__, "mylib_imported_by": mylib.IMPORTED_BY, "stdin"',
        )
    )
    pythonpath = [
        "--pythonpath",
        "external/pypi_declared",
        "--pythonpath",
        "external/mylib",
    ]
    for mode in ("", "undeclared"):
        requests = b"".join(
            _request(_train(n, *pythonpath), INPUTS, request_id=n) for n in range(1, 4)
        )
        proc = _serve(root, requests, mode, startup)
        assert proc.returncode == 0, proc.stderr.decode()
        codes = [r["exit_code"] for r in _responses(proc.stdout)]
        if mode == "undeclared":
            # Not on the script's path, though its repository is in the execroot.
            assert codes == [1, 1, 1]
            assert all(
                "No module named 'undeclared'" in str(r["output"])
                for r in _responses(proc.stdout)
            )
            continue
        assert codes == [0, 0, 0]
        for n in range(1, 4):
            model = json.loads((root / f"out/m{n}").read_text())
            assert model["state"] == 1
            assert model["version"] == str(
                root / "external/pypi_declared/declared/__init__.py"
            )
        # The package: by the first child, then by the parent, never again.
        assert [_imported_by(root, n) for n in range(1, 4)] == [(2, 1)] + [
            (proc.pid, 1)
        ] * 2
        # First-party code of another repository is never imported ahead:
        # each trial imports it itself.
        for n in range(1, 4):
            model = json.loads((root / f"out/m{n}").read_text())
            assert model["mylib_imported_by"] == [2, 1]


def test_an_unisolated_trial_leaves_the_workers_packages_in_place(
    tmp_path: Path,
) -> None:
    # Outside isolation a forked trial shares the worker's files. Its exit
    # (atexit) must not remove the directory the parent's declared packages
    # are linked from: the next trial imports a package from it that no
    # trial imported before.
    root = _execroot(tmp_path)
    (root / "out").mkdir()
    site = root / SITE
    (site / "later").mkdir()
    (site / "later/__init__.py").write_text("VALUE = 7\n")
    (site / "later-1.0.dist-info").mkdir()
    (site / "later-1.0.dist-info/RECORD").write_text("later/__init__.py,,\n")
    (root / "pkg/train_later.py").write_text(
        textwrap.dedent("""
        import argparse, later
        p = argparse.ArgumentParser()
        p.add_argument("--data"); p.add_argument("--model-output-path"); p.add_argument("--hyperparams")
        with open(p.parse_args().model_output_path, "w") as f:
            f.write(str(later.VALUE))
        """)
    )
    startup = [
        *STARTUP,
        *("--site-package", SITE + "later"),
        *("--site-package", SITE + "later-1.0.dist-info"),
    ]
    second = _train(2, "--unisolated")
    second[second.index("pkg/train.py")] = "pkg/train_later.py"
    inputs = [*INPUTS, "pkg/train_later.py", SITE + "later/__init__.py"]
    requests = _request(_train(1, "--unisolated"), inputs, 1) + _request(
        second, inputs, 2
    )
    proc = _serve(root, requests, startup=startup)
    assert [r["exit_code"] for r in _responses(proc.stdout)] == [0, 0], proc.stdout
    assert (root / "out/m2").read_text() == "7"
