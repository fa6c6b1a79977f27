"""End-to-end tests of random search, recorded failures, the best model and `bazel run` on a report."""

from __future__ import annotations

import json

import pytest
from bazel_harness import Workspace

LOAD = 'load("@databazel//databazel:defs.bzl", "hyperparam_search", "loguniform", "randint", "uniform")\n'

RANDOM_BUILD = (
    LOAD
    + """
hyperparam_search(
    name = "s",
    eval_executable = "//scripts:evaluate.py",
    metric = "accuracy",
    num_trials = {num_trials},
    search_space = {{
        "x": uniform(0, 3),
        "lr": loguniform(1e-4, "0.1"),
        "depth": randint(1, 8),
        "act": ["relu", "tanh"],
    }},
    seed = {seed},
    strategy = "random",
    test_data = "//rdata:test.txt",
    train_executable = "//scripts:train.py",
    training_data = "//rdata:train.txt",
    deps = ["//lib:fixturelib"],
)
"""
)


def write_random(ws: Workspace, package: str, num_trials: int, seed: int) -> None:
    ws.write("rdata/train.txt", "training rows\n")
    ws.write("rdata/test.txt", "test rows\n")
    ws.write("rdata/BUILD", 'exports_files(["train.txt", "test.txt"])\n')
    ws.write(f"{package}/BUILD", RANDOM_BUILD.format(num_trials=num_trials, seed=seed))


def trials_of(ws: Workspace, package: str) -> list[tuple[str, dict[str, str]]]:
    """(name, hyperparams) of every trial of //package:s, in search order (from the model targets)."""
    query = ws.bazel(
        "query", f'kind("model rule", //{package}:all)', "--output=label", check=True
    )
    names = query.stdout.split()
    trials = []
    for label in names:
        name = label.split(":")[1]
        hyperparams = json.loads(
            ws.bin(f"{package}/{name}.hyperparams.json").read_text()
        )
        trials.append((name, hyperparams))
    return trials


def test_same_seed_gives_the_same_trials_and_values_stay_in_their_ranges(
    ws: Workspace,
) -> None:
    write_random(ws, "rand_a", num_trials=6, seed=11)
    write_random(ws, "rand_b", num_trials=6, seed=11)
    write_random(ws, "rand_c", num_trials=6, seed=12)
    result = ws.build("//rand_a:s", "//rand_b:s", "//rand_c:s")
    assert result.executed("DatabazelTrain") == 18

    a, b, c = (trials_of(ws, p) for p in ("rand_a", "rand_b", "rand_c"))
    assert len(a) == 6
    assert sorted(a) == sorted(b)  # same seed, same trial names and hyperparameters
    assert {n for n, _ in a} != {n for n, _ in c}  # another seed, other trials
    for name, hp in a + c:
        assert set(hp) == {"x", "lr", "depth", "act"}
        assert name == "s__x-{x}__lr-{lr}__depth-{depth}__act-{act}".format(**hp)
        assert 0 <= float(hp["x"]) <= 3
        assert 1e-4 <= float(hp["lr"]) <= 0.1
        assert hp["depth"] in {str(i) for i in range(1, 9)}
        assert hp["act"] in {"relu", "tanh"}
    # The scripts got exactly these values.
    report = json.loads(ws.bin("rand_a/s.json").read_text())
    assert sorted((t["name"], t["hyperparams"]) for t in report["trials"]) == sorted(a)


def test_growing_num_trials_runs_only_the_new_trials(ws: Workspace) -> None:
    write_random(ws, "rand_grow", num_trials=3, seed=5)
    first = ws.build("//rand_grow:s")
    assert first.executed("DatabazelTrain") == 3
    before = trials_of(ws, "rand_grow")

    write_random(ws, "rand_grow", num_trials=5, seed=5)
    grown = ws.build("//rand_grow:s")
    assert grown.executed_by_mnemonic() == {
        "DatabazelTrain": 2,
        "DatabazelEvaluate": 2,
        "DatabazelReport": 1,
    }
    after = trials_of(ws, "rand_grow")
    assert len(after) == 5
    assert all(trial in after for trial in before)
    trained = {
        s["progressMessage"].split()[1]
        for s in grown.spawns
        if s.get("mnemonic") == "DatabazelTrain"
    }
    assert trained == {f"//rand_grow:{n}" for n, _ in after} - {
        f"//rand_grow:{n}" for n, _ in before
    }


def test_best_model_is_a_byte_identical_copy_of_the_winner(ws: Workspace) -> None:
    write_random(ws, "rand_best", num_trials=4, seed=1)
    ws.build("//rand_best:s")
    report = json.loads(ws.bin("rand_best/s.json").read_text())
    best = report["best"]
    assert best == report["trials"][0]
    assert all(
        best["metrics"]["accuracy"] >= t["metrics"]["accuracy"]
        for t in report["trials"]
    )
    winner = ws.bin(best["model"]).read_bytes()
    assert ws.bin("rand_best/s.best.model").read_bytes() == winner
    assert (
        json.loads(ws.bin("rand_best/s.best_hyperparams.json").read_text())
        == best["hyperparams"]
    )


FAILING_BUILD = (
    LOAD
    + """
hyperparam_search(
    name = "s",
    {allow}
    eval_executable = "//scripts:evaluate.py",
    grid = {grid},
    hyperparams = {{"x": "1"}},
    metric = "accuracy",
    test_data = "//rdata:test.txt",
    train_executable = "//scripts:train.py",
    training_data = "//rdata:train.txt",
    deps = ["//lib:fixturelib"],
)
"""
)


def write_failing(
    ws: Workspace, package: str, grid: dict[str, list[str]], allow: bool
) -> None:
    write_random(ws, "rand_unused", 1, 0)  # the data package
    ws.write(
        f"{package}/BUILD",
        FAILING_BUILD.format(
            allow="allow_failure = True," if allow else "", grid=json.dumps(grid)
        ),
    )


def test_with_allow_failure_a_crashing_trial_is_recorded_and_ranked_last(
    ws: Workspace,
) -> None:
    grid = {"behaviour": ["ok", "exit3"], "eval_behaviour": ["ok", "exit5"]}
    write_failing(ws, "failok", grid, allow=True)
    result = ws.build("//failok:s")
    assert "databazel: warning: //failok:s__behaviour-exit3" in result.stderr

    report = json.loads(ws.bin("failok/s.json").read_text())
    statuses = [(t["name"], t["status"]) for t in report["trials"]]
    assert statuses[0] == ("s__behaviour-ok__eval_behaviour-ok", "ok")
    assert {s for _, s in statuses[1:]} == {"failed"}
    assert report["failed"] == 3
    failures = {t["name"]: t["failure"] for t in report["trials"][1:]}
    train_failure = failures["s__behaviour-exit3__eval_behaviour-ok"]
    assert train_failure["stage"] == "train" and train_failure["exit_code"] == 3
    assert train_failure["target"] == "//failok:s__behaviour-exit3__eval_behaviour-ok"
    assert (
        train_failure["stderr_tail"].splitlines()[-1]
        == "FATAL: the learning rate is too high"
    )
    eval_failure = failures["s__behaviour-ok__eval_behaviour-exit5"]
    assert eval_failure["stage"] == "evaluate" and eval_failure["exit_code"] == 5
    assert "evaluation exploded" in eval_failure["stderr_tail"]

    markdown = ws.bin("failok/s.md").read_text()
    assert "## Failed trials" in markdown and "train exited with code 3" in markdown
    assert "FATAL: the learning rate is too high" in markdown
    # The failed trials can't win.
    assert (
        json.loads(ws.bin("failok/s.best_hyperparams.json").read_text())["behaviour"]
        == "ok"
    )
    winner = ws.bin(report["best"]["model"]).read_bytes()
    assert ws.bin("failok/s.best.model").read_bytes() == winner

    # `bazel run` on the report prints the leaderboard.
    run = ws.bazel("run", "//failok:s", check=True)
    lines = run.stdout.splitlines()
    assert lines[0] == "//failok:s: 4 trials ranked by accuracy (max)"
    header = lines[2].split()
    assert header[:3] == ["rank", "name", "status"]
    assert lines[4].split()[:3] == ["1", "s__behaviour-ok__eval_behaviour-ok", "ok"]
    assert sum(1 for line in lines if " failed " in line) == 3
    assert "train exited with code 3" in run.stdout


def test_a_failure_record_and_card_name_paths_relative_to_the_execroot(
    ws: Workspace,
) -> None:
    # A traceback names the script by the path it ran from: in a sandbox,
    # /dev/shm/bazel-sandbox.<hash>/linux-sandbox/<n>/execroot/fixture/...,
    # another each build. The record keeps the execroot-relative path.
    write_failing(ws, "failpath", {"behaviour": ["ok", "raise"]}, allow=True)
    name = "failpath/s__behaviour-raise"
    cards = ("--output_groups=+cards",)
    ws.build("//failpath:s", f"//{name.replace('/', ':', 1)}", flags=cards)
    record = ws.bin(f"{name}.model").read_bytes()
    failure = json.loads(record.split(b"\n", 1)[1])
    assert failure["stderr_tail"].splitlines()[-1] == (
        "ValueError: the learning rate is too high"
    )
    assert '  File "scripts/train.py", line ' in failure["stderr_tail"], failure
    card = ws.bin(f"{name}.model.card.json").read_bytes()
    for text in (record.decode(), card.decode()):
        assert "/execroot/" not in text and str(ws.output_base) not in text
    # Byte for byte the same after a clean build (another sandbox).
    ws.bazel("clean", check=True)
    again = ws.build("//failpath:s", f"//{name.replace('/', ':', 1)}", flags=cards)
    assert again.executed("DatabazelTrain") == 2
    assert ws.bin(f"{name}.model").read_bytes() == record
    assert ws.bin(f"{name}.model.card.json").read_bytes() == card


def test_without_allow_failure_a_crashing_trial_fails_the_build_naming_it(
    ws: Workspace,
) -> None:
    write_failing(ws, "failstrict", {"behaviour": ["ok", "exit3"]}, allow=False)
    result = ws.build("//failstrict:s", check=False)
    assert result.returncode != 0
    assert (
        "databazel: error: //failstrict:s__behaviour-exit3: train script"
        in result.stderr
    )
    assert "exited with code 3" in result.stderr


def test_when_every_trial_failed_the_report_fails_clearly(ws: Workspace) -> None:
    write_failing(ws, "failall", {"behaviour": ["exit3", "nomodel"]}, allow=True)
    result = ws.build("//failall:s", check=False)
    assert result.returncode != 0
    assert (
        "databazel: error: //failall:s: all 2 trials failed, so there is no best model"
        in result.stderr
    )


def test_allow_failed_trials_is_the_old_spelling_of_allow_failure(
    ws: Workspace,
) -> None:
    # One idea, one name: `allow_failure` as on `model` and `evaluate`. The old
    # spelling works, with a message, until 0.2.0; both together fail.
    grid = json.dumps({"behaviour": ["ok", "exit3"]})
    write_failing(ws, "failold", {"behaviour": ["ok"]}, allow=False)
    ws.write(
        "failold/BUILD",
        FAILING_BUILD.format(allow="allow_failed_trials = True,", grid=grid),
    )
    result = ws.build("//failold:s")
    assert (
        "//failold:s: `allow_failed_trials` is renamed `allow_failure`: write "
        "allow_failure = True (the old name is accepted until databazel 0.2.0)"
    ) in result.stderr
    report = json.loads(ws.bin("failold/s.json").read_text())
    assert report["failed"] == 1

    both = "allow_failed_trials = True, allow_failure = True,"
    ws.write("failold/BUILD", FAILING_BUILD.format(allow=both, grid=grid))
    failed = ws.bazel("query", "//failold:all")
    assert failed.returncode != 0
    assert (
        "//failold:s: `allow_failed_trials` is the old name of `allow_failure`; "
        "set only `allow_failure`"
    ) in failed.stderr


BAD_RANDOM = [
    (
        'strategy = "random", search_space = {"x": uniform(0, 1)}',
        "a random search needs `num_trials`",
    ),
    (
        'strategy = "random", num_trials = 2, grid = {"x": ["1"]}',
        "a random search takes `search_space`, not `grid`",
    ),
    (
        'strategy = "bayes", grid = {"x": ["1"]}',
        '`strategy` must be "grid", "random" or "tpe"',
    ),
    ('grid = {"x": ["1"]}, num_trials = 3', '`num_trials` is for strategy = "random"'),
    (
        'strategy = "random", num_trials = 0, search_space = {"x": uniform(0, 1)}',
        "`num_trials` must be a positive int",
    ),
    (
        'strategy = "random", num_trials = 2, search_space = {"x": loguniform(0, 1)}',
        "loguniform needs 0 < low < high",
    ),
    (
        'strategy = "random", num_trials = 2, search_space = {"x": uniform(2, 1)}',
        "uniform needs low < high",
    ),
    (
        'strategy = "random", num_trials = 2, search_space = {"x": uniform("a", 1)}',
        "needs numbers as bounds",
    ),
    (
        'strategy = "random", num_trials = 2, search_space = {"x": randint(1, 2.5)}',
        "randint needs int bounds",
    ),
    (
        'strategy = "random", num_trials = 2, search_space = {"x": (1, 2)}',
        "must be a list of string values or one of",
    ),
    (
        'strategy = "random", num_trials = 7, search_space = {"x": ["a", "b"], "y": randint(1, 3)}',
        "only 6 distinct points",
    ),
    (
        'strategy = "random", num_trials = 2, seed = "1", search_space = {"x": uniform(0, 1)}',
        "`seed` must be an int",
    ),
    (
        'strategy = "random", num_trials = 2, search_space = {"x": uniform(0, 1)}, hyperparams = {"tol": 1}',
        'hyperparams["tol"] is 1 (int); hyperparameter values must be strings',
    ),
    (
        'strategy = "random", num_trials = 2, search_space = {"x": ["a", "a"]}',
        'search_space["x"] lists the value "a" twice',
    ),
    (
        'strategy = "random", num_trials = 2000, search_space = {"x": uniform(0, 1)}',
        "`num_trials` = 2000 is more than max_trials = 1000",
    ),
]


@pytest.mark.parametrize(
    ("arguments", "message"), BAD_RANDOM, ids=[m for _, m in BAD_RANDOM]
)
def test_bad_random_search_declarations_fail_at_load_time(
    ws: Workspace, arguments: str, message: str
) -> None:
    ws.write(
        "badrandom/BUILD",
        LOAD
        + f"""
hyperparam_search(
    name = "s",
    {arguments},
    metric = "accuracy",
    eval_executable = "//scripts:evaluate.py",
    test_data = "BUILD",
    train_executable = "//scripts:train.py",
    training_data = "BUILD",
)
""",
    )
    result = ws.bazel("query", "//badrandom:all")
    assert result.returncode != 0
    assert "//badrandom:s: " in result.stderr, result.stderr[-2000:]
    assert message in result.stderr, result.stderr[-2000:]
