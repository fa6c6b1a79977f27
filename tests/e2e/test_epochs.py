"""Training in epochs, built for real: one action per epoch, chained through checkpoints."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from bazel_harness import Probe, Workspace, wait_until

LOAD = (
    'load("@databazel//databazel:defs.bzl", "evaluate", "hyperparam_search", "model")\n'
)


def write_chain(ws: Workspace, epochs: int, env: dict[str, str] | None = None) -> None:
    ws.write("epochs/train.txt", "x\n")
    ws.write("epochs/test.txt", "y\n")
    ws.write(
        "epochs/BUILD",
        LOAD
        + f"""
model(
    name = "m",
    epochs = {epochs},
    env = {json.dumps(env or {})},
    network = {bool(env)},  # a gate and a log report to the test's probe
    train_executable = "//scripts:train.py",
    training_data = "train.txt",
    deps = ["//lib:fixturelib"],
)

evaluate(
    name = "e",
    eval_executable = "//scripts:evaluate.py",
    model = ":m",
    test_data = "test.txt",
    deps = ["//lib:fixturelib"],
)

model(
    name = "plain",
    train_executable = "//scripts:train.py",
    training_data = "train.txt",
    deps = ["//lib:fixturelib"],
)
""",
    )


def read_model(ws: Workspace, relpath: str) -> dict:
    return json.loads(ws.bin(relpath).read_text())


def test_epochs_are_chained_actions_and_changing_their_number_reruns_only_new_ones(
    ws: Workspace,
) -> None:
    write_chain(ws, 5)
    first = ws.build("//epochs:m", "//epochs:e", "//epochs:plain")
    assert first.executed("DatabazelTrain") == 6  # 5 epochs + the plain model
    assert first.executed("DatabazelEvaluate") == 1  # the last checkpoint
    for k in range(1, 6):
        checkpoint = read_model(ws, f"epochs/m.epoch-{k}.model")
        assert checkpoint["epochs_seen"] == list(range(1, k + 1))
        argv = checkpoint["argv"]
        assert argv[argv.index("--epoch") + 1] == str(k)
        if k == 1:
            assert "--init-model-path" not in argv
        else:
            init = argv[argv.index("--init-model-path") + 1]
            assert init.endswith(f"epochs/m.epoch-{k - 1}.model")
    # A script used without `epochs` never sees the new flags.
    plain = read_model(ws, "epochs/plain.model")["argv"]
    assert "--epoch" not in plain and "--init-model-path" not in plain
    assert plain[plain.index("--model-output-path") + 1].endswith("epochs/plain.model")
    assert not ws.bin("epochs/m.model").exists()  # the output is the last checkpoint
    # The fixture scores 1 / (1 + |x - 1|); without x (0) that is 0.5.
    metrics = json.loads(ws.bin("epochs/e.epoch-5.metrics.json").read_text())
    assert (metrics["accuracy"], metrics["loss"]) == (0.5, 0.5)

    # Raising epochs from 5 to 8: exactly the 3 new epochs, and one evaluation.
    write_chain(ws, 8)
    raised = ws.build("//epochs:m", "//epochs:e")
    assert raised.executed("DatabazelTrain") == 3
    assert raised.executed("DatabazelEvaluate") == 1
    assert read_model(ws, "epochs/m.epoch-8.model")["epochs_seen"] == list(range(1, 9))

    # Lowering it to 3: nothing trains (the model is the epoch-3 checkpoint,
    # as built the first time), and epoch 3, never evaluated yet, is.
    epoch_3 = ws.bin("epochs/m.epoch-3.model").read_bytes()
    write_chain(ws, 3)
    lowered = ws.build("//epochs:m", "//epochs:e")
    assert lowered.executed_by_mnemonic() == {"DatabazelEvaluate": 1}
    assert ws.bin("epochs/m.epoch-3.model").read_bytes() == epoch_3
    assert json.loads(epoch_3)["epochs_seen"] == [1, 2, 3]
    assert ws.bin("epochs/e.epoch-3.metrics.json").is_file()
    assert ws.build("//epochs:m", "//epochs:e").executed() == 0

    # Each checkpoint can be built on its own: output group epoch_K.
    write_chain(ws, 8)
    group = ws.build("//epochs:m", flags=("--output_groups=epoch_6",))
    assert group.executed() == 0
    assert read_model(ws, "epochs/m.epoch-6.model")["epochs_seen"] == list(range(1, 7))


def test_bad_epochs_fail_at_analysis(ws: Workspace) -> None:
    write_chain(ws, -1)
    result = ws.build("//epochs:m", check=False)
    assert result.returncode != 0
    assert "//epochs:m: `epochs` must be a positive number of epochs" in result.stderr


def test_evaluated_epochs_and_its_old_spelling(ws: Workspace) -> None:
    # `evaluated_epochs` picks checkpoints to evaluate besides the last one;
    # `epochs`, its old name on `evaluate`, is accepted until 0.2.0 with a message.
    write_chain(ws, 4)
    ws.write(
        "epochs/BUILD",
        ws.root.joinpath("epochs/BUILD").read_text()
        + """
evaluate(
    name = "some",
    eval_executable = "//scripts:evaluate.py",
    evaluated_epochs = [2],
    model = ":m",
    test_data = "test.txt",
    deps = ["//lib:fixturelib"],
)

evaluate(
    name = "old",
    epochs = [1],
    eval_executable = "//scripts:evaluate.py",
    model = ":m",
    test_data = "test.txt",
    deps = ["//lib:fixturelib"],
)

evaluate(
    name = "beyond",
    eval_executable = "//scripts:evaluate.py",
    evaluated_epochs = [5],
    model = ":m",
    test_data = "test.txt",
)
""",
    )
    result = ws.build(
        "//epochs:some", "//epochs:old", flags=("--output_groups=+epoch_metrics",)
    )
    assert result.executed("DatabazelEvaluate") == 4  # epochs 2 and 4, 1 and 4
    for name, epochs in [("some", [2, 4]), ("old", [1, 4])]:
        for k in range(1, 5):
            metrics = ws.bin(f"epochs/{name}.epoch-{k}.metrics.json")
            assert metrics.exists() == (k in epochs), (name, k)
    assert (
        "//epochs:old: `epochs` is renamed `evaluated_epochs`: write "
        "evaluated_epochs = [1] (the old name is accepted until databazel 0.2.0)"
    ) in result.stderr
    assert "//epochs:some: `" not in result.stderr
    beyond = ws.build("//epochs:beyond", check=False)
    assert beyond.returncode != 0
    assert (
        "//epochs:beyond: `evaluated_epochs` lists epoch 5, but //epochs:m has "
        "epochs 1 to 4"
    ) in beyond.stderr


# --- a build killed during epoch 4 -----------------------------------------------


def _log(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.parametrize("how", ["sigkill_server", "ctrl_c"])
def test_a_build_stopped_during_epoch_4_resumes_at_epoch_4(
    ws: Workspace, tmp_path: Path, how: str, probe: Probe
) -> None:
    log = tmp_path / "epochs.log"
    release = tmp_path / "release"
    env = {
        "DATABAZEL_PROBE": probe.address,
        "EPOCH_LOG": str(log),
        "EPOCH_GATE": "4",
        "RELEASE_FILE": str(release),
    }
    write_chain(ws, 5, env)
    # Killed: Bazel 4.2 saves its action cache only when a command ends, so
    # what a killed build finished survives only in a disk cache. Ctrl-C (SIGINT
    # to the client) ends the command: the action cache is saved, no disk cache
    # needed (docs/epochs.md, "Stopping and resuming").
    flags = (
        (f"--disk_cache={tmp_path / 'disk_cache'}",) if how == "sigkill_server" else ()
    )
    client = ws.start("build", *flags, "//epochs:m")
    try:
        wait_until(lambda: "blocked 4" in _log(log), 180, "epoch 4 to start")
        if how == "sigkill_server":
            server = ws.server_pid()
            assert server is not None
            os.kill(server, signal.SIGKILL)
        else:
            client.send_signal(signal.SIGINT)
            assert client.wait(60) != 0  # interrupted
    except BaseException:
        release.touch()
        raise
    finally:
        client.kill()
        client.wait()
    assert _log(log) == ["epoch 1", "epoch 2", "epoch 3", "epoch 4", "blocked 4"]
    release.touch()  # the gate is open for the rebuild

    result = ws.build("//epochs:m", flags=flags)
    rerun = [line for line in _log(log)[5:] if line.startswith("epoch")]
    assert rerun == ["epoch 4", "epoch 5"]  # epochs 1 to 3 are not trained again
    assert result.executed("DatabazelTrain") == 2
    assert read_model(ws, "epochs/m.epoch-5.model")["epochs_seen"] == [1, 2, 3, 4, 5]


# --- a search over the number of epochs ------------------------------------------


def write_epoch_search(ws: Workspace, epochs: list[str], learning_curve: bool) -> None:
    ws.write("epochsearch/train.txt", "x\n")
    ws.write("epochsearch/test.txt", "y\n")
    ws.write(
        "epochsearch/BUILD",
        LOAD
        + f"""
hyperparam_search(
    name = "s",
    eval_executable = "//scripts:evaluate.py",
    grid = {{"x": ["0", "1"], "epochs": {json.dumps(epochs)}}},
    learning_curve = {learning_curve},
    metric = "accuracy",
    model_file = "model.json",
    test_data = "test.txt",
    train_executable = "//scripts:train.py",
    training_data = "train.txt",
    deps = ["//lib:fixturelib"],
)
""",
    )


def test_trials_differing_only_in_epochs_share_their_common_epochs(
    ws: Workspace,
) -> None:
    write_epoch_search(ws, ["2", "3", "5"], learning_curve=False)
    first = ws.build("//epochsearch:s")
    # 5 epochs per value of x, not 2 + 3 + 5 = 10; one evaluation per trial.
    assert first.executed("DatabazelTrain") == 10
    assert first.executed("DatabazelEvaluate") == 6
    report = json.loads(ws.bin("epochsearch/s.json").read_text())
    assert len(report["trials"]) == 6
    for trial in report["trials"]:
        n = int(trial["hyperparams"]["epochs"])
        model = json.loads(ws.bin(trial["model"]).read_text())
        assert model["epochs_seen"] == list(range(1, n + 1))
        # The script gets --epoch, never `epochs` in --hyperparams.
        assert "epochs" not in json.loads(model["hyperparams_arg"])
        assert trial["name"] == f"s__x-{trial['hyperparams']['x']}__epochs-{n}"
        assert [p["epoch"] for p in trial["learning_curve"]] == [
            k for k in (2, 3, 5) if k <= n
        ]
    assert report["best"]["hyperparams"]["x"] == "1"
    # The x=1 trials share one chain of checkpoints, epochs 1 to 5.
    chain = read_model(ws, "epochsearch/s__x-1__chain/model.epoch-5.json")
    assert chain["epochs_seen"] == [1, 2, 3, 4, 5]
    assert json.loads(chain["hyperparams_arg"]) == {"x": "1"}

    # A larger epoch count trains only the epochs beyond the old largest one.
    write_epoch_search(ws, ["2", "3", "5", "7"], learning_curve=False)
    grown = ws.build("//epochsearch:s")
    assert grown.executed("DatabazelTrain") == 4
    assert grown.executed("DatabazelEvaluate") == 2

    # Learning curves evaluate the epochs not evaluated yet, and train nothing.
    write_epoch_search(ws, ["2", "3", "5", "7"], learning_curve=True)
    curves = ws.build("//epochsearch:s")
    assert curves.executed("DatabazelTrain") == 0
    assert curves.executed("DatabazelEvaluate") == 6  # epochs 1, 4, 6 of each x
    report = json.loads(ws.bin("epochsearch/s.json").read_text())
    longest = next(
        t for t in report["trials"] if t["hyperparams"] == {"x": "1", "epochs": "7"}
    )
    assert [p["epoch"] for p in longest["learning_curve"]] == list(range(1, 8))
    assert all(p["metrics"]["accuracy"] == 1.0 for p in longest["learning_curve"])
