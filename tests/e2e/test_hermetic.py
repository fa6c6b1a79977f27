"""Warm and isolated by default (docs/warm-workers.md), with real Bazel.

The shared fixture workspace is set up as docs/install.md says, and these
builds pass no flag unless the test is about one: trials run in persistent
workers, and each script in namespaces of its own.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bazel_harness import SANDBOXED, Workspace

# A training script whose behaviour the hyperparameters choose; it records
# what it saw in its model file.
TRAIN = """\
import argparse, ctypes, json, os, socket, sys, time

p = argparse.ArgumentParser()
p.add_argument("--data"); p.add_argument("--model-output-path"); p.add_argument("--hyperparams")
a = p.parse_args()
hp = json.loads(a.hyperparams)
seen = {"data": open(a.data).read()}
if hp.get("read"):
    seen["read"] = open(hp["read"]).read()
if hp.get("port"):
    try:
        socket.create_connection(("127.0.0.1", int(hp["port"])), timeout=5).close()
        seen["connect"] = "ok"
    except OSError as e:
        seen["connect"] = type(e).__name__
if hp.get("process_name"):
    # PR_SET_NAME: the test finds the trial's processes by name.
    ctypes.CDLL(None).prctl(15, hp["process_name"].encode(), 0, 0, 0)
if hp.get("daemon"):
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            time.sleep(600)
            os._exit(0)
        os._exit(0)
if hp.get("sleep"):
    time.sleep(float(hp["sleep"]))
with open(a.model_output_path, "w") as f:
    json.dump(seen, f, sort_keys=True)
"""

EVALUATE = """\
import argparse, json, os
p = argparse.ArgumentParser()
p.add_argument("--model-path"); p.add_argument("--data-path"); p.add_argument("--output-dir")
a = p.parse_args()
model = json.load(open(a.model_path))
with open(os.path.join(a.output_dir, "metrics.json"), "w") as f:
    json.dump({"chars": len(json.dumps(model)), "data": len(open(a.data_path).read())}, f)
"""

LOAD = 'load("@databazel//databazel:defs.bzl", "evaluate", "model")\n'


def _model(name: str, network: bool = False, **hyperparams: str) -> str:
    return f"""
model(
    name = "{name}",
    hyperparams = {json.dumps(hyperparams)},
    train_executable = "train.py",
    training_data = "data.txt",
    network = {network},
)
"""


def processes_named(name: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/comm").read_text().strip() == name:
                    found.append(int(entry))
            except OSError:
                continue
    return found


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[1])


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


@pytest.fixture(scope="module")
def iso(ws: Workspace) -> Iterator[Workspace]:
    ws.write("iso/train.py", TRAIN)
    ws.write("iso/evaluate.py", EVALUATE)
    ws.write("iso/data.txt", "declared data\n")
    ws.write("iso/secret.txt", "a file no target declares\n")
    yield ws


def test_trials_run_in_workers_as_isolated_as_in_the_sandbox(iso: Workspace) -> None:
    ws = iso
    ws.write(
        "iso/BUILD",
        LOAD
        + _model("plain")
        + 'evaluate(name = "plain_eval", model = ":plain", eval_executable = "evaluate.py", test_data = "data.txt")\n',
    )
    warm = ws.build("//iso:plain_eval")
    trials = [
        s
        for s in warm.spawns
        if s.get("mnemonic") in ("DatabazelTrain", "DatabazelEvaluate")
    ]
    assert [s.get("runner") for s in trials] == ["worker", "worker"]
    assert re.search(r"INFO: \d+ processes: .*2 worker", warm.stderr), warm.stderr[
        -2000:
    ]
    outputs = {
        p: ws.bin(p).read_bytes()
        for p in ("iso/plain.model", "iso/plain_eval.metrics.json")
    }
    assert json.loads(outputs["iso/plain.model"]) == {"data": "declared data\n"}

    # The one documented flag: a new process per trial, in Bazel's sandbox;
    # the same bytes.
    sandboxed = ws.build("//iso:plain_eval", flags=SANDBOXED)
    trials = [
        s
        for s in sandboxed.spawns
        if s.get("mnemonic") in ("DatabazelTrain", "DatabazelEvaluate")
    ]
    assert [s.get("runner") for s in trials] == ["linux-sandbox", "linux-sandbox"]
    assert {p: ws.bin(p).read_bytes() for p in outputs} == outputs


def test_an_undeclared_file_is_not_there(iso: Workspace) -> None:
    ws = iso
    ws.write(
        "iso/BUILD",
        LOAD + _model("relative", read="iso/secret.txt"),
    )
    # Relative to the working directory, as a script names its inputs.
    result = ws.build("//iso:relative", check=False)
    assert result.returncode != 0
    assert (
        "databazel: error: //iso:relative: train script iso/train.py exited with code 1"
        in result.stderr
    )
    assert (
        "FileNotFoundError: [Errno 2] No such file or directory: 'iso/secret.txt'"
        in result.stderr
    )
    assert not ws.bin("iso/relative.model").exists()


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


def test_no_network_unless_network_true(iso: Workspace, listening: int) -> None:
    ws = iso
    port = str(listening)
    ws.write(
        "iso/BUILD",
        LOAD + _model("offline", port=port) + _model("online", network=True, port=port),
    )
    ws.build("//iso:offline", "//iso:online")
    assert (
        json.loads(ws.bin("iso/offline.model").read_text())["connect"]
        == "ConnectionRefusedError"
    )
    assert json.loads(ws.bin("iso/online.model").read_text())["connect"] == "ok"


def _build_watching(ws: Workspace, target: str, name: str) -> tuple[int, int]:
    """Build `target`; the return code, and the most processes named `name` at once."""
    most = 0
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        build = pool.submit(ws.build, target, check=False)
        while not build.done():
            most = max(most, len(processes_named(name)))
            time.sleep(0.02)
        return build.result().returncode, most


def test_a_daemon_started_by_a_trial_is_gone_when_its_action_ends(
    iso: Workspace,
) -> None:
    ws = iso
    name = f"dbz-daemon-{os.getpid() % 10000}"
    ws.write(
        "iso/BUILD", LOAD + _model("daemon", daemon="1", process_name=name, sleep="1")
    )
    code, most = _build_watching(ws, "//iso:daemon", name)
    assert code == 0 and most >= 2  # the trial and its daemon ran...
    assert processes_named(name) == []  # ... and the daemon ended with the action


def test_a_killed_worker_leaves_no_process_and_no_output(
    iso: Workspace, tmp_path: Path
) -> None:
    ws = iso
    name = f"dbz-killed-{os.getpid() % 10000}"
    # The trial and a child of its own sleep; the rebuild waits them out.
    ws.write(
        "iso/BUILD", LOAD + _model("victim", daemon="1", process_name=name, sleep="8")
    )
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        build = pool.submit(ws.build, "//iso:victim", check=False)
        deadline = time.monotonic() + 120
        while len(processes_named(name)) < 2:
            assert time.monotonic() < deadline and not build.done(), (
                "the trial never ran"
            )
            time.sleep(0.05)
        # From the trial up to its worker: the process Bazel started with
        # --persistent_worker.
        worker = processes_named(name)[0]
        while "--persistent_worker" not in _cmdline(worker):
            worker = _parent(worker)
        os.kill(worker, signal.SIGKILL)
        result = build.result()
    assert result.returncode != 0
    deadline = time.monotonic() + 10
    while processes_named(name):
        assert time.monotonic() < deadline, f"left behind: {processes_named(name)}"
        time.sleep(0.05)
    time.sleep(9)  # past the trial's own sleep: nothing writes its output late
    assert not ws.bin("iso/victim.model").exists()
    again = ws.build("//iso:victim")
    assert again.executed("DatabazelTrain") == 1
    assert json.loads(ws.bin("iso/victim.model").read_text()) == {
        "data": "declared data\n"
    }


def test_an_unisolated_trial_never_reaches_an_isolated_build(
    iso: Workspace, tmp_path: Path
) -> None:
    ws = iso
    cache = f"--disk_cache={tmp_path / 'cache'}"
    unisolated = ("--@databazel//databazel:isolate=false", cache)
    ws.write("iso/BUILD", LOAD + _model("leaky", read="iso/secret.txt"))
    first = ws.build("//iso:leaky", flags=unisolated)
    # Unisolated, it read the file; the build said so once, naming the setting.
    assert (
        json.loads(ws.bin("iso/leaky.model").read_text())["read"]
        == "a file no target declares\n"
    )
    assert (
        first.stderr.count(
            "@databazel//databazel:isolate=false: trials in warm workers"
        )
        == 1
    )
    ws.bazel("clean", check=True)
    again = ws.build("//iso:leaky", flags=unisolated)
    assert [
        s["remoteCacheHit"]
        for s in again.spawns
        if s.get("mnemonic") == "DatabazelTrain"
    ] == [True]
    ws.bazel("clean", check=True)
    # Isolated, against the same cache: not served the unisolated model.
    isolated = ws.build("//iso:leaky", flags=(cache,), check=False)
    assert [
        s["remoteCacheHit"]
        for s in isolated.spawns
        if s.get("mnemonic") == "DatabazelTrain"
    ] == [False]
    assert isolated.returncode != 0
    assert "No such file or directory: 'iso/secret.txt'" in isolated.stderr
