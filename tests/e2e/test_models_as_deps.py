"""End-to-end tests of models as dependencies: quality gates, lineage cards, the served best model."""

from __future__ import annotations

import hashlib
import json

from bazel_harness import Workspace

LOAD = 'load("@databazel//databazel:defs.bzl", "evaluate", "hyperparam_search", "metrics_test", "model")\n'

GATE_BUILD = (
    LOAD
    + """
model(
    name = "m",
    hyperparams = {{"x": "{x}"{extra}}},
    allow_failure = True,
    train_executable = "//scripts:train.py",
    training_data = "train.txt",
    deps = ["//lib:fixturelib"],
)

evaluate(
    name = "e",
    allow_failure = True,
    eval_executable = "//scripts:evaluate.py",
    model = ":m",
    test_data = "test.txt",
    deps = ["//lib:fixturelib"],
)

metrics_test(
    name = "good_enough",
    at_least = {{"accuracy": "0.5"}},
    at_most = {{"loss": "0.5"}},
    metrics = ":e",
)

metrics_test(
    name = "too_strict",
    at_least = {{"accuracy": "1.5"}},
    metrics = ":e",
)

metrics_test(
    name = "unknown_metric",
    at_least = {{"f1": "0.5"}},
    metrics = ":e",
)

hyperparam_search(
    name = "s",
    eval_executable = "//scripts:evaluate.py",
    grid = {{"x": ["0", "{x}", "5"]}},
    metric = "accuracy",
    test_data = "test.txt",
    train_executable = "//scripts:train.py",
    training_data = "train.txt",
    deps = ["//lib:fixturelib"],
)

metrics_test(
    name = "search_gate",
    at_least = {{"accuracy": "0.9"}},
    metrics = ":s",
)
"""
)


def write_gates(ws: Workspace, x: str, extra: str = "") -> None:
    ws.write("gates/train.txt", "training rows\n")
    ws.write("gates/test.txt", "test rows\n")
    ws.write("gates/BUILD", GATE_BUILD.format(x=x, extra=extra))


def test_gates_pass_fail_with_the_bar_and_are_cached(ws: Workspace) -> None:
    write_gates(ws, "1")
    # x = 1: the fixture's accuracy is 1.0 and its loss 0.0.
    passing = ws.bazel(
        "test", "--test_output=all", "//gates:good_enough", "//gates:search_gate"
    )
    assert passing.returncode == 0, passing.stderr[-3000:]
    assert (
        "PASSED //gates:good_enough: //gates:e: accuracy = 1.0, ok: at_least 0.5"
        in passing.stdout
    )
    assert "PASSED //gates:good_enough: //gates:e: loss = 0.0, ok: at_most 0.5" in (
        passing.stdout
    )
    assert (
        "PASSED //gates:search_gate: //gates:s (best trial //gates:s__x-1): "
        "accuracy = 1.0, ok: at_least 0.9" in passing.stdout
    )

    failing = ws.bazel("test", "--test_output=errors", "//gates:too_strict")
    assert failing.returncode == 3  # some tests failed
    assert (
        "FAILED //gates:too_strict: //gates:e: accuracy = 1.0, below the bar: "
        "at_least 1.5" in failing.stdout
    )
    unknown = ws.bazel("test", "--test_output=errors", "//gates:unknown_metric")
    assert unknown.returncode == 3
    assert (
        'FAILED //gates:unknown_metric: //gates:e: no metric "f1" '
        "(it has: accuracy, data_files, loss)" in unknown.stdout
    )

    # Nothing changed: the gates' results come from the cache.
    again = ws.bazel("test", "//gates:good_enough", "//gates:search_gate")
    assert again.returncode == 0
    assert again.executed() == 0, again.executed_by_mnemonic()
    assert again.stdout.count("(cached) PASSED") == 2


def test_a_worse_hyperparameter_turns_the_gates_red(ws: Workspace) -> None:
    write_gates(ws, "1")
    assert ws.bazel("test", "//gates:good_enough", "//gates:search_gate").returncode == 0
    # x = 3 scores 1 / (1 + 2): below the model's bar, and the search's best
    # trial (now x = 0, 0.5) is below the search's bar.
    write_gates(ws, "3")
    worse = ws.bazel(
        "test", "--test_output=errors", "//gates:good_enough", "//gates:search_gate"
    )
    assert worse.returncode == 3
    assert (
        "FAILED //gates:good_enough: //gates:e: accuracy = 0.3333333333333333, "
        "below the bar: at_least 0.5" in worse.stdout
    )
    assert (
        "FAILED //gates:good_enough: //gates:e: loss = 0.6666666666666667, "
        "above the bar: at_most 0.5" in worse.stdout
    )
    assert (
        "FAILED //gates:search_gate: //gates:s (best trial //gates:s__x-0): "
        "accuracy = 0.5, below the bar: at_least 0.9" in worse.stdout
    )
    # Retrained and re-evaluated, not served from the cache.
    assert worse.executed("DatabazelTrain") == 2
    assert worse.executed("DatabazelEvaluate") == 2


def test_a_failed_trial_record_fails_the_gate(ws: Workspace) -> None:
    write_gates(ws, "1", extra=', "behaviour": "exit3"')
    result = ws.bazel("test", "--test_output=errors", "//gates:good_enough")
    assert result.returncode == 3
    assert (
        "FAILED //gates:good_enough: //gates:e recorded a failure instead of "
        "metrics: train of //gates:m failed: train script" in result.stdout
    )


def test_a_bar_that_is_not_a_number_fails_at_analysis(ws: Workspace) -> None:
    write_gates(ws, "1")
    with (ws.root / "gates" / "BUILD").open("a") as build:
        build.write('\nmetrics_test(name = "bad", at_least = {"accuracy": "high"}, metrics = ":e")\n')
    result = ws.bazel("test", "//gates:bad")
    assert result.returncode != 0
    assert (
        "//gates:bad: `at_least` of metric \"accuracy\" must be a number written "
        'as a string, such as "0.9"; got "high"' in result.stderr
    )


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


