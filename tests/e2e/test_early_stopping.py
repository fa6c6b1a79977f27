"""Early stopping built for real: successive halving and Hyperband over cached epochs (issue 13).

The scripts below log every epoch they train to $TRAIN_LOG (through the
test's Probe: an isolated trial writes no file the test can read), so the tests count
the training actions that ran the user's script (a stopped trial's epochs are
actions of the runner alone, which write a stop record and log nothing). A
trial's score is a known function of its `q` and its epoch, so the schedule's
arithmetic is checked exactly.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from bazel_harness import PROBE_CLIENT, Probe, Result, Workspace

LOAD = 'load("@databazel//databazel:defs.bzl", "hyperband", "hyperparam_search", "successive_halving")\n'

TRAIN = (
    PROBE_CLIENT
    + """\
import argparse, json, os, sys, time
p = argparse.ArgumentParser()
p.add_argument("--data"); p.add_argument("--model-output-path")
p.add_argument("--hyperparams"); p.add_argument("--epoch", type=int)
p.add_argument("--init-model-path")
a = p.parse_args()
q = json.loads(a.hyperparams)["q"]
seen = []
if a.init_model_path:
    with open(a.init_model_path) as f:
        seen = json.load(f)["epochs"]
append_line(os.environ["TRAIN_LOG"], f"{q} {a.epoch}")
if q == os.environ.get("FAIL_Q"):
    sys.exit("this trial diverged")
if f"{q} {a.epoch}" == os.environ.get("GATE"):
    append_line(os.environ["TRAIN_LOG"], "blocked")
    while not exists(os.environ["RELEASE_FILE"]):
        time.sleep(0.05)
with open(a.model_output_path, "w") as f:
    json.dump({"q": q, "epochs": seen + [a.epoch]}, f)
"""
)

EVALUATE = """\
import argparse, json, os
p = argparse.ArgumentParser()
p.add_argument("--model-path"); p.add_argument("--data-path"); p.add_argument("--output-dir")
a = p.parse_args()
with open(a.model_path) as f:
    m = json.load(f)
epoch = len(m["epochs"])
# Better with a larger q, and with more epochs.
score = float(m["q"]) / 100 + epoch / (epoch + 1)
with open(os.path.join(a.output_dir, "metrics.json"), "w") as f:
    json.dump({"score": round(score, 6)}, f)
"""


# The address of the session's Probe, which every search's env names.
PROBE = ""


@pytest.fixture(autouse=True)
def _probe_address(probe: Probe) -> None:
    global PROBE
    PROBE = probe.address


def write_search(
    ws: Workspace,
    package: str,
    qs: list[int],
    schedule: str,
    env: dict[str, str],
    extra: str | None = None,
) -> None:
    """Package `package`: a search `s` over `q` in `qs` (or what `extra` says)."""
    searched = extra or f'    grid = {{"q": {json.dumps([str(q) for q in qs])}}},\n'

    ws.write(f"{package}/train.py", TRAIN)
    ws.write(f"{package}/evaluate.py", EVALUATE)
    ws.write(f"{package}/data.txt", "x\n")
    ws.write(
        f"{package}/BUILD",
        LOAD
        + f"""
hyperparam_search(
    name = "s",
    early_stopping = {schedule},
    env = {json.dumps(dict(env, DATABAZEL_PROBE=PROBE))},
    network = True,
    eval_executable = "evaluate.py",
    metric = "score",
    test_data = "data.txt",
    train_executable = "train.py",
    training_data = "data.txt",
{searched})
""",
    )


def log_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def trained(path: Path, since: int = 0) -> Counter:
    """Epochs each q trained with the user's script (lines of $TRAIN_LOG from `since`)."""
    return Counter(
        line.split()[0] for line in log_lines(path)[since:] if line != "blocked"
    )


def train_spawns(result: Result) -> list[tuple[str, int]]:
    """(trial, epoch) of every training action that ran, script or not."""
    found = []
    for spawn in result.spawns:
        if spawn.get("mnemonic") == "DatabazelTrain" and not spawn["remoteCacheHit"]:
            match = re.match(
                r"Training //\S+:(\S+), epoch (\d+)", spawn["progressMessage"]
            )
            assert match, spawn["progressMessage"]
            found.append((match.group(1), int(match.group(2))))
    return found


def report(ws: Workspace, package: str) -> dict:
    return json.loads(ws.bin(f"{package}/s.json").read_text())


def test_successive_halving_trains_what_the_schedule_says_and_grows_by_its_new_work(
    ws: Workspace, tmp_path: Path
) -> None:
    log = tmp_path / "train.log"
    env = {"TRAIN_LOG": str(log)}
    halving = "successive_halving(min_epochs = 1, max_epochs = 9, eta = 3)"
    write_search(ws, "sh", list(range(1, 10)), halving, env)
    first = ws.build("//sh:s")
    # 9 trials, eta 3, rungs at 1, 3, 9 epochs: 9 + 3 x 2 + 1 x 6 = 21 epochs, not 81.
    assert len(log_lines(log)) == 21
    assert trained(log) == Counter(
        {"9": 9, "8": 3, "7": 3} | {str(q): 1 for q in range(1, 7)}
    )
    assert first.executed("DatabazelRung") == 2
    # Every epoch of every trial is an action; stopped ones ran no script.
    assert first.executed("DatabazelTrain") == 81

    result = report(ws, "sh")
    by_q = {t["hyperparams"]["q"]: t for t in result["trials"]}
    assert [t["hyperparams"]["q"] for t in result["trials"]] == [
        "9",
        "8",
        "7",
        "6",
        "5",
        "4",
        "3",
        "2",
        "1",
    ]
    assert result["best"]["hyperparams"] == {"q": "9"}
    assert result["stopped"] == 8
    assert (by_q["9"]["status"], by_q["9"]["rung"], by_q["9"]["epochs"]) == ("ok", 2, 9)
    assert (by_q["8"]["status"], by_q["8"]["rung"], by_q["8"]["epochs"]) == (
        "stopped",
        1,
        3,
    )
    assert (by_q["1"]["status"], by_q["1"]["rung"], by_q["1"]["epochs"]) == (
        "stopped",
        0,
        1,
    )
    # The stopped trial's metrics are those of the last epoch it trained, and
    # its learning curve ends there.
    assert by_q["8"]["metrics"] == {"score": round(0.08 + 3 / 4, 6)}
    assert [p["epoch"] for p in by_q["8"]["learning_curve"]] == [1, 3]
    assert [p["epoch"] for p in by_q["9"]["learning_curve"]] == [1, 3, 9]
    best = json.loads(ws.bin("sh/s.best.model").read_text())
    assert best == {"q": "9", "epochs": list(range(1, 10))}
    stopped_checkpoint = ws.bin("sh/s__q-1.epoch-9.model").read_bytes()
    assert stopped_checkpoint.startswith(b"databazel stopped trial v1\n")
    leaderboard = ws.bin("sh/s.txt").read_text()
    assert re.search(r"\bstopped\s+0\s+1\s+1\b", leaderboard), leaderboard

    assert ws.build("//sh:s").executed() == 0  # a no-op rebuild

    # Two more trials: 11 alive at the first rung promote 3 (8, 9, 10), so 7
    # is stopped there; 10 beats 9 at the second. Only the new trials run the
    # script; 7's and 9's later epochs re-run as trivial actions (their
    # decisions changed); no other trial runs anything.
    write_search(ws, "sh", list(range(0, 11)), halving, env)
    before = len(log_lines(log))
    grown = ws.build("//sh:s")
    assert trained(log, before) == Counter({"10": 9, "0": 1})
    assert {trial for trial, _ in train_spawns(grown)} == {
        "s__q-0",
        "s__q-7",
        "s__q-9",
        "s__q-10",
    }
    assert report(ws, "sh")["best"]["hyperparams"] == {"q": "10"}

    # A larger max_epochs adds a rung at 9 and trains only the new epochs.
    write_search(ws, "sh", list(range(0, 11)), halving.replace("= 9", "= 12"), env)
    before = len(log_lines(log))
    longer = ws.build("//sh:s")
    assert log_lines(log)[before:] == ["10 10", "10 11", "10 12"]
    assert min(epoch for _, epoch in train_spawns(longer)) == 10
    result = report(ws, "sh")
    assert result["best"]["epochs"] == 12 and result["best"]["rung"] == 3


def test_hyperband_brackets_and_two_clean_builds_give_identical_reports(
    ws: Workspace, tmp_path: Path
) -> None:
    log = tmp_path / "train.log"
    env = {"TRAIN_LOG": str(log)}
    write_search(
        ws,
        "hb",
        [],
        "hyperband(min_epochs = 1, max_epochs = 3, eta = 3)",
        env,
        extra=(
            '    strategy = "random",\n'
            '    search_space = {"q": [str(q) for q in range(100)]},\n'
            "    seed = 7,\n"
            "    plots = False,\n"
        ),
    )
    ws.build("//hb:s")
    result = report(ws, "hb")
    # Brackets of 3 and 2 trials (Li et al.: ceil(2 * 3^s / (s + 1)) for
    # s = 1, 0), starting at 3 // 3^s epochs. (tests/starlark has their
    # table for max_epochs = 27.)
    brackets = Counter(t["bracket"] for t in result["trials"])
    assert brackets == Counter({1: 3, 0: 2})
    expected = 0
    for s, n, rungs in ((1, 3, [1, 3]), (0, 2, [3])):
        alive, start = n, 0
        for epochs in rungs:
            expected += alive * (epochs - start)
            alive, start = max(1, alive // 3), epochs
        ranked = sorted(
            (t for t in result["trials"] if t["bracket"] == s),
            key=lambda t: -int(t["hyperparams"]["q"]),
        )
        assert ranked[0]["status"] == "ok" and ranked[0]["epochs"] == 3
    assert len(log_lines(log)) == expected == (3 + 1 * 2) + 2 * 3
    best_q = max(
        int(t["hyperparams"]["q"]) for t in result["trials"] if t["status"] == "ok"
    )
    assert result["best"]["hyperparams"]["q"] == str(best_q)

    outputs = ["hb/s.json", "hb/s.csv", "hb/s.md", "hb/s.best.model"]
    first = {path: ws.bin(path).read_bytes() for path in outputs}
    ws.bazel("clean", check=True)
    ws.build("//hb:s")
    assert {path: ws.bin(path).read_bytes() for path in outputs} == first


def test_a_recorded_failure_is_stopped_and_the_rung_goes_on(
    ws: Workspace, tmp_path: Path
) -> None:
    log = tmp_path / "train.log"
    write_search(
        ws,
        "fails",
        list(range(1, 7)),
        "successive_halving(min_epochs = 2, max_epochs = 4, eta = 2)",
        {"TRAIN_LOG": str(log), "FAIL_Q": "6"},
        extra=(
            '    grid = {"q": ["1", "2", "3", "4", "5", "6"]},\n'
            "    allow_failure = True,\n"
            "    learning_curve = True,\n"
        ),
    )
    ws.build("//fails:s")
    result = report(ws, "fails")
    by_q = {t["hyperparams"]["q"]: t for t in result["trials"]}
    # 6 trials at the first rung (epoch 2) promote 3; 6 failed in its first
    # epoch (its second passes the record on without the script), so 5, 4, 3
    # go on to epoch 4.
    assert trained(log) == Counter({"6": 1, "5": 4, "4": 4, "3": 4, "2": 2, "1": 2})
    assert by_q["6"]["status"] == "failed" and result["trials"][-1] == by_q["6"]
    assert result["best"]["hyperparams"] == {"q": "5"}
    # Every epoch is evaluated (learning_curve), the stopped ones' curves end
    # at the rung that stopped them.
    assert [p["epoch"] for p in by_q["5"]["learning_curve"]] == [1, 2, 3, 4]
    assert [p["epoch"] for p in by_q["2"]["learning_curve"]] == [1, 2]
    assert (by_q["2"]["status"], by_q["2"]["epochs"]) == ("stopped", 2)


def _wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_build_killed_between_rungs_resumes_where_it_stopped(
    ws: Workspace, tmp_path: Path
) -> None:
    log = tmp_path / "train.log"
    release = tmp_path / "release"
    env = {"TRAIN_LOG": str(log), "GATE": "9 2", "RELEASE_FILE": str(release)}
    write_search(
        ws, "killed", list(range(1, 10)), "successive_halving(max_epochs = 3)", env
    )
    # Bazel 4.2 saves its action cache only when a command ends: what a killed
    # server finished survives in the disk cache (docs/epochs.md).
    flags = (f"--disk_cache={tmp_path / 'disk_cache'}", "--jobs=1")
    client = ws.start("build", *flags, "//killed:s")
    try:
        _wait_for(lambda: "blocked" in log_lines(log), 180, "q 9's epoch 2")
        server = ws.server_pid()
        assert server is not None
        os.kill(server, signal.SIGKILL)
    finally:
        release.touch()
        client.kill()
        client.wait()
    before = [line for line in log_lines(log) if line != "blocked"]
    assert {f"{q} 1" for q in range(1, 10)} <= set(before)  # the first rung ran
    count = len(log_lines(log))
    ws.build("//killed:s", flags=flags)
    after = [line for line in log_lines(log)[count:] if line != "blocked"]
    # Nothing finished before the kill trains again; the killed epoch does.
    expected = [f"{q} 1" for q in range(1, 10)]
    expected += [f"{q} {e}" for q in (7, 8, 9) for e in (2, 3)]
    assert Counter(before) + Counter(after) == Counter(expected) + Counter(["9 2"])
    assert report(ws, "killed")["best"]["epochs"] == 3


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("early_stopping = successive_halving(max_epochs = 0)", "`max_epochs` = 0"),
        ("early_stopping = successive_halving(max_epochs = 3, eta = 1)", "`eta` = 1"),
        (
            "early_stopping = successive_halving(min_epochs = 4, max_epochs = 3)",
            "less than `min_epochs`",
        ),
        (
            'early_stopping = {"eta": 3}',
            "must be successive_halving(...) or hyperband(...)",
        ),
        (
            "early_stopping = successive_halving(max_epochs = 3), epochs = 3",
            "remove `epochs`",
        ),
        (
            'early_stopping = hyperband(max_epochs = 9), grid = {"q": ["1"]}',
            "needs at least 3 trials",
        ),
    ],
)
def test_bad_early_stopping_fails_at_load_naming_the_search(
    ws: Workspace, argument: str, message: str
) -> None:
    extra = f"    {argument},\n"
    if "grid" not in argument:
        extra += '    grid = {"q": ["1", "2"]},\n'
    ws.write(
        "bad_es/BUILD",
        LOAD
        + f"""
hyperparam_search(
    name = "s",
    {extra.strip()}
    eval_executable = "e.py",
    metric = "score",
    test_data = "d.txt",
    train_executable = "t.py",
    training_data = "d.txt",
)
""",
    )
    result = ws.bazel("build", "--nobuild", "//bad_es:s")
    assert result.returncode != 0
    assert "//bad_es:s" in result.stderr and message in result.stderr, result.stderr
