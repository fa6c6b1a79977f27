"""End-to-end tests of sharing work: a disk cache, an HTTP remote cache (nginx
WebDAV, tools/cache_server.sh) and remote execution (BuildGrid with two fixture
workers, tools/buildgrid.sh), all on loopback. Servers are started per module
and always stopped, even when a test fails."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from bazel_harness import (
    REPO,
    Probe,
    Workspace,
    needs_server,
    progress_events,
    remote_flags,
    start_on_a_free_port,
    tool,
    wait_until,
)

LOAD = (
    'load("@databazel//databazel:defs.bzl", "evaluate", "hyperparam_search", "model")\n'
)
TRIALS = ["0", "1", "2", "3"]
SPAWNED = ("DatabazelTrain", "DatabazelEvaluate", "DatabazelReport")
# `./setup.sh --no-remote` installs neither: their tests skip, saying so.
needs_nginx = needs_server("nginx")
needs_buildgrid = needs_server("buildgrid")


def search_build(name: str, xs: list[str] = TRIALS, **extra: str) -> str:
    lines = "".join(f"    {k} = {v},\n" for k, v in extra.items())
    return (
        LOAD
        + f"""
hyperparam_search(
    name = "{name}",
    eval_executable = "//scripts:evaluate.py",
    grid = {{"x": {json.dumps(xs)}}},
    metric = "accuracy",
    test_data = "test.txt",
    train_executable = "//scripts:train.py",
    training_data = "train.txt",
    deps = ["//lib:fixturelib"],
{lines})
"""
    )


def trial_actions(trials: list[str] = TRIALS) -> int:
    """The actions of a search of these trials: a training and an evaluation each, a report."""
    return 2 * len(trials) + 1


def write_search(ws: Workspace, pkg: str, **extra: str) -> None:
    ws.write(f"{pkg}/train.txt", f"{pkg} training data\n")
    ws.write(f"{pkg}/test.txt", f"{pkg} test data\n")
    ws.write(f"{pkg}/BUILD", search_build("s", **extra))


def search_outputs(ws: Workspace, pkg: str) -> dict[str, bytes]:
    """The bytes of every model, metrics file and report of the search PKG:s."""
    names = [f"s__x-{x}.model" for x in TRIALS]
    names += [f"s__x-{x}__eval.metrics.json" for x in TRIALS]
    names += ["s.json"]
    return {name: ws.bin(f"{pkg}/{name}").read_bytes() for name in names}


@contextlib.contextmanager
def other_output_base(ws: Workspace, name: str) -> Iterator[Workspace]:
    """The same workspace seen by a second, empty output base (its own Bazel server)."""
    other = Workspace(ws.root, ws.output_base.parent / name, convenience_symlinks=False)
    try:
        yield other
    finally:
        other.remove(keep_root=True)


# --- servers ---------------------------------------------------------------------


class CacheServer:
    """tools/cache_server.sh: nginx's WebDAV store on 127.0.0.1."""

    def __init__(self) -> None:
        # Directly under /tmp: nginx's worker user must reach the store.
        self.state = Path(tempfile.mkdtemp(prefix="databazel-cache-", dir="/tmp"))
        self.port = 0
        self.url = self.flag = ""

    def start(self) -> None:
        self.port = start_on_a_free_port(
            lambda port: tool("cache_server.sh", "start", str(self.state), str(port))
        )
        self.url = f"http://127.0.0.1:{self.port}"
        self.flag = f"--remote_cache={self.url}"

    def stop(self) -> None:
        _run_tool("cache_server.sh", "stop", str(self.state))

    def blobs(self) -> list[Path]:
        cas = self.state / "store" / "cas"
        return sorted(cas.iterdir()) if cas.exists() else []

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.state, ignore_errors=True)


def _run_tool(script: str, *args: str) -> None:
    proc = tool(script, *args)
    assert proc.returncode == 0, f"{script} {' '.join(args)}: {proc.stderr}"


@pytest.fixture(scope="module")
def cache_server() -> Iterator[CacheServer]:
    server = CacheServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()


class BuildGrid:
    """tools/buildgrid.sh: BuildGrid and two fixture workers on 127.0.0.1."""

    def __init__(self, state: Path, workers: int = 2) -> None:
        self.state = state
        self.port = start_on_a_free_port(
            lambda port: tool(
                "buildgrid.sh", "start", str(state), str(port), str(workers)
            )
        )
        self.flag = f"--remote_executor=grpc://127.0.0.1:{self.port}"
        # What the docs give: `--config=remote` of .bazelrc, on this port.
        self.config = remote_flags(self.port)

    def worker_runs(self) -> dict[str, int]:
        """How many actions each worker has run so far."""
        return {
            log.stem: log.read_text().count(": ran action for ")
            for log in sorted((self.state / "logs").glob("worker-*.log"))
        }

    def input_roots(self) -> list[dict[str, float]]:
        """Per action run so far: files in its input root, and files fetched for it."""
        pattern = r"input root: (\d+) files, (\d+) fetched \(([\d.]+) MB\)"
        return [
            {"files": int(f), "fetched": int(n), "mb": float(mb)}
            for f, n, mb in re.findall(pattern, self.worker_log())
        ]

    def worker_log(self) -> str:
        return "".join(
            p.read_text() for p in sorted((self.state / "logs").glob("worker-*.log"))
        )


@contextlib.contextmanager
def started_grid(state: Path) -> Iterator[BuildGrid]:
    try:
        yield BuildGrid(state)
    finally:
        _run_tool("buildgrid.sh", "stop", str(state))


@pytest.fixture(scope="module")
def buildgrid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuildGrid]:
    with started_grid(tmp_path_factory.mktemp("buildgrid")) as grid:
        yield grid


@pytest.fixture(scope="module")
def remote_ws(ws: Workspace) -> Iterator[Workspace]:
    """The session workspace from an output base of its own, for remote execution."""
    with other_output_base(ws, "remote_output_base") as other:
        yield other


# --- disk cache ----------------------------------------------------------------------


def test_after_clean_expunge_the_disk_cache_serves_every_trial(
    ws: Workspace, tmp_path: Path
) -> None:
    write_search(ws, "diskcache")
    disk_cache = f"--disk_cache={tmp_path / 'disk_cache'}"
    with other_output_base(ws, "disk_cache_output_base") as other:
        first = other.build("//diskcache:s", flags=(disk_cache,))
        assert first.executed("DatabazelTrain") == len(TRIALS)
        expected = search_outputs(other, "diskcache")
        other.bazel("clean", "--expunge", check=True)
        again = other.build("//diskcache:s", flags=(disk_cache,))
        assert again.executed_by_mnemonic() == {}, again.executed_by_mnemonic()
        assert (
            sum(s.get("mnemonic") in SPAWNED for s in again.spawns) == trial_actions()
        )
        other._bin = None
        assert search_outputs(other, "diskcache") == expected


def test_the_documented_disk_cache_config_is_in_bazelrc() -> None:
    lines = (REPO / ".bazelrc").read_text().splitlines()
    assert "build:disk_cache --disk_cache=~/.cache/databazel/disk_cache" in lines


# --- HTTP remote cache (nginx WebDAV) --------------------------------------------------


@needs_nginx
def test_a_warm_http_cache_serves_a_search_to_an_empty_output_base(
    ws: Workspace, cache_server: CacheServer
) -> None:
    write_search(ws, "httpcache")
    first = ws.build("//httpcache:s", flags=(cache_server.flag,))
    assert first.executed("DatabazelTrain") == len(TRIALS)
    assert cache_server.blobs(), "nothing was uploaded to the cache"
    expected = search_outputs(ws, "httpcache")

    with other_output_base(ws, "http_cache_output_base") as other:
        again = other.build("//httpcache:s", flags=(cache_server.flag,))
        assert again.executed_by_mnemonic() == {}, again.executed_by_mnemonic()
        hits = [s for s in again.spawns if s.get("mnemonic") in SPAWNED]
        assert len(hits) == trial_actions()
        assert all(s.get("remoteCacheHit") for s in hits)
        assert search_outputs(other, "httpcache") == expected


@needs_nginx
def test_stopping_the_cache_server_mid_build_still_ends_in_a_correct_local_build(
    ws: Workspace, tmp_path: Path, probe: Probe
) -> None:
    server = CacheServer()  # its own: this test stops it
    log = tmp_path / "progress.log"
    release = tmp_path / "release"
    env = {
        "DATABAZEL_PROBE": probe.address,
        "GATE_FROM": "2",
        "PROGRESS_LOG": str(log),
        "RELEASE_FILE": str(release),
    }
    write_search(
        ws,
        "cachedown",
        hyperparams='{"behaviour": "gate"}',
        env=json.dumps(env),
        network="True",  # the gate reports to the test's probe
    )
    stderr = tmp_path / "stderr.txt"
    try:
        server.start()
        client = ws.start(
            "build",
            server.flag,
            "--jobs=4",
            "--local_cpu_resources=4",
            "//cachedown:s",
            stderr=stderr,
        )
        try:
            # x=0 and x=1 finish (and are uploaded); x=2 and x=3 wait for `release`.
            wait_until(
                lambda: (
                    sum(e == "blocked" for e, _ in progress_events(log)) == 2
                    and {x for e, x in progress_events(log) if e == "end"} == {"0", "1"}
                ),
                180,
                "two blocked trials and two finished ones",
            )
            server.stop()
        finally:
            release.touch()
        assert client.wait(timeout=300) == 0, stderr.read_text()[-4000:]
        # Whatever reached the store before the stop is whole: named by its digest.
        for blob in server.blobs():
            assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    finally:
        release.touch()
        server.remove()

    # Bazel 4.2 warns and goes on locally: uploads of the finished trials
    # fail, and so do the lookups of the actions that come after the stop.
    output = stderr.read_text()
    assert "WARNING: Writing to Remote Cache:" in output, output[-4000:]
    assert "WARNING: Reading from Remote Cache:" in output, output[-4000:]
    assert "Connection refused" in output
    assert "Build completed successfully" in output
    for x in TRIALS:
        model = json.loads(ws.bin(f"cachedown/s__x-{x}.model").read_text())
        assert json.loads(model["hyperparams_arg"]) == {"behaviour": "gate", "x": x}
    report = json.loads(ws.bin("cachedown/s.json").read_text())
    assert sorted(t["hyperparams"]["x"] for t in report["trials"]) == TRIALS


# --- remote execution (BuildGrid) ------------------------------------------------------


@needs_buildgrid
def test_remote_execution_on_two_workers_matches_a_local_build_byte_for_byte(
    ws: Workspace, remote_ws: Workspace, buildgrid: BuildGrid
) -> None:
    write_search(ws, "remote")
    local = ws.build("//remote:s")
    assert local.executed("DatabazelTrain") == len(TRIALS)
    expected = search_outputs(ws, "remote")

    remote = remote_ws.build("//remote:s", flags=(buildgrid.flag, "--jobs=4"))
    runners = {
        (s.get("mnemonic"), s.get("runner"))
        for s in remote.spawns
        if s.get("mnemonic") in SPAWNED
    }
    assert runners == {(m, "remote") for m in SPAWNED}, runners
    assert remote.executed("DatabazelTrain") == len(TRIALS)
    assert remote.executed("DatabazelEvaluate") == len(TRIALS)
    runs = buildgrid.worker_runs()
    assert sorted(runs) == ["worker-1", "worker-2"]
    assert all(n > 0 for n in runs.values()), runs
    assert search_outputs(remote_ws, "remote") == expected

    # A second build with nothing in the output base: BuildGrid's action cache.
    remote_ws.bazel("clean", check=True)
    again = remote_ws.build("//remote:s", flags=(buildgrid.flag,))
    assert again.executed_by_mnemonic() == {}, again.executed_by_mnemonic()
    assert sum(s.get("mnemonic") in SPAWNED for s in again.spawns) == trial_actions()
    assert buildgrid.worker_runs() == runs
    assert search_outputs(remote_ws, "remote") == expected


def _databazel_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "databazel: error:" in line]


@needs_buildgrid
def test_a_trial_failing_remotely_reports_its_stderr_as_locally(
    ws: Workspace, remote_ws: Workspace, buildgrid: BuildGrid
) -> None:
    ws.write("remotefail/data.txt", "x\n")
    ws.write(
        "remotefail/BUILD",
        LOAD
        + """
model(
    name = "m",
    hyperparams = {"behaviour": "exit3"},
    train_executable = "//scripts:train.py",
    training_data = "data.txt",
    deps = ["//lib:fixturelib"],
)
""",
    )
    local = ws.build("//remotefail:m", check=False)
    remote = remote_ws.build("//remotefail:m", check=False, flags=(buildgrid.flag,))
    assert local.returncode != 0 and remote.returncode != 0
    assert [s.get("runner") for s in remote.spawns] == ["remote"]
    for result in (local, remote):
        assert "FATAL: the learning rate is too high" in result.stderr
    assert _databazel_errors(remote.stderr) == _databazel_errors(local.stderr)
    assert _databazel_errors(local.stderr), local.stderr[-3000:]


@needs_buildgrid
def test_exec_properties_of_a_search_reach_each_of_its_remote_actions(
    ws: Workspace, remote_ws: Workspace, buildgrid: BuildGrid
) -> None:
    # `exec_properties` is an attribute of every rule; the macro passes it on
    # to each target it makes. BuildGrid accepts container-image (tools/buildgrid.sh).
    image = "docker://python:3.11-slim"
    ws.write("remoteimage/train.txt", "x\n")
    ws.write("remoteimage/test.txt", "y\n")
    ws.write(
        "remoteimage/BUILD",
        search_build(
            "s", xs=["7"], exec_properties=json.dumps({"container-image": image})
        ),
    )
    before = buildgrid.worker_log().count(image)
    result = remote_ws.build("//remoteimage:s", flags=(buildgrid.flag,))
    assert result.executed_by_mnemonic() == dict.fromkeys(SPAWNED, 1)
    platform = f"platform={{'container-image': '{image}'}}"
    assert buildgrid.worker_log().count(platform) - before == 3


# --- remote execution with real packages -----------------------------------------------

SKLEARN_TRAIN = """\
import argparse, json, pickle

import numpy as np
from sklearn.linear_model import LogisticRegression

parser = argparse.ArgumentParser()
parser.add_argument("--data")
parser.add_argument("--model-output-path")
parser.add_argument("--hyperparams")
args = parser.parse_args()
data = np.loadtxt(args.data, delimiter=",")
model = LogisticRegression(C=float(json.loads(args.hyperparams)["C"]), max_iter=200)
model.fit(data[:, :-1], data[:, -1])
with open(args.model_output_path, "wb") as f:
    pickle.dump(model, f, protocol=4)
"""

SKLEARN_EVALUATE = """\
import argparse, json, os, pickle

import numpy as np
from sklearn.metrics import accuracy_score, log_loss

parser = argparse.ArgumentParser()
parser.add_argument("--model-path")
parser.add_argument("--data-path")
parser.add_argument("--output-dir")
args = parser.parse_args()
data = np.loadtxt(args.data_path, delimiter=",")
with open(args.model_path, "rb") as f:
    model = pickle.load(f)
x, y = data[:, :-1], data[:, -1]
metrics = {
    "accuracy": accuracy_score(y, model.predict(x)),
    "log_loss": log_loss(y, model.predict_proba(x)),
}
with open(os.path.join(args.output_dir, "metrics.json"), "w") as f:
    json.dump(metrics, f, sort_keys=True)
"""

SKLEARN_CS = ["0.1", "10"]


def _points(n: int, seed: int) -> str:
    """N rows `x1,x2,label` of two overlapping classes, from a fixed-seed generator."""
    rows, state = [], seed
    for i in range(n):
        values = []
        for _ in range(2):
            state = (state * 1103515245 + 12345) % 2**31
            values.append(state / 2**31)
        label = i % 2
        rows.append(
            f"{values[0] + 0.6 * label:.6f},{values[1] - 0.4 * label:.6f},{label}"
        )
    return "\n".join(rows) + "\n"


@pytest.fixture(scope="module")
def sklearn_ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """A workspace whose Python environment is this checkout's requirements_lock.txt."""
    base = tmp_path_factory.mktemp("sklearn")
    ws = Workspace.fixture(
        base / "ws",
        base / "output_base",
        python_env='requirements_lock = "@databazel//:requirements_lock.txt",',
    )
    ws.write("s/train.py", SKLEARN_TRAIN)
    ws.write("s/evaluate.py", SKLEARN_EVALUATE)
    ws.write("s/train.csv", _points(200, 1))
    ws.write("s/test.csv", _points(100, 2))
    ws.write(
        "s/BUILD",
        LOAD
        + f"""
load("@fixture_python//:requirements.bzl", "requirement")

hyperparam_search(
    name = "s",
    deps = [requirement("scikit-learn")],
    eval_executable = "evaluate.py",
    grid = {{"C": {json.dumps(SKLEARN_CS)}}},
    metric = "accuracy",
    test_data = "test.csv",
    train_executable = "train.py",
    training_data = "train.csv",
)
""",
    )
    try:
        yield ws
    finally:
        ws.remove()


def _sklearn_outputs(ws: Workspace) -> dict[str, bytes]:
    names = [f"s__C-{c}.model" for c in SKLEARN_CS]
    names += [f"s__C-{c}__eval.metrics.json" for c in SKLEARN_CS]
    names += ["s.json"]
    return {name: ws.bin(f"s/{name}").read_bytes() for name in names}


@needs_buildgrid
def test_a_search_importing_scikit_learn_runs_remotely_from_an_empty_grid_first_try(
    sklearn_ws: Workspace, tmp_path: Path
) -> None:
    local = sklearn_ws.build("//s:s")
    assert local.executed("DatabazelTrain") == len(SKLEARN_CS)
    expected = _sklearn_outputs(sklearn_ws)
    report = json.loads(expected["s.json"])
    assert report["best"]["metrics"]["accuracy"] > 0.7, report["best"]

    # A grid of its own: an empty CAS, action cache and worker content cache.
    with (
        started_grid(tmp_path / "grid") as grid,
        other_output_base(sklearn_ws, "sklearn_remote_output_base") as remote_ws,
    ):
        grpc_log = tmp_path / "grpc.log"
        flags = (*grid.config, "--jobs=8", f"--experimental_remote_grpc_log={grpc_log}")
        remote = remote_ws.build("//s:s", check=False, flags=flags)
        assert remote.returncode == 0, remote.stderr[-6000:]
        assert "during bulk transfer" not in remote.stderr
        # The cause of "N errors during bulk transfer": calls beyond BuildGrid's
        # thread pool are refused, and Bazel gives up on a blob after 5 retries.
        # With the documented settings, none is refused.
        calls = grpc_log.read_bytes()
        assert calls.count(b"ByteStream/Write") > 1000  # the packages were uploaded
        refused = calls.count(b"Concurrent RPC limit exceeded")
        assert refused == 0, f"BuildGrid refused {refused} calls"
        runners = {
            s.get("runner") for s in remote.spawns if s.get("mnemonic") in SPAWNED
        }
        assert runners == {"remote"}, runners
        assert remote.executed("DatabazelTrain") == len(SKLEARN_CS)
        assert _sklearn_outputs(remote_ws) == expected

        # Each training and evaluation carries scikit-learn and what it
        # requires: thousands of files. A worker fetches a file once; after
        # that, the content cache the two workers share links it.
        roots = grid.input_roots()
        assert len(roots) == trial_actions(SKLEARN_CS), roots
        heavy = [r for r in roots if r["files"] > 1000]
        assert len(heavy) == 2 * len(SKLEARN_CS), roots
        # Each worker fetches at most once (both may start at the same time).
        assert sum(r["fetched"] > 100 for r in heavy) <= 2, roots
        assert min(r["fetched"] for r in heavy) <= 5, roots
