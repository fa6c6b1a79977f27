"""Model-based search in rounds (`strategy = "tpe"`), built for real.

The session's workspace with optuna (`optuna_ws`, tests/e2e/conftest.py).
The fixture's scripts score 1 / (1 + |x - 1|).
"""

from __future__ import annotations

import json

import pytest
from bazel_harness import Workspace


@pytest.fixture(scope="module")
def tws(optuna_ws: Workspace) -> Workspace:
    return optuna_ws


def search(
    rounds: int, per_round: int = 2, seed: int = 5, space: str = "", **extra: str
) -> str:
    args = "".join(f"    {k} = {v},\n" for k, v in extra.items())
    return f"""
load("@databazel//databazel:defs.bzl", "hyperparam_search", "uniform")
load("@fixture_python//:requirements.bzl", "requirement")

hyperparam_search(
    name = "s",
    strategy = "tpe",
    num_rounds = {rounds},
    trials_per_round = {per_round},
    seed = {seed},
    search_space = {{"x": uniform(-4, 4){space}}},
    suggest_deps = [requirement("optuna")],
    hyperparams = {{"fixed": "f"}},
    metric = "accuracy",
    training_data = "data.txt",
    train_executable = "//scripts:train.py",
    test_data = "data.txt",
    eval_executable = "//scripts:evaluate.py",
    deps = ["//lib:fixturelib"],
{args})
"""


def suggestions(ws: Workspace, package: str) -> dict[str, bytes]:
    """The bytes of every suggested hyperparameters file of search `s`."""
    out = ws.bin(package)
    return {
        p.name: p.read_bytes()
        for p in sorted(out.glob("s__round-*__trial-*.hyperparams.json"))
    }


def test_rounds_are_cached_and_raising_num_rounds_runs_only_the_new_round(
    tws: Workspace,
) -> None:
    tws.write("tpe/data.txt", "data\n")
    tws.write("tpe/BUILD", search(rounds=2))
    first = tws.build("//tpe:s")
    assert first.executed("DatabazelSuggest") == 1
    assert first.executed("DatabazelTrain") == 4
    assert first.executed("DatabazelEvaluate") == 4

    report = json.loads(tws.bin("tpe/s.json").read_text())
    by_name = {t["name"]: t for t in report["trials"]}
    assert sorted(t["round"] for t in report["trials"]) == [0, 0, 1, 1]
    for slot in (0, 1):
        trial = by_name[f"s__round-1__trial-{slot}"]
        suggested = tws.bin(
            f"tpe/s__round-1__trial-{slot}.hyperparams.json"
        ).read_text()
        # The report shows the suggested values, and the script got exactly
        # them, with the fixed ones, as its --hyperparams JSON.
        assert trial["hyperparams"] == json.loads(suggested)
        assert set(trial["hyperparams"]) == {"x", "fixed"}
        assert -4 <= float(trial["hyperparams"]["x"]) <= 4
        model = json.loads(tws.bin(f"tpe/s__round-1__trial-{slot}.model").read_text())
        assert model["hyperparams_arg"] == suggested
    header = tws.bin("tpe/s.csv").read_text().splitlines()[0]
    assert header.startswith("rank,name,status,round,x,fixed,accuracy")

    # A rebuild is a no-op.
    again = tws.build("//tpe:s")
    assert again.executed() == 0, (again.executed_by_mnemonic(), again.stderr[-3000:])

    # Raising num_rounds from 2 to 3: one suggestion and its 2 trials.
    before = suggestions(tws, "tpe")
    tws.write("tpe/BUILD", search(rounds=3))
    raised = tws.build("//tpe:s")
    assert raised.executed("DatabazelSuggest") == 1
    assert raised.executed("DatabazelTrain") == 2
    assert raised.executed("DatabazelEvaluate") == 2
    after = suggestions(tws, "tpe")
    assert {k: after[k] for k in before} == before
    assert len(after) == 4


def test_suggestions_are_identical_across_clean_builds(tws: Workspace) -> None:
    tws.write("tpe/data.txt", "data\n")
    tws.write("tpe/BUILD", search(rounds=3))
    tws.build("//tpe:s")
    first = suggestions(tws, "tpe")
    assert len(first) == 4
    tws.bazel("clean", check=True)
    again = tws.build("//tpe:s")
    assert again.executed("DatabazelSuggest") == 2  # really run again
    assert suggestions(tws, "tpe") == first


def test_a_recorded_failure_does_not_stop_the_round(tws: Workspace) -> None:
    tws.write("tpe_fail/data.txt", "data\n")
    # Seed 0 draws two failing trials (behaviour "exit3") and one ok in round 0.
    tws.write(
        "tpe_fail/BUILD",
        search(
            rounds=2,
            per_round=3,
            seed=0,
            space=', "behaviour": ["ok", "exit3"]',
            allow_failure="True",
        ),
    )
    result = tws.build("//tpe_fail:s")
    assert result.executed("DatabazelSuggest") == 1
    assert result.executed("DatabazelTrain") == 6
    report = json.loads(tws.bin("tpe_fail/s.json").read_text())
    # Exactly the trials drawn with "exit3" failed, and round 1 ran all its trials.
    assert {t["name"]: t["status"] for t in report["trials"]} == {
        t["name"]: "failed" if t["hyperparams"]["behaviour"] == "exit3" else "ok"
        for t in report["trials"]
    }
    round_0 = [t["status"] for t in report["trials"] if t["round"] == 0]
    assert sorted(round_0) == ["failed", "failed", "ok"]  # what seed 0 draws
    assert [t["round"] for t in report["trials"]].count(1) == 3
    assert report["best"]["status"] == "ok"


def test_suggested_values_fill_the_command_line_template(tws: Workspace) -> None:
    # The fixture's scripts with their own flags spelled out by templates;
    # --hyperparams is rebuilt from `{hp.NAME}`, which a round's trials only
    # learn from the suggestion step's file when they run.
    train_args = [
        "--model-output-path={model_output_path}",
        "--data",
        "{data}",
        "--hyperparams",
        '{{"x": "{hp.x}", "fixed": "{hp.fixed}"}}',
    ]
    eval_args = [
        "--output-dir",
        "{output_dir}",
        "--data-path",
        "{data_path}",
        "--model-path",
        "{model_path}",
    ]
    tws.write("tpe_args/data.txt", "data\n")
    tws.write(
        "tpe_args/BUILD",
        search(
            rounds=2, train_args=json.dumps(train_args), eval_args=json.dumps(eval_args)
        ),
    )
    result = tws.build("//tpe_args:s")
    assert result.executed("DatabazelSuggest") == 1
    assert result.executed("DatabazelTrain") == 4
    report = json.loads(tws.bin("tpe_args/s.json").read_text())
    assert sorted(t["round"] for t in report["trials"]) == [0, 0, 1, 1]
    for trial in report["trials"]:
        model = json.loads(tws.bin(f"tpe_args/{trial['name']}.model").read_text())
        x = trial["hyperparams"]["x"]
        assert model["hyperparams_arg"] == f'{{"x": "{x}", "fixed": "f"}}'
        assert model["argv"][0].startswith("--model-output-path=bazel-out/")
    suggested = json.loads(
        tws.bin("tpe_args/s__round-1__trial-0.hyperparams.json").read_text()
    )
    by_name = {t["name"]: t for t in report["trials"]}
    assert by_name["s__round-1__trial-0"]["hyperparams"] == suggested


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            search(rounds=2, num_trials="4"),
            '//tpe_err:s: `num_trials` is for strategy = "random"; a tpe search runs '
            "`num_rounds` rounds of `trials_per_round` trials",
        ),
        (
            search(rounds=0),
            "//tpe_err:s: `num_rounds` must be a positive int (the number of rounds, "
            "the first one drawn at random), got 0",
        ),
        (
            search(rounds=2).replace(
                '    suggest_deps = [requirement("optuna")],\n', ""
            ),
            "//tpe_err:s: a tpe search needs `suggest_deps`, the packages of its "
            'suggestion step: [requirement("optuna")] from your Python environment, got None',
        ),
        (
            search(rounds=2).replace('strategy = "tpe"', 'strategy = "random"'),
            '//tpe_err:s: `num_rounds` is for strategy = "tpe" (a model-based search in rounds)',
        ),
        (
            search(rounds=50, per_round=30),
            "//tpe_err:s: 50 rounds of 30 trials are 1500 trials, more than "
            "max_trials = 1000; raise `max_trials` if you mean it",
        ),
        (
            search(rounds=2, space=', "epochs": ["1", "2"]'),
            "//tpe_err:s: a tpe search can't search over `epochs`",
        ),
        (
            search(rounds=2, per_round=3).replace("uniform(-4, 4)", '["1", "2"]'),
            "//tpe_err:s: `trials_per_round` is 3 but the search space has only 2 "
            "distinct points; lower `trials_per_round` (or use the grid strategy "
            "to try them all)",
        ),
    ],
    ids=[
        "num_trials",
        "num_rounds",
        "suggest_deps",
        "random",
        "max_trials",
        "epochs",
        "trials_per_round",
    ],
)
def test_mistakes_fail_at_load_time(tws: Workspace, build: str, message: str) -> None:
    tws.write("tpe_err/data.txt", "data\n")
    tws.write("tpe_err/BUILD", build)
    result = tws.build("//tpe_err:s", check=False)
    assert result.returncode != 0
    assert message in result.stderr
