"""End-to-end tests of what goes wrong: bad declarations, hanging scripts, a killed
Bazel, leaks in and out of a trial, hostile hyperparameter values."""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from bazel_harness import (
    SANDBOXED,
    Probe,
    Workspace,
    processes_under,
    progress_events,
    starlark_string,
    wait_until,
)

LOAD = (
    'load("@databazel//databazel:defs.bzl", "evaluate", "hyperparam_search", "model")\n'
)


def model_build(name: str = "m", **attrs: str) -> str:
    """A `model` target on the fixture's train.py; attrs are Starlark expressions."""
    lines = "".join(f"    {k} = {v},\n" for k, v in attrs.items())
    return f"""
model(
    name = "{name}",
    train_executable = "//scripts:train.py",
    deps = ["//lib:fixturelib"],
{lines})
"""


# --- declarations that fail at analysis time -----------------------------------

BAD_MODELS = [
    ("", "missing value for mandatory attribute 'training_data' in 'model' rule"),
    ('training_data = "missing.csv"', "missing input file '//badmodel:missing.csv'"),
    (
        'training_data = "data.txt", hyperparams = {"learning rate": "1"}',
        'hyperparams key "learning rate" is not a valid hyperparameter name',
    ),
    (
        'training_data = "data.txt", hyperparams = {"lr": 1}',
        "expected value of type 'string' for dict value element, but got 1 (int)",
    ),
    (
        'training_data = "data.txt", timeout = -1',
        "`timeout` must be a number of seconds",
    ),
]


@pytest.mark.parametrize(
    ("attrs", "message"), BAD_MODELS, ids=[m[:40] for _, m in BAD_MODELS]
)
def test_bad_model_declarations_fail_before_anything_runs(
    ws: Workspace, attrs: str, message: str
) -> None:
    ws.write("badmodel/data.txt", "x\n")
    ws.write(
        "badmodel/BUILD",
        LOAD + f'model(name = "m", train_executable = "//scripts:train.py", {attrs})\n',
    )
    result = ws.build("//badmodel:m", check=False)
    assert result.returncode != 0
    assert result.executed("DatabazelTrain") == 0
    assert "//badmodel:m" in result.stderr, result.stderr[-2000:]
    assert message in result.stderr, result.stderr[-2000:]


def test_evaluate_of_something_that_is_not_a_model(ws: Workspace) -> None:
    ws.write(
        "notamodel/BUILD",
        LOAD
        + """
filegroup(name = "weights", srcs = ["BUILD"])

evaluate(
    name = "e",
    eval_executable = "//scripts:evaluate.py",
    model = ":weights",
    test_data = "BUILD",
)
""",
    )
    result = ws.build("//notamodel:e", check=False, flags=("--nobuild",))
    assert result.returncode != 0
    assert "//notamodel:e" in result.stderr
    assert "does not have mandatory providers: 'ModelInfo'" in result.stderr, (
        result.stderr[-2000:]
    )


# --- a script that hangs ----------------------------------------------------------


def test_a_hanging_script_is_killed_at_its_timeout(ws: Workspace) -> None:
    ws.write("hang/data.txt", "x\n")
    ws.write(
        "hang/BUILD",
        LOAD
        + model_build(
            training_data='"data.txt"', hyperparams='{"behaviour": "hang"}', timeout="2"
        ),
    )
    result = ws.build("//hang:m", check=False)
    assert result.returncode != 0
    assert "databazel: error: //hang:m: train script" in result.stderr, result.stderr[
        -3000:
    ]
    assert "was still running after the timeout of 2 s and was killed" in result.stderr
    assert "    epoch 1 of 1000" in result.stderr
    assert not ws.bin("hang/m.model").exists()


# --- nothing leaks in, nothing leaks out --------------------------------------------


def test_the_callers_environment_neither_reaches_a_trial_nor_changes_its_cache_key(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws.write("envleak/data.txt", "x\n")
    ws.write("envleak/BUILD", LOAD + model_build(training_data='"data.txt"'))
    monkeypatch.delenv("DATABAZEL_E2E_MARKER", raising=False)
    assert ws.build("//envleak:m").executed("DatabazelTrain") == 1

    monkeypatch.setenv("DATABAZEL_E2E_MARKER", "leaked")
    # Not even --action_env gets a variable into a trial: actions take no shell env.
    again = ws.build("//envleak:m", flags=("--action_env=DATABAZEL_E2E_MARKER",))
    assert again.executed("DatabazelTrain") == 0
    assert json.loads(ws.bin("envleak/m.model").read_text())["env_marker"] is None


@pytest.fixture()
def probe_dir() -> Iterator[Path]:
    """A directory outside /tmp and /dev/shm (which Bazel 4.2's sandbox leaves writable)."""
    path = Path.home() / ".cache" / f"databazel-probe-{uuid.uuid4().hex}"
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        for child in path.iterdir():
            child.unlink()
        path.rmdir()


def escape_attempts(
    ws: Workspace, package: str, probe_dir: Path, flags: tuple[str, ...] = ()
) -> dict[str, str]:
    """What the fixture's `escape` behaviour got trying to write in `probe_dir` and beside its model."""
    ws.write(f"{package}/data.txt", "x\n")
    ws.write(
        f"{package}/BUILD",
        LOAD
        + model_build(
            training_data='"data.txt"',
            hyperparams='{"behaviour": "escape"}',
            env=json.dumps({"PROBE_DIR": str(probe_dir)}),
        ),
    )
    ws.build(f"//{package}:m", flags=flags)
    return json.loads(ws.bin(f"{package}/m.model").read_text())["escapes"]


def test_a_trial_cannot_write_outside_its_declared_output(
    ws: Workspace, probe_dir: Path
) -> None:
    escapes = escape_attempts(ws, "escape", probe_dir)
    # The file system outside the sandbox is read-only to a trial ...
    assert escapes["probe_dir"] == "Read-only file system"
    assert list(probe_dir.iterdir()) == []
    # ... and what it writes in its sandbox besides its outputs is thrown away.
    assert escapes["next_to_model"] == "written"
    assert not ws.bin("escape/undeclared.txt").exists()


# --- Bazel killed in the middle of a search ---------------------------------------------


def test_sigkill_mid_search_then_rebuild_runs_only_the_unfinished_trials(
    ws: Workspace, tmp_path: Path, probe: Probe
) -> None:
    log = tmp_path / "progress.log"
    release = tmp_path / "release"
    xs = [str(i) for i in range(6)]
    env = {
        "DATABAZEL_PROBE": probe.address,
        "GATE_FROM": "4",
        "PROGRESS_LOG": str(log),
        "RELEASE_FILE": str(release),
    }
    ws.write("killed/train.txt", "x\n")
    ws.write("killed/test.txt", "y\n")
    ws.write(
        "killed/BUILD",
        LOAD
        + f"""
hyperparam_search(
    name = "k",
    env = {json.dumps(env)},
    eval_executable = "//scripts:evaluate.py",
    grid = {{"x": {json.dumps(xs)}}},
    hyperparams = {{"behaviour": "gate"}},
    metric = "accuracy",
    network = True,  # the gate reports to the test's probe
    test_data = "test.txt",
    train_executable = "//scripts:train.py",
    training_data = "train.txt",
    deps = ["//lib:fixturelib"],
)
""",
    )
    # Trials x=4 and x=5 block (after writing half a model) until `release`
    # exists; with three job slots the others all finish meanwhile. Kill Bazel
    # once the two hang and the four others are evaluated and in the cache.
    # Bazel writes its action cache to disk only when a command ends; what a
    # killed build finished survives in the disk cache (docs/reliability.md).
    cache = tmp_path / "disk_cache"
    disk_cache = f"--disk_cache={cache}"
    client = ws.start(
        "build", disk_cache, "--jobs=3", "--local_cpu_resources=3", "//killed:k"
    )
    done = [ws.bin(f"killed/k__x-{x}__eval.metrics.json") for x in xs[:4]]
    try:
        wait_until(
            lambda: (
                sum(e == "blocked" for e, _ in progress_events(log)) == 2
                and all(p.exists() for p in done)
                # A training and an evaluation each: their action-cache entries.
                and len([p for p in (cache / "ac").rglob("*") if p.is_file()]) == 8
            ),
            180,
            "two blocked trials, and four finished ones in the disk cache",
        )
        server = ws.server_pid()
        assert server is not None
        os.kill(server, signal.SIGKILL)
    except BaseException:
        release.touch()  # never leave a build blocked behind a failed test
        raise
    finally:
        client.kill()
        client.wait()
    events = progress_events(log)
    finished = {x for e, x in events if e == "end"}
    assert finished == {"0", "1", "2", "3"}, events

    # The blocked scripts die with the server (and its workers): none
    # finishes late.
    wait_until(
        lambda: not processes_under(ws.output_base),
        30,
        "the trials to end with the server",
    )
    release.touch()
    assert {x for e, x in progress_events(log) if e == "end"} == finished

    # Nothing of the killed build is trusted: the two trials run again, from
    # the start (not from their half-written models), the four others come
    # from the disk cache.
    result = ws.build("//killed:k", flags=(disk_cache,))
    rerun = sorted(x for e, x in progress_events(log)[len(events) :] if e == "start")
    assert rerun == ["4", "5"], progress_events(log)
    assert result.executed("DatabazelTrain") == 2
    assert result.executed("DatabazelEvaluate") == 2
    report = json.loads(ws.bin("killed/k.json").read_text())
    assert sorted(t["hyperparams"]["x"] for t in report["trials"]) == xs
    for x in xs:
        model = json.loads(ws.bin(f"killed/k__x-{x}.model").read_text())
        assert json.loads(model["hyperparams_arg"]) == {"behaviour": "gate", "x": x}
    # The fixture scores 1 / (1 + |x - 1|): x=1 is the best.
    assert report["best"]["hyperparams"]["x"] == "1"
    assert report["best"]["metrics"]["accuracy"] == 1.0


# --- hostile hyperparameter values ----------------------------------------------------

HOSTILE = [
    "a b",
    "a_b",
    "a__b",
    "a/b",
    "$(touch pwned)",
    "`touch pwned`",
    "semi;colon",
    "'single' \"double\"",
    "back\\slash",
    "line\nbreak",
    "tab\there",
    "é",
    "日本語",
    "x" * 60,
    "",
]


def test_hostile_values_reach_the_scripts_byte_for_byte_under_valid_unique_names(
    ws: Workspace, tmp_path: Path
) -> None:
    # Were a value run by a shell, it would touch this file: outside the
    # sandbox, in /tmp, which Bazel 4.2's sandbox leaves writable (see the
    # probe below), unlike the trial's working directory, which is discarded.
    # Sandboxed, then: an isolated trial's /tmp is its own, where a touch
    # would go unseen.
    pwned = tmp_path / "pwned"
    values = [*HOSTILE, f"$(touch {pwned})", f"`touch {pwned}`", f"; touch {pwned}"]
    ws.write("hostile/train.txt", "x\n")
    ws.write("hostile/test.txt", "y\n")
    ws.write(
        "hostile/BUILD",
        LOAD
        + f"""
hyperparam_search(
    name = "h",
    eval_executable = "//scripts:evaluate.py",
    grid = {{"v": [{", ".join(starlark_string(v) for v in values)}]}},
    metric = "accuracy",
    test_data = "test.txt",
    train_executable = "//scripts:train.py",
    training_data = "train.txt",
    deps = ["//lib:fixturelib"],
)
""",
    )
    result = ws.build("//hostile:h", flags=SANDBOXED)
    assert result.executed("DatabazelTrain") == len(values)
    report = json.loads(ws.bin("hostile/h.json").read_text(encoding="utf-8"))
    by_value = {t["hyperparams"]["v"]: t for t in report["trials"]}
    assert sorted(by_value) == sorted(values)
    names = [t["name"] for t in report["trials"]]
    assert len(set(names)) == len(values)
    for value, trial in by_value.items():
        model = json.loads(
            ws.bin(f"hostile/{trial['name']}.model").read_text(encoding="utf-8")
        )
        assert json.loads(model["hyperparams_arg"]) == {"v": value}
    assert not pwned.exists()
    # The probe: a trial can write there, so a shell would have.
    probe = escape_attempts(ws, "hostile_probe", tmp_path, flags=SANDBOXED)
    assert probe["probe_dir"] == "written"
    assert (tmp_path / "escaped.txt").read_text() == "escaped\n"
