"""Command-line templates (`args`, `train_args`, `eval_args`) and `ignore_metrics`, built for real (issue 26).

The scripts are the examples of docs/contract.md ("Your own command line"),
taken from the page as printed: a W&B-style training script, the 2019
evaluation script (`--output-file`, a `"model"` string entry) and a DVC-style
pair with positional arguments. Each model records the command line it got.
"""

from __future__ import annotations

import json
import re

import pytest
from bazel_harness import SANDBOXED, REPO, Result, Workspace

# The two ways a trial runs. Explicit both ways, so that the tests hold
# whichever is the default.
WARM = ()  # the default

TRAIN_ROWS = " ".join(str(i % 10) for i in range(64)) + "\n"
TEST_ROWS = " ".join(str((i * 7) % 10) for i in range(20)) + "\n"


def doc_files() -> dict[str, str]:
    """The files of docs/contract.md's template examples, by the path in their first line."""
    text = (REPO / "docs" / "contract.md").read_text()
    section = text.split("\n## Your own command line\n", 1)[1]
    blocks = re.findall(r"```(?:python|starlark)\n(# (\S+)\n.*?)```", section, re.S)
    files = {path: body for body, path in blocks}
    assert set(files) == {
        "sweep/train.py",
        "sweep/evaluate.py",
        "sweep/BUILD",
        "dvc/train.py",
        "dvc/evaluate.py",
        "dvc/BUILD",
    }, files.keys()
    return files


DOC = doc_files()


def write_package(
    ws: Workspace, package: str, build: str | None = None, scripts: str = "sweep"
) -> None:
    """`tpl/<package>`: the scripts of docs example `scripts`, data, and `build` (default: the example's BUILD)."""
    for name in ("train.py", "evaluate.py"):
        ws.write(f"tpl/{package}/{name}", DOC[f"{scripts}/{name}"])
    ws.write(f"tpl/{package}/train.txt", TRAIN_ROWS)
    ws.write(f"tpl/{package}/test.txt", TEST_ROWS)
    ws.write(
        f"tpl/{package}/BUILD", DOC[f"{scripts}/BUILD"] if build is None else build
    )


def rows(text: str) -> list[float]:
    return [float(x) for x in text.split()]


def accuracy(weight: float) -> float:
    """What the 2019 evaluation script computes on TEST_ROWS."""
    test = rows(TEST_ROWS)
    return 1 / (1 + sum((x - weight) ** 2 for x in test) / len(test))


def exec_path(arg: str, package: str, name: str) -> bool:
    """Whether `arg` is the exec path of output `name` of `tpl/<package>`."""
    return arg.startswith("bazel-out/") and arg.endswith(f"/bin/tpl/{package}/{name}")


def spawn_targets(result: Result, mnemonic: str) -> list[str]:
    """The target named first in the progress message of each spawn of `mnemonic` that ran."""
    return sorted(
        re.match(r"\w+ (//\S+?)[:,]? ", s["progressMessage"] + " ")
        .group(1)
        .rstrip(":,")
        for s in result.spawns
        if s.get("mnemonic") == mnemonic and not s["remoteCacheHit"]
    )


def test_a_wandb_sweep_with_the_2019_evaluation_script(ws: Workspace) -> None:
    write_package(ws, "sweep")
    result = ws.build("//tpl/sweep:sweep", flags=SANDBOXED)
    assert result.executed("DatabazelTrain") == 4
    assert result.executed("DatabazelEvaluate") == 4
    report = json.loads(ws.bin("tpl/sweep/sweep.json").read_text())
    assert len(report["trials"]) == 4
    for trial in report["trials"]:
        name, hp = trial["name"], trial["hyperparams"]
        model = json.loads(ws.bin(f"tpl/sweep/{name}.model").read_text())
        # Exactly the template's arguments: W&B flags, no --hyperparams.
        argv = model["argv"]
        assert argv[:3] == [
            f"--lr={hp['lr']}",
            f"--batch-size={hp['batch_size']}",
            "--train-file=tpl/sweep/train.txt",
        ]
        assert len(argv) == 4 and exec_path(
            argv[3].removeprefix("--save="), "sweep", f"{name}.model"
        )
        # The "model" entry is not a metric: only accuracy reaches the report.
        metrics = json.loads(ws.bin(f"tpl/sweep/{name}__eval.metrics.json").read_text())
        assert (
            metrics
            == trial["metrics"]
            == {"accuracy": pytest.approx(accuracy(model["weight"]))}
        )
        written = json.loads(
            ws.bin(f"tpl/sweep/{name}__eval.outputs/metrics.json").read_text()
        )
        assert set(written) == {"accuracy", "model"}
        assert exec_path(written["model"], "sweep", f"{name}.model")
    ranked = [t["metrics"]["accuracy"] for t in report["trials"]]
    assert ranked == sorted(ranked, reverse=True)
    assert report["best"]["name"] == report["trials"][0]["name"]
    assert "model" not in ws.bin("tpl/sweep/sweep.csv").read_text().splitlines()[0]


def test_a_dvc_style_model_and_evaluation(ws: Workspace) -> None:
    write_package(ws, "dvc", scripts="dvc")
    ws.build("//tpl/dvc:eval", flags=SANDBOXED)
    center = 0.9 * sum(rows(TRAIN_ROWS)[:50]) / 50
    assert json.loads(ws.bin("tpl/dvc/model.model").read_text()) == {
        "center": pytest.approx(center)
    }
    test = rows(TEST_ROWS)
    metrics = json.loads(ws.bin("tpl/dvc/eval.metrics.json").read_text())
    assert metrics == {
        "mse": pytest.approx(sum((x - center) ** 2 for x in test) / len(test))
    }


RANDOM_BUILD = """
load("@databazel//databazel:defs.bzl", "hyperparam_search", "randint", "uniform")

hyperparam_search(
    name = "r",
    strategy = "random",
    num_trials = 3,
    seed = 7,
    search_space = {"n_rows": randint(5, 60), "shrink": uniform(0.5, 1.0), "tag": ["a b", "$(x) {data}"]},
    train_executable = "train.py",
    train_args = ["{data}", "{model_output_path}", "{hp.n_rows}", "{hp.shrink}"],
    training_data = "train.txt",
    eval_executable = "evaluate.py",
    eval_args = ["{model_path}", "{data_path}", "{output_dir}"],
    test_data = "test.txt",
    metric = "mse",
    mode = "min",
)
"""


def test_a_random_search_with_a_placeholder_for_every_hyperparameter(
    ws: Workspace,
) -> None:
    # `tag` reaches no argument: the load-time check says so...
    write_package(ws, "random", RANDOM_BUILD, scripts="dvc")
    result = ws.bazel("query", "//tpl/random:all")
    assert result.returncode != 0
    assert (
        "//tpl/random:r: `train_args` gives the script neither `{hyperparams}` nor "
        '`{hp.tag}`, so the trials would differ in their names only; add an argument such as "--tag={hp.tag}"'
    ) in result.stderr, result.stderr[-3000:]

    # ... and with it (a DVC-style script takes its own positional arguments;
    # this one ignores a fifth), every value reaches the script verbatim.
    build = RANDOM_BUILD.replace('"{hp.shrink}"]', '"{hp.shrink}", "{hp.tag}"]')
    ws.write(
        "tpl/random/train.py",
        DOC["dvc/train.py"]
        .replace("sys.argv[1:]", "sys.argv[1:5]")
        .replace('{"center"', '{"argv": sys.argv[1:], "center"'),
    )
    ws.write("tpl/random/BUILD", build)
    result = ws.build("//tpl/random:r", flags=SANDBOXED)
    assert result.executed("DatabazelTrain") == 3
    report = json.loads(ws.bin("tpl/random/r.json").read_text())
    assert len({t["hyperparams"]["n_rows"] for t in report["trials"]}) > 1
    test = rows(TEST_ROWS)
    for trial in report["trials"]:
        hp = trial["hyperparams"]
        model = json.loads(ws.bin(f"tpl/random/{trial['name']}.model").read_text())
        assert model["argv"][0] == "tpl/random/train.txt"
        assert exec_path(model["argv"][1], "random", f"{trial['name']}.model")
        assert model["argv"][2:] == [hp["n_rows"], hp["shrink"], hp["tag"]]
        n = int(hp["n_rows"])
        center = float(hp["shrink"]) * sum(rows(TRAIN_ROWS)[:n]) / n
        assert model["center"] == pytest.approx(center)
        mse = sum((x - center) ** 2 for x in test) / len(test)
        assert trial["metrics"] == {"mse": pytest.approx(mse)}


def sweep_args(*extra: str) -> str:
    return json.dumps(
        [
            "--lr={hp.lr}",
            "--batch-size={hp.batch_size}",
            "--train-file={data}",
            "--save={model_output_path}",
            *extra,
        ]
    )


EVAL_2019_ARGS = json.dumps(
    [
        "--model-path",
        "{model_path}",
        "--data-path",
        "{data_path}",
        "--output-file",
        "{metrics_file}",
    ]
)
RESUME = ("--epoch={epoch}", "--resume-from", "{init_model_path}")

COMMON = f"""\
    train_executable = "train.py",
    training_data = "train.txt",
    eval_executable = "evaluate.py",
    eval_args = {EVAL_2019_ARGS},
    ignore_metrics = ["model"],
    test_data = "test.txt",
    metric = "accuracy",
"""

EPOCHS_BUILD = f"""
load("@databazel//databazel:defs.bzl", "evaluate", "hyperparam_search", "model", "successive_halving")

hyperparam_search(
    name = "e",
    epochs = 3,
    learning_curve = True,
    grid = {{"lr": ["0.1", "0.5"], "batch_size": ["16"]}},
    train_args = {sweep_args(*RESUME)},
{COMMON})

hyperparam_search(
    name = "axis",
    grid = {{"lr": ["0.5"], "batch_size": ["16"], "epochs": ["1", "2"]}},
    train_args = {sweep_args(*RESUME)},
{COMMON})

hyperparam_search(
    name = "halving",
    early_stopping = successive_halving(max_epochs = 3, min_epochs = 1, eta = 3),
    grid = {{"lr": ["0.05", "0.2", "0.6"], "batch_size": ["16"]}},
    # One argument: left out in epoch 1 too.
    train_args = {sweep_args("--epoch={epoch}", "--resume-from={init_model_path}")},
{COMMON})

model(
    name = "m",
    epochs = 2,
    hyperparams = {{"lr": "0.5", "batch_size": "16"}},
    args = {sweep_args(*RESUME)},
    train_executable = "train.py",
    training_data = "train.txt",
)

evaluate(
    name = "m_eval",
    model = ":m",
    eval_executable = "evaluate.py",
    args = {EVAL_2019_ARGS},
    ignore_metrics = ["model"],
    test_data = "test.txt",
)
"""


def argv_of(ws: Workspace, path: str) -> list[str]:
    return json.loads(ws.bin(path).read_text())["argv"]


def test_training_in_epochs_resumes_through_the_template(ws: Workspace) -> None:
    write_package(ws, "epochs", EPOCHS_BUILD)
    result = ws.build(
        "//tpl/epochs:e",
        "//tpl/epochs:axis",
        "//tpl/epochs:halving",
        "//tpl/epochs:m_eval",
        flags=SANDBOXED,
    )
    # e: 2 trials x 3 epochs; axis: one chain of 2; halving: 3 trials, then
    # the best for epochs 2 and 3 (the others' are stop records); m: 2.
    assert result.executed("DatabazelTrain") == 6 + 2 + 9 + 2

    trial = "e__lr-0.5__batch_size-16"
    first = argv_of(ws, f"tpl/epochs/{trial}.epoch-1.model")
    assert first[-1] == "--epoch=1" and "--resume-from" not in first
    for epoch in (2, 3):
        argv = argv_of(ws, f"tpl/epochs/{trial}.epoch-{epoch}.model")
        assert argv[-3:-1] == [f"--epoch={epoch}", "--resume-from"]
        assert exec_path(argv[-1], "epochs", f"{trial}.epoch-{epoch - 1}.model")
    assert json.loads(ws.bin(f"tpl/epochs/{trial}.epoch-3.model").read_text())[
        "epochs"
    ] == [1, 2, 3]
    report = json.loads(ws.bin("tpl/epochs/e.json").read_text())
    curve = next(t for t in report["trials"] if t["name"] == trial)["learning_curve"]
    assert [set(c["metrics"]) for c in curve] == [{"accuracy"}] * 3

    axis = json.loads(ws.bin("tpl/epochs/axis.json").read_text())
    assert sorted(t["hyperparams"]["epochs"] for t in axis["trials"]) == ["1", "2"]
    chain = "axis__lr-0.5__batch_size-16__chain"
    assert json.loads(ws.bin(f"tpl/epochs/{chain}.epoch-2.model").read_text())[
        "epochs"
    ] == [1, 2]

    halving = json.loads(ws.bin("tpl/epochs/halving.json").read_text())
    best = halving["best"]["name"]
    assert argv_of(ws, f"tpl/epochs/{best}.epoch-1.model")[-1] == "--epoch=1"
    last = argv_of(ws, f"tpl/epochs/{best}.epoch-3.model")
    assert last[-2] == "--epoch=3"
    assert exec_path(
        last[-1].removeprefix("--resume-from="), "epochs", f"{best}.epoch-2.model"
    )
    assert all(set(t["metrics"]) == {"accuracy"} for t in halving["trials"])

    assert json.loads(ws.bin("tpl/epochs/m.epoch-2.model").read_text())["epochs"] == [
        1,
        2,
    ]
    assert set(
        json.loads(ws.bin("tpl/epochs/m_eval.epoch-2.metrics.json").read_text())
    ) == {"accuracy"}


CHANGE_BUILD = """
load("@databazel//databazel:defs.bzl", "hyperparam_search")

[hyperparam_search(
    name = name,
    grid = {{"lr": ["0.1", "0.5"], "batch_size": ["8"]}},
    train_executable = "train.py",
    train_args = {a_train} if name == "a" else {train},
    training_data = "train.txt",
    eval_executable = "evaluate.py",
    eval_args = {a_eval} if name == "a" else {eval},
    ignore_metrics = ["model"],
    test_data = "test.txt",
    metric = "accuracy",
) for name in ["a", "b"]]
"""

# The same arguments in another order: another template, the same meaning.
TRAIN_REORDERED = json.dumps(
    [
        "--batch-size={hp.batch_size}",
        "--lr={hp.lr}",
        "--train-file={data}",
        "--save={model_output_path}",
    ]
)
EVAL_REORDERED = json.dumps(
    [
        "--data-path",
        "{data_path}",
        "--model-path",
        "{model_path}",
        "--output-file",
        "{metrics_file}",
    ]
)


def test_a_template_change_reruns_exactly_the_trials_that_use_it(ws: Workspace) -> None:
    train, evaluation = sweep_args(), EVAL_2019_ARGS
    write_package(
        ws,
        "change",
        CHANGE_BUILD.format(
            a_train=train, train=train, a_eval=evaluation, eval=evaluation
        ),
    )
    first = ws.build("//tpl/change:all", flags=SANDBOXED)
    assert first.executed("DatabazelTrain") == 4
    a_trials = [
        "//tpl/change:a__lr-0.1__batch_size-8",
        "//tpl/change:a__lr-0.5__batch_size-8",
    ]
    before = {p: ws.bin(f"tpl/change/{p}").read_bytes() for p in ("a.json", "b.json")}

    # a's evaluation template: a's two evaluations, nothing else (their
    # metrics are the same, so the report stays cached too).
    ws.write(
        "tpl/change/BUILD",
        CHANGE_BUILD.format(
            a_train=train, train=train, a_eval=EVAL_REORDERED, eval=evaluation
        ),
    )
    result = ws.build("//tpl/change:all", flags=SANDBOXED)
    assert result.executed_by_mnemonic() == {"DatabazelEvaluate": 2}, (
        result.executed_by_mnemonic()
    )
    assert spawn_targets(result, "DatabazelEvaluate") == [
        t + "__eval" for t in a_trials
    ]

    # a's training template: a's models (which record their command line),
    # so their evaluations and a's report (it copies the best model); b's
    # stay cached.
    ws.write(
        "tpl/change/BUILD",
        CHANGE_BUILD.format(
            a_train=TRAIN_REORDERED, train=train, a_eval=EVAL_REORDERED, eval=evaluation
        ),
    )
    result = ws.build("//tpl/change:all", flags=SANDBOXED)
    assert result.executed_by_mnemonic() == {
        "DatabazelTrain": 2,
        "DatabazelEvaluate": 2,
        "DatabazelReport": 1,
    }, result.executed_by_mnemonic()
    assert spawn_targets(result, "DatabazelTrain") == a_trials
    assert spawn_targets(result, "DatabazelEvaluate") == [
        t + "__eval" for t in a_trials
    ]
    assert [
        s["progressMessage"]
        for s in result.spawns
        if s.get("mnemonic") == "DatabazelReport"
    ] == ["Ranking 2 trials of //tpl/change:a by accuracy (max)"]
    assert (
        argv_of(ws, "tpl/change/a__lr-0.5__batch_size-8.model")[0] == "--batch-size=8"
    )
    assert ws.bin("tpl/change/b.json").read_bytes() == before["b.json"]
    assert ws.build("//tpl/change:all", flags=SANDBOXED).executed() == 0


def test_warm_and_sandboxed_templated_trials_are_byte_identical(ws: Workspace) -> None:
    write_package(ws, "sweep")
    write_package(ws, "dvc", scripts="dvc")
    write_package(ws, "epochs", EPOCHS_BUILD)
    targets = ("//tpl/sweep:sweep", "//tpl/dvc:eval", "//tpl/epochs:m_eval")
    outputs = [
        *(
            f"tpl/sweep/sweep__lr-{lr}__batch_size-{b}{s}"
            for lr in ("0.1", "0.5")
            for b in ("8", "32")
            for s in (".model", "__eval.metrics.json")
        ),
        "tpl/sweep/sweep.json",
        "tpl/dvc/model.model",
        "tpl/dvc/eval.metrics.json",
        "tpl/epochs/m.epoch-1.model",
        "tpl/epochs/m.epoch-2.model",
        "tpl/epochs/m_eval.epoch-2.metrics.json",
    ]
    ws.build(*targets, flags=SANDBOXED)
    sandboxed = {p: ws.bin(p).read_bytes() for p in outputs}
    warm = ws.build(*targets, flags=WARM)
    ran = [
        s
        for s in warm.spawns
        if s.get("mnemonic") in ("DatabazelTrain", "DatabazelEvaluate")
    ]
    assert len(ran) == 4 + 4 + 2 + 2 + 1
    assert {s.get("runner") for s in ran} == {"worker"}
    assert {p: ws.bin(p).read_bytes() for p in outputs} == sandboxed


# --- load-time errors ----------------------------------------------------------

GOOD_SEARCH = {
    "grid": '{"lr": ["0.1"], "batch_size": ["8"]}',
    "metric": '"accuracy"',
    "train_executable": '"train.py"',
    "training_data": '"train.txt"',
    "eval_executable": '"evaluate.py"',
    "test_data": '"test.txt"',
    "train_args": sweep_args(),
    "eval_args": EVAL_2019_ARGS,
    "ignore_metrics": '["model"]',
}

# (arguments replacing those of a good search, the message after `//tpl/bad_N:s: `).
BAD_SEARCHES = [
    (
        {
            "train_args": '["--lr={learning_rate}", "{model_output_path}", "{hyperparams}"]'
        },
        '`train_args` entry "--lr={learning_rate}" has the unknown placeholder `{learning_rate}`; '
        "a training script's placeholders are `{data}`, `{model_output_path}`, `{hyperparams}`, "
        "`{epoch}`, `{init_model_path}`, `{hp.NAME}` (write `{{` and `}}` for literal braces)",
    ),
    (
        {"train_args": sweep_args("--momentum={hp.momentum}")},
        '`train_args` entry "--momentum={hp.momentum}" uses `{hp.momentum}`, but there is no '
        "hyperparameter `momentum` (the hyperparameters are: batch_size, lr)",
    ),
    (
        {"train_args": '["--lr={hp.lr}", "--batch-size={hp.batch_size}"]'},
        "`train_args` has no `{model_output_path}`: only through it is the script told where "
        'to write the model (such as "--output={model_output_path}")',
    ),
    (
        {"eval_args": '["{model_path}", "{data_path}"]'},
        "`eval_args` has neither `{metrics_file}` nor `{output_dir}`: only through one of them "
        'is the script told where to write its metrics (such as "--output-file={metrics_file}")',
    ),
    (
        {"epochs": "2", "train_args": sweep_args("--resume-from={init_model_path}")},
        "`train_args` has no `{epoch}`, but the model trains in epochs, one action each",
    ),
    (
        {"epochs": "2", "train_args": sweep_args("--epoch={epoch}")},
        "`train_args` has no `{init_model_path}`, but the model trains in epochs",
    ),
    (
        {
            "early_stopping": "successive_halving(max_epochs = 3)",
            "train_args": sweep_args(),
        },
        "`train_args` has no `{epoch}`, but the model trains in epochs",
    ),
    (
        {"train_args": sweep_args("--epoch={epoch}")},
        '`train_args` entry "--epoch={epoch}" uses `{epoch}`, which only a model trained in epochs (`epochs = N`) has',
    ),
    (
        {"train_args": sweep_args("--lr={hp.lr")},
        '`train_args` entry "--lr={hp.lr" has a `{` with no closing `}` (write `{{` for a literal `{`)',
    ),
    (
        {"eval_args": '["--json={{}", "{metrics_file}"]'},
        '`eval_args` entry "--json={{}" has a `}` with no opening `{` (write `}}` for a literal `}`)',
    ),
    (
        {"eval_args": '["{model_path}", "{data}", "{metrics_file}"]'},
        '`eval_args` entry "{data}" has the unknown placeholder `{data}` (did you mean `{data_path}`?)',
    ),
    (
        {"train_args": '["--lr={hp.lr}", "{model_output_path}"]'},
        "`train_args` gives the script neither `{hyperparams}` nor `{hp.batch_size}`",
    ),
    (
        {
            "grid": '{"lr": ["0.1"], "batch_size": ["8"], "epochs": ["1", "2"]}',
            "train_args": sweep_args("--epoch={hp.epochs}", "{init_model_path}"),
        },
        '`train_args` entry "--epoch={hp.epochs}" uses `{hp.epochs}`, but the number of epochs is not '
        "a hyperparameter the script gets: use `{epoch}`, the epoch an action trains",
    ),
    (
        {
            "grid": None,
            "strategy": '"tpe"',
            "num_rounds": "2",
            "trials_per_round": "1",
            "search_space": '{"lr": ["0.1", "1"]}',
            "suggest_deps": '["//lib:fixturelib"]',
        },
        '`train_args` entry "--batch-size={hp.batch_size}" uses `{hp.batch_size}`, but there is no '
        "hyperparameter `batch_size` (the hyperparameters are: lr)",
    ),
    (
        {"ignore_metrics": '["model", "accuracy"]'},
        '`ignore_metrics` lists "accuracy", the `metric` the report ranks by',
    ),
    (
        {"train_args": '"--lr={hp.lr}"'},
        '`train_args` must be a list of strings, got "--lr={hp.lr}"',
    ),
]


def search_build(changes: dict[str, str | None]) -> str:
    arguments = {**GOOD_SEARCH, **changes}
    lines = "".join(f"    {k} = {v},\n" for k, v in arguments.items() if v is not None)
    return (
        'load("@databazel//databazel:defs.bzl", "hyperparam_search", "successive_halving")\n'
        f'\nhyperparam_search(\n    name = "s",\n{lines})\n'
    )


def test_template_mistakes_in_a_search_fail_at_load_time(ws: Workspace) -> None:
    for i, (changes, _message) in enumerate(BAD_SEARCHES):
        ws.write(f"tpl/bad_{i}/BUILD", search_build(changes))
    ws.write("tpl/good/BUILD", search_build({}))
    patterns = " + ".join(f"//tpl/bad_{i}:all" for i in range(len(BAD_SEARCHES)))
    result = ws.bazel("query", "--keep_going", f"{patterns} + //tpl/good:all")
    assert result.returncode != 0
    for i, (_changes, message) in enumerate(BAD_SEARCHES):
        assert f"//tpl/bad_{i}:s: {message}" in result.stderr, (
            i,
            message,
            result.stderr[-5000:],
        )
    assert "//tpl/good:s__lr-0.1__batch_size-8" in result.stdout


RULE_ERRORS_BUILD = """
load("@databazel//databazel:defs.bzl", "evaluate", "model")

[model(
    name = name,
    train_executable = "train.py",
    training_data = "train.txt",
    hyperparams = {"lr": "0.1"},
    epochs = epochs,
    args = args,
) for name, args, epochs in [
    ("unknown", ["{bogus}", "{model_output_path}"], 0),
    ("no_hp", ["--momentum={hp.momentum}", "{model_output_path}"], 0),
    ("no_output", ["--lr={hp.lr}"], 0),
    ("no_epoch", ["{model_output_path}", "{init_model_path}"], 2),
    ("epoch_without_epochs", ["{model_output_path}", "{epoch}"], 0),
    ("unbalanced", ["{model_output_path", "x"], 0),
    ("good", ["{model_output_path}"], 0),
]]

[evaluate(
    name = name,
    model = ":good",
    eval_executable = "evaluate.py",
    test_data = "test.txt",
    args = args,
    ignore_metrics = ignore,
) for name, args, ignore in [
    ("eval_no_metrics", ["{model_path}"], []),
    ("eval_unknown", ["{model_output_path}", "{metrics_file}"], []),
    ("eval_ignore_twice", ["{metrics_file}"], ["model", "model"]),
]]
"""

RULE_ERRORS = {
    "unknown": '`args` entry "{bogus}" has the unknown placeholder `{bogus}`; a training script\'s placeholders are',
    "no_hp": '`args` entry "--momentum={hp.momentum}" uses `{hp.momentum}`, but there is no hyperparameter `momentum` (the hyperparameters are: lr)',
    "no_output": "`args` has no `{model_output_path}`",
    "no_epoch": "`args` has no `{epoch}`, but the model trains in epochs",
    "epoch_without_epochs": '`args` entry "{epoch}" uses `{epoch}`, which only a model trained in epochs (`epochs = N`) has',
    "unbalanced": '`args` entry "{model_output_path" has a `{` with no closing `}`',
    "eval_no_metrics": "`args` has neither `{metrics_file}` nor `{output_dir}`",
    "eval_unknown": '`args` entry "{model_output_path}" has the unknown placeholder `{model_output_path}` (did you mean `{model_path}`?)',
    "eval_ignore_twice": '`ignore_metrics` lists "model" twice',
}


def test_template_mistakes_in_model_and_evaluate_fail_at_analysis(
    ws: Workspace,
) -> None:
    write_package(ws, "rules", RULE_ERRORS_BUILD)
    result = ws.bazel("build", "--nobuild", "--keep_going", "//tpl/rules:all")
    assert result.returncode != 0
    for name, message in RULE_ERRORS.items():
        assert f"Error in fail: //tpl/rules:{name}: {message}" in result.stderr, (
            name,
            result.stderr[-6000:],
        )
    assert "//tpl/rules:good:" not in result.stderr
