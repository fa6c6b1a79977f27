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


def write_gates(ws: Workspace, x: str, extra: str = "", more: str = "") -> None:
    """The gates package; `more`: further BUILD lines."""
    ws.write("gates/train.txt", "training rows\n")
    ws.write("gates/test.txt", "test rows\n")
    ws.write("gates/BUILD", GATE_BUILD.format(x=x, extra=extra) + more)


def test_gates_pass_fail_with_the_bar_and_are_cached(ws: Workspace) -> None:
    write_gates(ws, "1")
    # x = 1: the fixture's accuracy is 1.0 and its loss 0.0.
    passing = ws.bazel(
        "test", "--test_output=all", "//gates:good_enough", "//gates:search_gate"
    )
    assert passing.returncode == 0, passing.stderr[-3000:]
    assert (
        "PASSED //gates:good_enough: //gates:e: accuracy = 1, ok: at_least 0.5"
        in passing.stdout
    )
    assert "PASSED //gates:good_enough: //gates:e: loss = 0, ok: at_most 0.5" in (
        passing.stdout
    )
    assert (
        "PASSED //gates:search_gate: //gates:s (best trial //gates:s__x-1): "
        "accuracy = 1, ok: at_least 0.9" in passing.stdout
    )

    failing = ws.bazel("test", "--test_output=errors", "//gates:too_strict")
    assert failing.returncode == 3  # some tests failed
    assert (
        "FAILED //gates:too_strict: //gates:e: accuracy = 1, below the bar: "
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
    assert (
        ws.bazel("test", "//gates:good_enough", "//gates:search_gate").returncode == 0
    )
    # A hyperparameter the score does not depend on: the model is retrained
    # and re-evaluated, the metrics stay the same, and so does the gate's result.
    write_gates(ws, "1", extra=', "note": "retrained"')
    same = ws.bazel("test", "//gates:good_enough")
    assert same.returncode == 0
    assert same.executed("DatabazelTrain") == 1
    assert "(cached) PASSED" in same.stdout
    # x = 3 scores 1 / (1 + 2): below the model's bar, and the search's best
    # trial (now x = 0, 0.5) is below the search's bar.
    write_gates(ws, "3")
    worse = ws.bazel(
        "test", "--test_output=errors", "//gates:good_enough", "//gates:search_gate"
    )
    assert worse.returncode == 3
    assert (
        "FAILED //gates:good_enough: //gates:e: accuracy = 0.3333, "
        "below the bar: at_least 0.5" in worse.stdout
    )
    assert (
        "FAILED //gates:good_enough: //gates:e: loss = 0.6667, "
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


def test_a_bar_that_is_not_a_finite_number_fails_at_analysis(ws: Workspace) -> None:
    write_gates(
        ws,
        "1",
        more='\nmetrics_test(name = "bad", at_least = {"accuracy": "high"}, metrics = ":e")\n'
        # Python would read it as infinity, when the test runs.
        'metrics_test(name = "huge", at_most = {"n": "1e999"}, metrics = ":e")\n',
    )
    result = ws.bazel("test", "--keep_going", "//gates:bad", "//gates:huge")
    assert result.returncode != 0
    assert result.executed() == 0  # analysis: nothing ran
    for target, bound, metric, value in [
        ("bad", "at_least", "accuracy", "high"),
        ("huge", "at_most", "n", "1e999"),
    ]:
        assert (
            f'//gates:{target}: `{bound}` of metric "{metric}" must be a finite number '
            f'written as a string, such as "0.9"; got "{value}"' in result.stderr
        ), result.stderr[-3000:]


def test_a_metric_named_like_an_option_is_a_metric(ws: Workspace) -> None:
    # The contract allows any name; `-n` is not gate.py's option.
    write_gates(
        ws,
        "1",
        more='\nmetrics_test(name = "dash", at_most = {"-n": "5", "--help": "1"}, '
        'metrics = ":e")\n',
    )
    result = ws.bazel("test", "--test_output=errors", "//gates:dash")
    assert result.returncode == 3, result.stderr[-3000:]  # failed, not broken
    for metric in ("--help", "-n"):
        assert (
            f'FAILED //gates:dash: //gates:e: no metric "{metric}" (it has: accuracy, '
            "data_files, loss)" in result.stdout
        ), result.stdout[-3000:]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


CARD_BUILD = (
    LOAD
    + """
# buildifier: disable=native-py
py_library(
    name = "fakepkg",
    srcs = ["site/fakepkg-1.2.3.dist-info/__init__.py"],
)

filegroup(
    name = "train_files",
    srcs = ["a.txt", "b.txt"],
)

model(
    name = "m",
    epochs = 3,
    hyperparams = {"x": "1"},
    train_executable = "//scripts:train.py",
    training_data = ":train_files",
    deps = ["//lib:fixturelib", ":fakepkg"],
)

evaluate(
    name = "e",
    eval_executable = "//scripts:evaluate.py",
    learning_curve = True,
    model = ":m",
    test_data = "test.txt",
    deps = ["//lib:fixturelib"],
)

hyperparam_search(
    name = "s",
    eval_executable = "//scripts:evaluate.py",
    grid = {"x": ["0", "1", "4"]},
    metric = "accuracy",
    test_data = "test.txt",
    train_executable = "//scripts:train.py",
    training_data = "a.txt",
    deps = ["//lib:fixturelib"],
)
"""
)


def write_cards(ws: Workspace) -> None:
    ws.write("cards/a.txt", "training rows a\n")
    ws.write("cards/b.txt", "training rows b\n")
    ws.write("cards/test.txt", "test rows\n")
    ws.write("cards/site/fakepkg-1.2.3.dist-info/__init__.py", "")
    ws.write("cards/BUILD", CARD_BUILD)


def file_sha(ws: Workspace, relpath: str) -> str:
    return sha256((ws.root / relpath).read_bytes())


CARD_TARGETS = ("//cards:m", "//cards:e", "//cards:s", "//cards:s.best")


def test_cards_describe_every_checkpoint_evaluation_and_best_model(
    ws: Workspace,
) -> None:
    write_cards(ws)
    # Cards are an output group: building the targets writes none.
    plain = ws.build(*CARD_TARGETS)
    assert plain.executed("DatabazelCard") == 0
    assert not ws.bin("cards/m.epoch-1.model.card.json").exists()
    # Asking for them runs card actions: nothing re-trains (epochs 1 and 2
    # are evaluated for their evaluation cards: only epoch 3 was built).
    result = ws.build(*CARD_TARGETS, flags=("--output_groups=+cards",))
    assert result.executed_by_mnemonic() == {
        "DatabazelCard": 10,
        "DatabazelEvaluate": 2,
    }

    data = [
        {"path": f"cards/{n}", "sha256": file_sha(ws, f"cards/{n}")}
        for n in ("a.txt", "b.txt")
    ]
    script = {"path": "scripts/train.py", "sha256": file_sha(ws, "scripts/train.py")}
    previous = None
    for epoch in (1, 2, 3):
        path = f"cards/m.epoch-{epoch}.model"
        card = json.loads(ws.bin(path + ".card.json").read_text())
        assert card["label"] == "//cards:m"
        assert card["model"] == {
            "path": path,
            "sha256": sha256(ws.bin(path).read_bytes()),
        }
        assert card["epoch"] == epoch
        assert card["resumed_from"] == previous
        assert card["hyperparams"] == {"x": "1"}
        assert card["training_data"] == data
        assert card["script"] == script
        # From the dist-info directory among the training action's deps.
        assert card["python_packages"] == {"fakepkg": "1.2.3"}
        assert card["status"] == "ok" and card["evaluation"] is None
        previous = card["model"]

    # An evaluation's card: the evaluated checkpoint's card with the metrics.
    for epoch in (1, 2, 3):
        card = json.loads(ws.bin(f"cards/e.epoch-{epoch}.card.json").read_text())
        model_card = json.loads(
            ws.bin(f"cards/m.epoch-{epoch}.model.card.json").read_text()
        )
        metrics = json.loads(ws.bin(f"cards/e.epoch-{epoch}.metrics.json").read_text())
        assert card["evaluation"] == {"label": "//cards:e", "metrics": metrics}
        assert {k: v for k, v in card.items() if k != "evaluation"} == {
            k: v for k, v in model_card.items() if k != "evaluation"
        }

    # The search's best model: the winning trial's card, for the served copy.
    report = json.loads(ws.bin("cards/s.json").read_text())
    best = json.loads(ws.bin("cards/s.best.card.json").read_text())
    served = ws.bin("cards/s.best.model").read_bytes()
    assert best["model"] == {"path": "cards/s.best.model", "sha256": sha256(served)}
    assert best["label"] == report["best"]["label"] == "//cards:s__x-1"
    assert best["hyperparams"] == {"x": "1"}
    assert best["training_data"] == [data[0]]
    assert best["search"] == {
        "label": "//cards:s",
        "metric": "accuracy",
        "mode": "max",
        "trial": "//cards:s__x-1",
        "trial_model": "cards/s__x-1.model",
    }
    assert best["evaluation"] == {
        "label": "//cards:s__x-1__eval",
        "metrics": report["best"]["metrics"],
    }
    assert best["epoch"] is None and best["resumed_from"] is None

    # Two clean builds give byte-identical cards. (The fixture's model records
    # the runner's temporary directory of links when it gets several data
    # files, so m's checkpoints, and only their sha256, differ between builds.)
    cards = sorted(p for p in ws.bin("cards").rglob("*.card.json"))
    assert len(cards) == 3 + 3 + 3 + 1  # checkpoints, evaluations, trials, best
    before = {p.name: p.read_bytes() for p in cards}
    ws.bazel("clean", check=True)
    ws.build(*CARD_TARGETS, flags=("--output_groups=+cards",))
    after = {p.name: p.read_bytes() for p in cards}
    searched = [p.name for p in cards if p.name.startswith("s")]
    assert len(searched) == 4
    assert {n: after[n] for n in searched} == {n: before[n] for n in searched}

    def without_model_digests(text: bytes) -> dict:
        card = json.loads(text)
        for key in ("model", "resumed_from"):
            if card[key]:
                card[key] = card[key]["path"]
        return card

    for name in set(before) - set(searched):
        assert without_model_digests(after[name]) == without_model_digests(before[name])


def test_the_card_of_a_model_trained_by_a_py_binary(ws: Workspace) -> None:
    ws.write("cardbin/train.txt", "training rows\n")
    ws.write(
        "cardbin/BUILD",
        LOAD
        + """
model(
    name = "m",
    train_executable = "//scripts:train_bin",
    training_data = "train.txt",
)
""",
    )
    ws.build("//cardbin:m", flags=("--output_groups=+cards",))
    card = json.loads(ws.bin("cardbin/m.model.card.json").read_text())
    # The script is the binary Bazel runs: its launcher, built for the exec
    # configuration (not under bazel-bin, the target configuration's).
    target_config = (ws.root / "bazel-bin").resolve().parent.name
    launchers = [
        p
        for p in (ws.root / "bazel-out").glob("*/bin/scripts/train_bin")
        if p.parents[2].name != target_config
    ]
    assert len(launchers) == 1, launchers
    assert card["script"] == {
        "path": "scripts/train_bin",
        "sha256": sha256(launchers[0].read_bytes()),
    }
    assert card["model"]["sha256"] == sha256(ws.bin("cardbin/m.model").read_bytes())
    assert card["label"] == "//cardbin:m" and card["hyperparams"] == {}
