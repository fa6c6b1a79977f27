"""End-to-end tests of hostile inputs, round two (issue 18): source directories as
data, outputs that are not regular files, an `env` aimed at the runner, inputs
that used to crash Bazel or the runner, a cache that requires credentials, and
what the sandbox lets a trial reach. One package per scenario, on the shared
fixture workspace."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from bazel_harness import Workspace

LOAD = 'load("@databazel//databazel:defs.bzl", "evaluate", "model")\n'

# A training script of the standard library only that does what the
# environment variable BEHAVIOUR asks. It never imports `json` (a test shadows it).
TRAIN = """
import argparse, os, signal, sys, time
p = argparse.ArgumentParser()
p.add_argument("--data")
p.add_argument("--model-output-path")
p.add_argument("--hyperparams")
a = p.parse_args()
out = a.model_output_path
behaviour = os.environ.get("BEHAVIOUR", "ok")
if behaviour == "link_host":
    os.symlink("/etc/passwd", out)
elif behaviour == "link_source":
    os.symlink(os.path.realpath(a.data), out)
elif behaviour == "dangling":
    os.symlink("/nonexistent/model", out)
elif behaviour == "fifo":
    os.mkfifo(out)
elif behaviour == "kill_parent":
    os.kill(os.getppid(), signal.SIGKILL)
    time.sleep(30)
else:
    if os.path.isfile(a.data):
        with open(a.data, encoding="utf-8") as f:
            data = f.read()
    else:
        data = sorted(os.listdir(a.data))
    with open(out, "w", encoding="utf-8") as f:
        f.write(repr({"data": data, "PYTHONPATH": os.environ.get("PYTHONPATH")}))
"""

# An evaluation script of the standard library only, steered by BEHAVIOUR.
EVALUATE = """
import argparse, os, socket, sys
p = argparse.ArgumentParser()
p.add_argument("--model-path")
p.add_argument("--data-path")
p.add_argument("--output-dir")
a = p.parse_args()
behaviour = os.environ.get("BEHAVIOUR", "ok")
metrics = os.path.join(a.output_dir, "metrics.json")
texts = {
    "huge_int": '{"n": ' + "9" * 5000 + "}",
    "big_int": '{"n": 1' + "0" * 400 + "}",
    "deep": '{"n": ' + "[" * 100000 + "]" * 100000 + "}",
}
if behaviour == "fifo_metrics":
    os.mkfifo(metrics)
else:
    with open(metrics, "w", encoding="utf-8") as f:
        f.write(texts.get(behaviour, '{"accuracy": 0.5}'))
if behaviour == "fifo":
    os.makedirs(os.path.join(a.output_dir, "plots"))
    os.mkfifo(os.path.join(a.output_dir, "plots", "pipe"))
elif behaviour == "socket":
    socket.socket(socket.AF_UNIX).bind(os.path.join(a.output_dir, "sock"))
elif behaviour == "link":
    os.symlink("/etc/passwd", os.path.join(a.output_dir, "passwd"))
elif behaviour == "exit5":
    sys.exit("evaluation exploded")
"""


def scenario(ws: Workspace, package: str, build: str) -> None:
    """A package with the two scripts, a data file and BUILD."""
    ws.write(f"{package}/train.py", TRAIN)
    ws.write(f"{package}/evaluate.py", EVALUATE)
    ws.write(f"{package}/data.txt", "x\n")
    ws.write(f"{package}/BUILD", LOAD + build)


def model_rule(name: str, **attrs: str) -> str:
    """A `model` on the package's train.py; attrs are Starlark expressions."""
    lines = "".join(f"    {k} = {v},\n" for k, v in attrs.items())
    return (
        f'model(\n    name = "{name}",\n    train_executable = "train.py",\n{lines})\n'
    )


def evaluate_rule(name: str, behaviour: str, model: str = ":m") -> str:
    return f"""
evaluate(
    name = "{name}",
    env = {{"BEHAVIOUR": "{behaviour}"}},
    eval_executable = "evaluate.py",
    model = "{model}",
    test_data = "data.txt",
)
"""


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "databazel: error:" in line]


# --- 1. a source directory as data ----------------------------------------------


def test_a_source_directory_as_data_is_rejected_and_a_glob_rebuilds(
    ws: Workspace,
) -> None:
    scenario(
        ws,
        "srcdir",
        model_rule("direct", training_data='"datadir"')
        + 'filegroup(name = "dir_group", srcs = ["datadir"])\n'
        + model_rule("grouped", training_data='":dir_group"')
        + model_rule("globbed", training_data='":files"')
        + 'filegroup(name = "files", srcs = glob(["datadir/**"]))\n',
    )
    ws.write("srcdir/datadir/a.txt", "a\n")
    result = ws.build(
        "//srcdir:direct", "//srcdir:grouped", check=False, flags=("--keep_going",)
    )
    assert result.returncode != 0
    for name in ("direct", "grouped"):
        (line,) = [e for e in errors(result.stderr) if f"//srcdir:{name}:" in e]
        assert (
            "`training_data` includes srcdir/datadir, a directory of the source tree"
            in line
        )
        assert 'glob(["datadir/**"])' in line
        assert not ws.bin(f"srcdir/{name}.model").exists()

    # The fix the message gives tracks every file: adding one re-trains.
    assert ws.build("//srcdir:globbed").executed("DatabazelTrain") == 1
    ws.write("srcdir/datadir/b.txt", "b\n")
    assert ws.build("//srcdir:globbed").executed("DatabazelTrain") == 1
    assert "b.txt" in ws.bin("srcdir/globbed.model").read_text()


# --- 2. FIFOs and sockets among the outputs ----------------------------------------


def test_fifos_and_sockets_in_outputs_fail_fast_and_leave_nothing(
    ws: Workspace,
) -> None:
    cases = {
        "fifo": "plots/pipe: a FIFO (named pipe)",
        "fifo_metrics": "metrics.json: a FIFO (named pipe)",
        "socket": "sock: a Unix socket",
    }
    scenario(
        ws,
        "fifo",
        model_rule("m", training_data='"data.txt"')
        + model_rule(
            "fifo_model", training_data='"data.txt"', env='{"BEHAVIOUR": "fifo"}'
        )
        + "".join(evaluate_rule(f"e_{case}", case) for case in cases),
    )
    start = time.monotonic()
    result = ws.bazel(
        "build",
        "--keep_going",
        "//fifo:all",
        timeout=120,  # before the fix this build never ended
    )
    elapsed = time.monotonic() - start
    assert result.returncode != 0
    assert elapsed < 60, elapsed
    for case, what in cases.items():
        (line,) = [e for e in errors(result.stderr) if f"//fifo:e_{case}:" in e]
        assert (
            f"left 1 entry in bazel-out/k8-fastbuild/bin/fifo/e_{case}.outputs" in line
        )
        assert what in line
        assert not ws.bin(f"fifo/e_{case}.metrics.json").exists()
        leftovers = [
            p
            for p in ws.bin(f"fifo/e_{case}.outputs").rglob("*")
            if not p.is_file() and not p.is_dir()
        ]
        assert leftovers == []
    (line,) = [e for e in errors(result.stderr) if "//fifo:fifo_model:" in e]
    assert "wrote a FIFO (named pipe) at" in line
    assert not ws.bin("fifo/fifo_model.model").exists()
    assert not ws.bin("fifo/fifo_model.model").is_symlink()


# --- 4. symbolic links as outputs ------------------------------------------------


def test_symlinked_outputs_are_rejected(ws: Workspace, tmp_path: Path) -> None:
    cases = {
        "link_host": "wrote a symbolic link (to /etc/passwd) at",
        "link_source": "wrote a symbolic link (to ",
        "dangling": "wrote a symbolic link (to /nonexistent/model, which does not exist) at",
    }
    scenario(
        ws,
        "symlinks",
        model_rule("m", training_data='"data.txt"')
        + "".join(
            model_rule(
                case, training_data='"data.txt"', env=f'{{"BEHAVIOUR": "{case}"}}'
            )
            + evaluate_rule(f"{case}_eval", "ok", model=f":{case}")
            for case in cases
        )
        + evaluate_rule("link_eval", "link"),
    )
    disk_cache = f"--disk_cache={tmp_path / 'disk_cache'}"
    result = ws.build("//symlinks:all", check=False, flags=("--keep_going", disk_cache))
    assert result.returncode != 0
    for case, message in cases.items():
        (line,) = [e for e in errors(result.stderr) if f"//symlinks:{case}:" in e]
        assert message in line, line
        assert "where a model file was expected; write the file itself" in line
        model = ws.bin(f"symlinks/{case}.model")
        assert not model.exists() and not model.is_symlink()
        metrics = ws.bin(f"symlinks/{case}_eval.metrics.json")
        assert not metrics.exists() and not metrics.is_symlink()
    (line,) = [e for e in errors(result.stderr) if "//symlinks:link_eval:" in e]
    assert "passwd: a symbolic link (to /etc/passwd)" in line
    assert not ws.bin("symlinks/link_eval.outputs/passwd").is_symlink()
    # Nothing of the host got into the cache: after a clean, the same failures.
    ws.bazel("clean", check=True)
    again = ws.build("//symlinks:link_host", check=False, flags=(disk_cache,))
    assert again.returncode != 0
    assert "wrote a symbolic link (to /etc/passwd)" in again.stderr


# --- 5. the target's env and the runner ---------------------------------------------


def test_the_targets_env_reaches_the_script_but_not_the_runner(ws: Workspace) -> None:
    shadow = ws.root / "envshadow" / "shadow"
    scenario(
        ws,
        "envshadow",
        model_rule(
            "pythonpath",
            training_data='"data.txt"',
            env=f'{{"PYTHONPATH": "{shadow}"}}',
        )
        + model_rule(
            "pythonhome",
            training_data='"data.txt"',
            env='{"PYTHONHOME": "/nonexistent"}',
        ),
    )
    # A module shadowing the standard library's json, which the runner imports.
    ws.write("envshadow/shadow/json.py", 'raise SystemExit("shadowed json imported")\n')
    ws.build("//envshadow:pythonpath")
    # The script gets it (after its own directory, which the runner puts first).
    model = ws.bin("envshadow/pythonpath.model").read_text()
    assert f"/execroot/fixture/envshadow:{shadow}'" in model, model

    # PYTHONHOME breaks a Python script started with it, but the runner stays
    # up and reports that as the script's failure.
    result = ws.build("//envshadow:pythonhome", check=False)
    assert result.returncode != 0
    (line,) = errors(result.stderr)
    assert (
        "//envshadow:pythonhome: train script envshadow/train.py exited with code 1"
        in line
    )
    assert "Fatal Python error" in result.stderr


# --- 6. what used to crash, or to give a traceback -------------------------------------

BAD_DECLARATIONS = [
    (
        model_rule("m", training_data='"data.txt"', env='{"X": "a\\0b"}'),
        "`env` value of X contains a NUL byte",
    ),
    (
        model_rule("m", training_data='"data.txt"', hyperparams='{"x": "a\\0b"}'),
        "hyperparameter x contains a NUL byte",
    ),
    (
        model_rule("m", training_data='"data.txt"', model='"../x.pkl"'),
        '`model` "../x.pkl" has an empty, `.` or `..` component',
    ),
    (
        model_rule("m", training_data='"data.txt"', model='"/tmp/x.pkl"'),
        '`model` "/tmp/x.pkl" is an absolute path',
    ),
    (
        model_rule("m", training_data='"data.txt"', model='"m.hyperparams.json"'),
        '`model` "m.hyperparams.json" ends with `.hyperparams.json`',
    ),
    (
        model_rule(
            "m", training_data='"data.txt"', hyperparams='{"big": "x" * 140000}'
        ),
        "the hyperparameters take 140010 bytes as the JSON of --hyperparams, over "
        "Linux's limit of 131072 bytes for one command-line argument (MAX_ARG_STRLEN); "
        "the longest is big (140000 bytes)",
    ),
]


@pytest.mark.parametrize(
    ("build", "message"), BAD_DECLARATIONS, ids=[m[:30] for _, m in BAD_DECLARATIONS]
)
def test_declarations_that_crashed_fail_at_analysis_naming_the_target(
    ws: Workspace, build: str, message: str
) -> None:
    scenario(ws, "crashes", build)
    server = ws.server_pid()
    result = ws.build("//crashes:m", check=False)
    assert result.returncode == 1, result.stderr[-2000:]  # not 37: the server lives
    assert result.executed("DatabazelTrain") == 0
    assert f"Error in fail: //crashes:m: {message}" in result.stderr, result.stderr[
        -2000:
    ]
    assert server is None or ws.server_pid() == server


def test_two_models_naming_one_file_is_bazels_conflict_naming_both(
    ws: Workspace,
) -> None:
    scenario(
        ws,
        "samefile",
        model_rule("a", training_data='"data.txt"', model='"same.pkl"')
        + model_rule("b", training_data='"data.txt"', model='"same.pkl"'),
    )
    result = ws.build("//samefile:all", check=False)
    assert result.returncode != 0
    assert (
        "for samefile/same.pkl, previous action: action 'Training //samefile:a', "
        "attempted action: action 'Training //samefile:b'" in result.stderr
    ), result.stderr[-3000:]


METRICS = {
    "huge_int": "not valid JSON: Exceeds the limit (4300 digits) for integer string conversion",
    "big_int": 'metric "n" is an integer of 401 digits, too large for a floating-point number',
    "deep": "not valid JSON: nested too deeply",
}


def test_hostile_metrics_and_a_killed_runner_give_named_errors(ws: Workspace) -> None:
    scenario(
        ws,
        "badmetrics",
        model_rule("m", training_data='"data.txt"')
        + "".join(evaluate_rule(case, case) for case in METRICS)
        + evaluate_rule("exploded", "exit5")
        + model_rule(
            "killer", training_data='"data.txt"', env='{"BEHAVIOUR": "kill_parent"}'
        ),
    )
    result = ws.build("//badmetrics:all", check=False, flags=("--keep_going",))
    assert result.returncode != 0
    assert "internal error" not in result.stderr
    for case, message in METRICS.items():
        (line,) = [e for e in errors(result.stderr) if f"//badmetrics:{case}:" in e]
        assert message in line
        assert not ws.bin(f"badmetrics/{case}.metrics.json").exists()
    (line,) = [e for e in errors(result.stderr) if "//badmetrics:killer:" in e]
    assert (
        "the databazel runner was killed by signal SIGKILL while it ran the train script"
        in line
    )
    assert not ws.bin("badmetrics/killer.model").exists()
    # Bazel's own line for a failed evaluation names the evaluate target.
    assert (
        "Evaluating //badmetrics:exploded: model //badmetrics:m failed" in result.stderr
    )
