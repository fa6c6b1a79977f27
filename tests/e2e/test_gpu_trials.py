"""GPU trials with real Bazel, on a stand-in for a machine with two GPUs.

The lock directory's `devices` file lists two GPUs in place of nvidia-smi.
Four trials declare `gpus = 1` and a fifth none; Bazel starts them all at
once (JOBS). Each GPU trial logs when it starts and ends and the
CUDA_VISIBLE_DEVICES it saw, and holds on until the CPU trial has seen two
GPU trials running at once (so the test needs no timing).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import other_user
import pytest
from bazel_harness import PROBE_CLIENT, SANDBOXED, Probe, Workspace
from other_user import OTHER_UID, needs_root

# Bazel runs as many local actions at once as it has CPUs (2 here): give it 5.
JOBS = ("--jobs=5", "--local_cpu_resources=5")

LOAD = 'load("@databazel//databazel:defs.bzl", "hyperparam_search", "model", "successive_halving")\n'

# The log and the release file are the test's, reached through its Probe.
TRAIN = (
    PROBE_CLIENT
    + """\
import argparse, json, os, sys, time

p = argparse.ArgumentParser()
p.add_argument("--data"); p.add_argument("--model-output-path"); p.add_argument("--hyperparams")
a = p.parse_args()
name = json.loads(a.hyperparams)["name"]
log, release = os.environ["GPU_LOG"], os.environ["RELEASE_FILE"]

def record(event):
    append_line(log, json.dumps([event, name, os.environ.get("CUDA_VISIBLE_DEVICES")]))

def lines():
    return [json.loads(line) for line in read_text(log).splitlines()]

deadline = time.monotonic() + 60
record("start")
if name == "cpu":
    # Runs beside the GPU trials: wait until two of them run at once.
    while True:
        events = lines()
        running = {n for e, n, _ in events if e == "start" and n != "cpu"} - {
            n for e, n, _ in events if e == "end"
        }
        if len(running) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    record("saw %d" % len(running))
    append_line(release, "")
else:
    while not exists(release) and time.monotonic() < deadline:
        time.sleep(0.05)
record("end")
with open(a.model_output_path, "w") as f:
    f.write(name + "\\n")
"""
)


def _model(name: str, gpus: int, env: dict[str, str]) -> str:
    return f"""
model(
    name = "{name}",
    env = {json.dumps(env)},
    gpus = {gpus},
    network = True,
    hyperparams = {{"name": "{name}"}},
    train_executable = "train.py",
    training_data = "data.txt",
)
"""


def test_two_gpus_four_gpu_trials(ws: Workspace, tmp_path: Path, probe: Probe) -> None:
    locks = tmp_path / "gpus"
    locks.mkdir()
    (locks / "devices").write_text("0\n1\n")
    log = tmp_path / "log.jsonl"
    env = {
        "DATABAZEL_GPU_LOCK_DIR": str(locks),
        "DATABAZEL_PROBE": probe.address,
        "GPU_LOG": str(log),
        "RELEASE_FILE": str(tmp_path / "release"),
    }
    names = [f"g{i}" for i in range(4)]
    ws.write("gpu/train.py", TRAIN)
    ws.write("gpu/data.txt", "x\n")
    ws.write(
        "gpu/BUILD",
        LOAD
        + "".join(_model(n, 1, env) for n in names)
        + _model("cpu", 0, env)
        + """
hyperparam_search(
    name = "s",
    eval_executable = "//scripts:evaluate.py",
    gpus = 1,
    exec_properties = {"Pool": "gpu-pool"},
    grid = {"name": ["a"]},
    metric = "accuracy",
    test_data = "data.txt",
    train_executable = "train.py",
    training_data = "data.txt",
)

hyperparam_search(
    name = "h",
    early_stopping = successive_halving(min_epochs = 1, max_epochs = 2, eta = 2),
    eval_executable = "//scripts:evaluate.py",
    gpus = 1,
    grid = {"name": ["a", "b"]},
    metric = "accuracy",
    test_data = "data.txt",
    train_executable = "train.py",
    training_data = "data.txt",
)
""",
    )
    targets = [f"//gpu:{n}" for n in names + ["cpu"]]
    result = ws.build(*targets, flags=JOBS)
    assert result.executed("DatabazelTrain") == 5

    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert [
        "saw 2",
        "cpu",
        "",
    ] in events  # a CPU trial ran beside two GPU trials, seeing no GPU
    running: dict[str, str] = {}
    most = 0
    for event, name, visible in events:
        if name == "cpu":
            continue
        if event == "start":
            # One GPU each, of the two, never one that another running trial holds.
            assert visible in ("0", "1"), events
            assert visible not in running.values(), events
            running[name] = visible
            most = max(most, len(running))
        elif event == "end":
            del running[name]
    assert most == 2, events
    assert sorted(n for e, n, _ in events if e == "end" and n != "cpu") == names

    # Which GPUs the machine has is not part of any cache key.
    (locks / "devices").write_text("0\n1\n2\n")
    assert ws.build(*targets, flags=JOBS).executed() == 0

    # For remote execution, the search's trials carry the platform property
    # (with the target's own exec_properties), its report does not.
    query = ws.bazel("query", "--output=build", "//gpu:all", check=True).stdout
    rules = {
        block.split('name = "')[1].split('"')[0]: block
        for block in query.split("\n\n")
        if 'name = "' in block
    }
    for trial in ("s__name-a", "s__name-a__eval"):
        assert 'exec_properties = {"gpu": "1", "Pool": "gpu-pool"}' in rules[trial], (
            rules[trial]
        )
        assert "gpus = 1" in rules[trial]
    assert '"gpu"' not in rules["s"]
    # With early stopping, the trials' segments too (and they analyse).
    ws.build("//gpu:h", flags=("--nobuild",))
    for segment in ("h__name-a", "h__name-a__rung-0"):
        assert 'exec_properties = {"gpu": "1"}' in rules[segment], rules[segment]
        assert "gpus = 1" in rules[segment]
    # ... but not the rungs, which only rank metrics files.
    assert '"gpu"' not in rules["h__rung-0"]


# --- a machine shared with another user -----------------------------------------

# Run by the other user: takes the flock of each path and holds it until killed.
HOLD_FOREVER = """
import fcntl, os, sys, time
for path in sys.argv[1:]:
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(600)
"""


@needs_root
@pytest.mark.parametrize("mode", ["sandboxed", "warm"])
def test_another_user_cannot_redirect_or_hang_gpu_trials(
    ws: Workspace, mode: str
) -> None:
    flags = () if mode == "warm" else SANDBOXED
    with other_user.shared_tmp() as tmp:
        another_user_plants_and_holds(ws, tmp, flags)


def another_user_plants_and_holds(
    ws: Workspace, tmp: Path, flags: tuple[str, ...]
) -> None:
    # 1. The other user made the lock directory first (mode 0777), with the
    #    GPU list and a lock file of their choosing.
    planted = tmp / "planted"
    other_user.python(
        "import os, sys\n"
        "os.mkdir(sys.argv[1]); os.chmod(sys.argv[1], 0o777)\n"
        "open(sys.argv[1] + '/devices', 'w').write('7\\n')\n"
        "open(sys.argv[1] + '/7.lock', 'w').close()\n",
        str(planted),
    )
    # 2. A lock directory shared as documented (root's, mode 1777), in which
    #    the other user wrote the GPU list.
    shared = tmp / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    other_user.python(
        "open(__import__('sys').argv[1], 'w').write('7\\n')", f"{shared}/devices"
    )
    # 3. Root's GPU list in a shared directory, whose one GPU the other user
    #    locked and never lets go.
    held = tmp / "held"
    held.mkdir()
    held.chmod(0o1777)
    (held / "devices").write_text("0\n")
    holder = other_user.start_python(HOLD_FOREVER, f"{held}/0.lock")
    log = tmp / "log"
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        ws.write("gpushared/train.py", TRAIN)
        ws.write("gpushared/data.txt", "x\n")
        env = {"GPU_LOG": str(log), "RELEASE_FILE": "/nonexistent"}
        ws.write(
            "gpushared/BUILD",
            LOAD
            + "".join(
                _model(name, 1, {**env, "DATABAZEL_GPU_LOCK_DIR": str(directory)})
                for name, directory in [("planted", planted), ("listed", shared)]
            )
            + _model("held", 1, {**env, "DATABAZEL_GPU_LOCK_DIR": str(held)}).replace(
                "    gpus = 1,\n", "    gpus = 1,\n    timeout = 3,\n"
            ),
        )
        result = ws.bazel(
            "build",
            "--keep_going",
            *flags,
            "//gpushared:planted",
            "//gpushared:listed",
            "//gpushared:held",
            timeout=300,  # before the fix the held GPU hung the build without end
        )
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode != 0
    errors = {
        target.split(":")[1]: message
        for _, _, target, message in (
            line.split(": ", 3)
            for line in result.stderr.splitlines()
            if line.startswith("databazel: error: //gpushared:")
        )
    }
    assert sorted(errors) == ["held", "listed", "planted"], result.stderr[-3000:]
    # The other user, as a sandboxed action sees them (its user namespace maps
    # only root) or as a warm worker does.
    other = (
        f"(uid {OTHER_UID}|a user this action's sandbox does not map "
        r"\(all of them show uid 65534 there\))"
    )
    assert re.fullmatch(
        re.escape(f"the GPU lock directory {planted} is owned by ")
        + other
        + re.escape(
            ", not by you or root; another user could choose or hold your trials' "
            "GPUs. Remove it (or have its owner do so), have root create it for "
            f"every user (`install -d -m 1777 {planted}`), or set "
            "DATABAZEL_GPU_LOCK_DIR in the target's `env` to a directory of your own"
        ),
        errors["planted"],
    ), errors["planted"]
    assert re.fullmatch(
        re.escape(f"the GPU list {shared}/devices is owned by ")
        + other
        + re.escape(
            ", not by you or root: it is not trusted to choose your trials' GPUs; "
            "remove it (or make it yours, mode 0644)"
        ),
        errors["listed"],
    ), errors["listed"]
    # The holder by pid where the action sees it; else where to look.
    assert re.fullmatch(
        re.escape(
            f"waited 3 s for 1 of the 1 GPUs in {held}, the most the target's timeout "
            "of 3 s allows, and fewer were free; 0: held by "
        )
        + "("
        + re.escape(f"pid {holder.pid} (uid {OTHER_UID}: {other_user.PYTHON} -c ")
        + ".*"
        + "|"
        + re.escape(
            "a process this action cannot see (outside its sandbox: `lslocks` on the "
            "host names it)"
        )
        + ")",
        errors["held"],
    ), errors["held"]
    # No script ran: no GPU was handed out, nothing half-done.
    assert not log.exists()
    for name in ("planted", "listed", "held"):
        assert not ws.bin(f"gpushared/{name}.model").exists()
    assert result.executed("DatabazelTrain") == 3  # three failed spawns
    assert not (planted / "0.lock").exists() and not (shared / "7.lock").exists()
