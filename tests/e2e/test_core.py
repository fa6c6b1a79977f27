"""End-to-end tests of model, evaluate and hyperparam_search with real Bazel builds."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest
from bazel_harness import SANDBOXED, Workspace

LOAD = (
    'load("@databazel//databazel:defs.bzl", "evaluate", "hyperparam_search", "model")\n'
)

SEARCH_BUILD = (
    LOAD
    + """
hyperparam_search(
    name = "s",
    eval_executable = "//scripts:evaluate.py",
    grid = {{
        "x": [{xs}],
        "y": ["a", "b"],
    }},
    hyperparams = {{"fixed": "yes"}},
    metric = "accuracy",
    mode = "max",
    test_data = "test.txt",
    train_executable = "//scripts:train.py",
    training_data = "train.txt",
    deps = ["//lib:fixturelib"],
)
"""
)


def write_search(ws: Workspace, xs: list[str]) -> None:
    ws.write("search/train.txt", "training rows\n")
    ws.write("search/test.txt", "test rows\n")
    ws.write("search/BUILD", SEARCH_BUILD.format(xs=", ".join(f'"{x}"' for x in xs)))


def test_search_builds_every_trial_and_a_ranked_report(ws: Workspace) -> None:
    write_search(ws, ["0", "1", "3"])
    result = ws.build("//search:s")
    assert result.executed("DatabazelTrain") == 6
    assert result.executed("DatabazelEvaluate") == 6
    assert result.executed("DatabazelReport") == 1

    model = json.loads(ws.bin("search/s__x-1__y-b.model").read_text())
    assert json.loads(model["hyperparams_arg"]) == {"fixed": "yes", "x": "1", "y": "b"}

    report = json.loads(ws.bin("search/s.json").read_text())
    assert report["metric"] == "accuracy" and report["mode"] == "max"
    assert len(report["trials"]) == 6
    assert {t["name"] for t in report["trials"]} == {
        f"s__x-{x}__y-{y}" for x in "013" for y in "ab"
    }
    assert report["best"]["hyperparams"]["x"] == "1"
    assert report["best"]["metrics"]["accuracy"] == 1.0
    scores = [t["metrics"]["accuracy"] for t in report["trials"]]
    assert scores == sorted(scores, reverse=True)

    rows = list(csv.DictReader(ws.bin("search/s.csv").open()))
    assert len(rows) == 6 and rows[0]["x"] == "1"
    markdown = ws.bin("search/s.md").read_text()
    assert markdown.count("| s__x-") == 6

    # Everything else the evaluation script wrote is kept beside the metrics.
    assert (ws.bin("search/s__x-3__y-a__eval.outputs") / "extra.txt").exists()


def test_immediate_rebuild_runs_no_action(ws: Workspace) -> None:
    write_search(ws, ["0", "1", "3"])
    ws.build("//search:s")
    again = ws.build("//search:s")
    assert again.executed() == 0, again.executed_by_mnemonic()


def test_adding_a_grid_value_runs_only_the_new_trials(ws: Workspace) -> None:
    write_search(ws, ["0", "1", "3"])
    ws.build("//search:s")
    write_search(ws, ["0", "1", "3", "2"])
    grown = ws.build("//search:s")
    assert grown.executed_by_mnemonic() == {
        "DatabazelTrain": 2,
        "DatabazelEvaluate": 2,
        "DatabazelReport": 1,
    }
    trained = sorted(
        s["progressMessage"]
        for s in grown.spawns
        if s.get("mnemonic") == "DatabazelTrain"
    )
    assert all("x=2" in m for m in trained), trained
    report = json.loads(ws.bin("search/s.json").read_text())
    assert len(report["trials"]) == 8


def test_shell_metacharacters_reach_the_script_verbatim(
    ws: Workspace, tmp_path: Path
) -> None:
    pwned = tmp_path / "pwned"
    value = f"a b; $(touch {pwned}) `touch {pwned}` \"q\" 'q' \\ $HOME é\nline2"
    ws.write("meta/data.txt", "x\n")
    ws.write(
        "meta/BUILD",
        LOAD
        + f"""
model(
    name = "m",
    hyperparams = {{"v": {json.dumps(value, ensure_ascii=False)}}},
    train_executable = "//scripts:train.py",
    training_data = "data.txt",
    deps = ["//lib:fixturelib"],
)
""",
    )
    ws.build("//meta:m")
    model = json.loads(ws.bin("meta/m.model").read_text(encoding="utf-8"))
    assert json.loads(model["hyperparams_arg"]) == {"v": value}
    assert (
        model["argv"][model["argv"].index("--hyperparams") + 1]
        == model["hyperparams_arg"]
    )
    assert not pwned.exists()


@pytest.mark.parametrize("mode", ["sandboxed", "warm"])
def test_a_non_ascii_data_file_name_reaches_the_script_as_it_is(
    ws: Workspace, mode: str
) -> None:
    # Bazel 4.2 writes the params file (and a worker's WorkRequest) UTF-8
    # encoded twice; the runner reads the name as it is.
    name = "dätä_日本.txt"
    ws.write(f"unicode/{name}", "rows\n")
    ws.write(
        "unicode/BUILD",
        LOAD
        + f"""
model(
    name = "m_{mode}",
    train_executable = "//scripts:train.py",
    training_data = "{name}",
    deps = ["//lib:fixturelib"],
)
""",
    )
    flags = () if mode == "warm" else SANDBOXED
    result = ws.build(f"//unicode:m_{mode}", flags=flags)
    (spawn,) = [s for s in result.spawns if s.get("mnemonic") == "DatabazelTrain"]
    assert spawn["runner"] == ("worker" if mode == "warm" else "linux-sandbox")
    model = json.loads(ws.bin(f"unicode/m_{mode}.model").read_text(encoding="utf-8"))
    assert model["argv"][model["argv"].index("--data") + 1] == f"unicode/{name}"
    assert model["data"] == hashlib.sha256(b"rows\n").hexdigest()


def test_py_binary_script_several_data_files_and_declared_env(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws.write("multi/data/a.txt", "A\n")
    ws.write("multi/data/sub/b.txt", "B\n")
    ws.write(
        "multi/BUILD",
        LOAD
        + """
filegroup(
    name = "data",
    srcs = ["data/a.txt", "data/sub/b.txt"],
)

model(
    name = "m",
    env = {"DECLARED": "visible"},
    model_file = "out/m.json",
    train_executable = "//scripts:train_bin",
    training_data = ":data",
)
""",
    )
    monkeypatch.setenv("DATABAZEL_E2E_MARKER", "leaked")
    ws.build("//multi:m")
    model = json.loads(ws.bin("multi/out/m.json").read_text())
    assert model["data_is_dir"] is True
    assert set(model["data"]) == {"a.txt", "sub/b.txt"}
    assert model["declared_env"] == "visible"
    assert (
        model["env_marker"] is None
    )  # undeclared variables of the shell never reach a trial


EXPECTED_METRICS = (
    'Expected a JSON object mapping metric names to finite numbers, e.g. {"accuracy": 0.97}; '
    "put entries that are not metrics in `ignore_metrics` (of `evaluate` or `hyperparam_search`)"
)
INVALID = "evaluate script scripts/evaluate.py wrote an invalid {out}/e.outputs/metrics.json: "

# Each violation, its stage, and the whole error a user sees, line by line
# ({out}: the package's output directory).
VIOLATIONS = [
    (
        "exit3",
        "train",
        [
            "train script scripts/train.py exited with code 3",
            "Last lines of its stderr:",
            *(f"    training log line {i}" for i in range(81, 100)),
            "    FATAL: the learning rate is too high",
        ],
    ),
    (
        "nomodel",
        "train",
        [
            "train script scripts/train.py exited 0 but wrote no model at {out}/m.model; "
            "the script must write the model file to the path given by "
            "--model-output-path"
        ],
    ),
    (
        "dir",
        "train",
        [
            "train script scripts/train.py exited 0 but wrote a directory at "
            "{out}/m.model where a model file was expected; write a single file to "
            "the path given by --model-output-path (archive several files into one)"
        ],
    ),
    (
        "crash_after_write",
        "train",
        [
            "train script scripts/train.py exited with code 1",
            "Last lines of its stderr:",
            "    crashed after writing the model",
        ],
    ),
    (
        "exit5",
        "evaluate",
        [
            "evaluate script scripts/evaluate.py exited with code 5",
            "Last lines of its stderr:",
            "    evaluation exploded",
        ],
    ),
    (
        "nometrics",
        "evaluate",
        [
            "evaluate script scripts/evaluate.py exited 0 but wrote no metrics.json in "
            "{out}/e.outputs (it contains: notes.txt); the script must write "
            "DIR/metrics.json where DIR is the path given by --output-dir"
        ],
    ),
    (
        "notjson",
        "evaluate",
        [
            INVALID + "not valid JSON: Expecting value: line 1 column 1 (char 0)",
            EXPECTED_METRICS,
        ],
    ),
    (
        "list",
        "evaluate",
        [INVALID + "expected a JSON object, found a list", EXPECTED_METRICS],
    ),
    (
        "string",
        "evaluate",
        [
            INVALID
            + 'metric "accuracy" has a string "high" value; it must be a number',
            EXPECTED_METRICS,
        ],
    ),
    (
        "nan",
        "evaluate",
        [
            INVALID + 'metric "accuracy" is NaN; it must be a finite number',
            EXPECTED_METRICS,
        ],
    ),
    (
        "inf",
        "evaluate",
        [
            INVALID + 'metric "loss" is -Infinity; it must be a finite number',
            EXPECTED_METRICS,
        ],
    ),
    (
        "nested",
        "evaluate",
        [
            INVALID
            + 'metric "accuracy" has a nested object value; it must be a number',
            EXPECTED_METRICS,
        ],
    ),
    (
        "bool",
        "evaluate",
        [
            INVALID
            + 'metric "accuracy" has a boolean (true) value; it must be a number',
            EXPECTED_METRICS,
        ],
    ),
    (
        "empty",
        "evaluate",
        [
            INVALID + "the object is empty; at least one metric is required",
            EXPECTED_METRICS,
        ],
    ),
    ("duplicate", "evaluate", [INVALID + 'duplicate key "accuracy"', EXPECTED_METRICS]),
    (
        "spam",
        "train",
        [
            "train script scripts/train.py exited with code 1",
            "Last lines of its stderr:",
            # Megabytes of output: a tail of whole lines, at most 8 KiB of them.
            *(f"    progress {i} " + "e" * 1000 for i in range(2992, 3000)),
            "    last words",
        ],
    ),
]


@pytest.mark.parametrize(
    ("behaviour", "stage", "lines"),
    VIOLATIONS,
    ids=[v[0] for v in VIOLATIONS],
)
def test_contract_violation_fails_with_a_clear_message(
    ws: Workspace, behaviour: str, stage: str, lines: list[str]
) -> None:
    key = "behaviour" if stage == "train" else "eval_behaviour"
    ws.write("bad/data.txt", "x\n")
    ws.write(
        f"bad/{behaviour}/BUILD",
        LOAD
        + f"""
model(
    name = "m",
    hyperparams = {{"{key}": "{behaviour}"}},
    train_executable = "//scripts:train.py",
    training_data = "//bad:data.txt",
    deps = ["//lib:fixturelib"],
)

evaluate(
    name = "e",
    eval_executable = "//scripts:evaluate.py",
    model = ":m",
    test_data = "//bad:data.txt",
    deps = ["//lib:fixturelib"],
)
""",
    )
    ws.write("bad/BUILD", 'exports_files(["data.txt"])\n')
    result = ws.build(f"//bad/{behaviour}:e", check=False)
    assert result.returncode != 0
    target = f"//bad/{behaviour}:{'m' if stage == 'train' else 'e'}"
    out = f"bazel-out/k8-fastbuild/bin/bad/{behaviour}"
    expected = [line.replace("{out}", out) for line in lines]
    expected[0] = f"databazel: error: {target}: {expected[0]}"
    stderr = result.stderr.splitlines()
    assert expected[0] in stderr, result.stderr[-3000:]
    start = stderr.index(expected[0])
    # The whole error, and then Bazel's own lines (INFO:, FAILED:, ...).
    assert stderr[start : start + len(expected)] == expected, result.stderr[-3000:]
    following = stderr[start + len(expected) : start + len(expected) + 1]
    assert not following or not following[0].startswith(" "), following
    # However much the script printed, the error shows a bounded tail.
    assert len(result.stderr.encode()) < 64 * 1024, len(result.stderr.encode())
    if stage == "train":
        # No half-written model is left where a result is expected.
        assert not ws.bin(f"bad/{behaviour}/m.model").is_file()


def test_only_declared_sibling_modules_import(ws: Workspace) -> None:
    ws.write("sibling/data.txt", "x\n")
    ws.write(
        "sibling/BUILD",
        LOAD
        + """
model(
    name = "declared",
    train_executable = "//scripts:sibling_train.py",
    training_data = "data.txt",
    deps = ["//scripts:sibling_helper.py"],
)

model(
    name = "undeclared",
    train_executable = "//scripts:sibling_train.py",
    training_data = "data.txt",
)
""",
    )
    ws.build("//sibling:declared")
    assert (
        ws.bin("sibling/declared.model").read_text() == "hello from a declared sibling"
    )
    # The helper sits next to the script in the source tree, but the action did
    # not declare it: the import must fail instead of silently escaping the cache key.
    result = ws.build("//sibling:undeclared", check=False)
    assert result.returncode != 0
    assert "ModuleNotFoundError: No module named 'sibling_helper'" in result.stderr


def test_generated_training_data(ws: Workspace) -> None:
    ws.write(
        "generated/BUILD",
        LOAD
        + """
genrule(
    name = "make_data",
    outs = ["rows.csv"],
    cmd = "printf 'a,1\\\\nb,2\\\\n' > $@",
)

model(
    name = "m",
    train_executable = "//scripts:train.py",
    training_data = ":make_data",
    deps = ["//lib:fixturelib"],
)
""",
    )
    ws.build("//generated:m")
    model = json.loads(ws.bin("generated/m.model").read_text())
    assert model["data_is_dir"] is False
    assert model["data"] == hashlib.sha256(b"a,1\nb,2\n").hexdigest()
    data_arg = model["argv"][model["argv"].index("--data") + 1]
    assert data_arg.startswith("bazel-out/") and data_arg.endswith("generated/rows.csv")


# Each case: arguments replacing (or, with None, removing) those of a good search.
GOOD_SEARCH = {
    "grid": '{"x": ["1", "2"]}',
    "metric": '"accuracy"',
    "eval_executable": '"//scripts:evaluate.py"',
    "test_data": '"BUILD"',
    "train_executable": '"//scripts:train.py"',
    "training_data": '"BUILD"',
}
BAD_SEARCHES = [
    ({"grid": "{}"}, "`grid` must be a non-empty dict"),
    ({"grid": '{"x": []}'}, 'grid["x"] must be a non-empty list of strings'),
    (
        {"grid": '{"x": [1, 2]}'},
        'grid["x"] holds 1 (int); hyperparameter values must be strings: write "1"',
    ),
    ({"grid": '{"2x": ["1"]}'}, 'grid key "2x" is not a valid hyperparameter name'),
    ({"grid": '{"": ["1"]}'}, 'grid key "" is not a valid hyperparameter name'),
    (
        {"grid": '{"learning rate": ["1"]}'},
        'grid key "learning rate" is not a valid hyperparameter name',
    ),
    ({"grid": '{"x": ["1", "1"]}'}, 'grid["x"] lists the value "1" twice'),
    (
        {"grid": '{"x": ["1"]}', "hyperparams": '{"x": "2"}'},
        '"x" is both in `grid` and in `hyperparams`',
    ),
    ({"hyperparams": '{"tol": 0.1}'}, 'hyperparams["tol"] is 0.1 (float)'),
    (
        {"hyperparams": '{"a-b": "1"}'},
        'hyperparams key "a-b" is not a valid hyperparameter name',
    ),
    ({"mode": '"best"'}, '`mode` must be "max" or "min"'),
    ({"metric": '""'}, "`metric` must name the metric"),
    ({"metric": None}, "`metric` is required"),
    ({"grid": None}, "`grid` is required"),
    ({"training_data": None}, "`training_data` is required"),
    ({"eval_executable": None}, "`eval_executable` is required"),
    ({"timeout": "-5"}, "`timeout` must be a number of seconds"),
    (
        {
            "grid": '{"a": [str(i) for i in range(40)], "b": [str(i) for i in range(30)]}'
        },
        "the grid has 1200 trials (40 a x 30 b), more than max_trials = 1000",
    ),
    (
        {"grid": '{"a": ["1", "2", "3"]}', "max_trials": "2"},
        "the grid has 3 trials (3 a), more than max_trials = 2",
    ),
    ({"max_trials": "0"}, "`max_trials` must be a positive int"),
    (
        {"grid": '{"epochs": ["0", "2"]}'},
        'epochs must be positive integers (a number of epochs), got "0"',
    ),
    ({"hyperparams": '{"epochs": "3"}'}, "`epochs` is not a hyperparameter"),
    (
        {"grid": '{"epochs": ["2"]}', "epochs": "3"},
        "`epochs` is both an argument and a searched hyperparameter",
    ),
    ({"learning_curve": "True"}, "`learning_curve` evaluates every epoch"),
    ({"epochs": "0"}, "`epochs` must be a positive int"),
    # Trial names would clash with the rungs' and rounds' targets.
    (
        {"grid": '{"rung": ["1", "2"]}'},
        'grid key "rung" is a word databazel names its own targets of a search with '
        '(bracket, round, rung, trial): rename the hyperparameter, such as "rungs"',
    ),
    (
        {
            "grid": None,
            "strategy": '"random"',
            "num_trials": "2",
            "search_space": '{"round": ["1", "2"], "trial": ["0"]}',
        },
        'search_space key "round" is a word databazel names its own targets',
    ),
]


def search_declaration(changes: dict[str, str | None]) -> str:
    arguments = {**GOOD_SEARCH, **changes}
    lines = "".join(f"    {k} = {v},\n" for k, v in arguments.items() if v is not None)
    return LOAD + f'\nhyperparam_search(\n    name = "s",\n{lines})\n'


@pytest.mark.parametrize(
    ("changes", "message"),
    BAD_SEARCHES,
    ids=[m.split(";")[0][:50] for _, m in BAD_SEARCHES],
)
def test_bad_search_declarations_fail_at_load_time(
    ws: Workspace, changes: dict[str, str | None], message: str
) -> None:
    ws.write("badsearch/BUILD", search_declaration(changes))
    result = ws.bazel("query", "//badsearch:all")
    assert result.returncode != 0
    assert "//badsearch:s: " in result.stderr, result.stderr[-2000:]
    assert message in result.stderr, result.stderr[-2000:]


def test_max_trials_can_be_raised(ws: Workspace) -> None:
    changes = {
        "grid": '{"a": [str(i) for i in range(40)], "b": [str(i) for i in range(30)]}',
        "max_trials": "1200",
    }
    ws.write("badsearch/BUILD", search_declaration(changes))
    result = ws.bazel("query", "kind(model, //badsearch:all)", check=True)
    assert len(result.stdout.split()) == 1200


def test_the_old_spelling_of_model_file_is_accepted_with_a_message(
    ws: Workspace,
) -> None:
    # `model` (a file name) was renamed `model_file`, so that `model` only ever
    # names a model target (as in `evaluate`). One release accepts both.
    ws.write("renamed/train.txt", "training rows\n")
    ws.write("renamed/test.txt", "test rows\n")
    ws.write(
        "renamed/BUILD",
        LOAD
        + """
model(
    name = "m",
    model = "old/m.json",
    train_executable = "//scripts:train.py",
    training_data = "train.txt",
    deps = ["//lib:fixturelib"],
)

exports_files(["train.txt"])

hyperparam_search(
    name = "s",
    eval_executable = "//scripts:evaluate.py",
    grid = {"x": ["1"]},
    metric = "accuracy",
    model = "trial.json",
    test_data = "test.txt",
    train_executable = "//scripts:train.py",
    training_data = "train.txt",
    deps = ["//lib:fixturelib"],
)
""",
    )
    result = ws.build("//renamed:m", "//renamed:s")
    until = "(the old name is accepted until databazel 0.2.0)"
    for target, value in [("m", "old/m.json"), ("s", "trial.json")]:
        message = (
            f"//renamed:{target}: `model` is renamed `model_file`: "
            f'write model_file = "{value}" {until}'
        )
        assert message in result.stderr
    assert (
        json.loads(ws.bin("renamed/old/m.json").read_text())["hyperparams_arg"] == "{}"
    )
    assert ws.bin("renamed/s__x-1/trial.json").is_file()
    assert json.loads(ws.bin("renamed/s.json").read_text())["best"]["model"] == (
        "renamed/s__x-1/trial.json"
    )

    ws.write(
        "renamed_both/BUILD",
        LOAD
        + """
model(
    name = "m",
    model = "a.json",
    model_file = "b.json",
    train_executable = "//scripts:train.py",
    training_data = "//renamed:train.txt",
)
""",
    )
    failed = ws.build("//renamed_both:m", check=False)
    assert failed.returncode != 0
    assert (
        "//renamed_both:m: `model` is the old name of `model_file`; "
        "set only `model_file`" in failed.stderr
    )
