"""A Bazel stack as users have it: rules_python 0.9.0's packages, and its toolchain.

One workspace (one Bazel server) for the module, built by
tests/rules_python_workspace.py: rules_python 0.9.0 from shared/third_party,
`pip_parse(name = "pypi")` over this checkout's requirements_lock.txt plus
small wheels the test builds (`alpha`, `beta` requiring alpha, `gamma`), and
databazel's python_env (`@databazel_python`, scikit-learn and its
dependencies) for the interpreter, or, in the tests that say so, a
`py_runtime_pair` of rules_python over the host interpreter. pip_parse fetches
each package once for the module.

The trials are the MNIST example's scripts (scikit-learn on the bundled
digits) and scripts that import the test wheels.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import rules_python_workspace as rpw
from bazel_harness import REPO, SANDBOXED, Probe, Workspace
from wheels import make_wheel

# Warm workers are the default; one of them, for the trials in a row.
WARM = ("--worker_max_instances=1", "--jobs=1")

# A test wheel's module: its version, and (when the trial's environment names
# a log and the test's probe, which a trial with `network = True` reaches)
# who imported it.
PACKAGE = """\
import os, socket

VERSION = "{version}"
if os.environ.get("IMPORT_LOG") and os.environ.get("DATABAZEL_PROBE"):
    host, port = os.environ["DATABAZEL_PROBE"].rsplit(":", 1)
    with socket.create_connection((host, int(port))) as s:
        s.sendall(("append\\t%s\\t{name} %d\\n" % (os.environ["IMPORT_LOG"], os.getpid())).encode())
        s.shutdown(socket.SHUT_WR)
        s.recv(16)
"""

TRAIN = """\
import argparse, importlib, json

parser = argparse.ArgumentParser()
for flag in ("--data", "--model-output-path", "--hyperparams"):
    parser.add_argument(flag)
args = parser.parse_args()
params = json.loads(args.hyperparams)
used = {n: importlib.import_module(n).VERSION for n in params["packages"].split()}
with open(args.model_output_path, "w") as f:
    json.dump({"used": used, "trial": params["trial"]}, f, sort_keys=True)
"""

LOAD_PYPI = 'load("@pypi//:requirements.bzl", "requirement")\n'
LOAD_ENV = 'load("@databazel_python//:requirements.bzl", "requirement")\n'
DEFS = 'load("@databazel//databazel:defs.bzl", "hyperparam_search", "model", "successive_halving", "uniform")\n'


class Stack:
    """The workspace, its test wheels and the pip_parse lock."""

    REQUIRES = {"alpha": [], "beta": ["alpha>=1"], "gamma": []}

    def __init__(self, ws: Workspace, wheels: Path) -> None:
        self.ws, self.wheels = ws, wheels
        self.versions = {name: "1.0" for name in self.REQUIRES}
        self.write_lock()

    def write_lock(self) -> None:
        lines = [f"--find-links {self.wheels}"]
        for name, version in sorted(self.versions.items()):
            text = PACKAGE.format(name=name, version=version)
            wheel = make_wheel(self.wheels, name, version, self.REQUIRES[name], text)
            digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
            lines.append(f"{name}=={version} --hash=sha256:{digest}")
        self.ws.write("pypi_lock.txt", rpw.lock_blocks() + "\n".join(lines) + "\n")

    def bump(self, name: str, version: str) -> None:
        self.versions[name] = version
        self.write_lock()

    @contextlib.contextmanager
    def rules_python_toolchain(self) -> Iterator[None]:
        """The WORKSPACE with rules_python's toolchain and no python_env, for the block."""
        self.ws.write("WORKSPACE", rpw.workspace_file("rules_python"))
        try:
            yield
        finally:
            self.ws.write("WORKSPACE", rpw.workspace_file("python_env"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("rules_python")
    wheels = base / "wheels"
    wheels.mkdir()
    host = rpw.host_python()
    ws = rpw.create(
        base / "ws", base / "output_base", rpw.tool_wheels(base / "distdir"), host
    )
    stack = Stack(ws, wheels)
    (ws.root / "mnist/data").mkdir(parents=True)
    for name in (
        "train.py",
        "train_epochs.py",
        "evaluate.py",
        "lib.py",
        "data/mnist.npz",
    ):
        shutil.copy(REPO / "mnist" / name, ws.root / "mnist" / name)
    for name in ("scripts", "lib"):
        shutil.copytree(REPO / "tests/e2e/fixture" / name, ws.root / name)
    ws.write("t/train.py", TRAIN)
    ws.write("t/data.txt", "data\n")
    try:
        yield stack
    finally:
        ws.remove()


def _model(
    name: str,
    imports: list[str],
    deps: list[str] | None = None,
    env: dict | None = None,
) -> str:
    hyperparams = {"packages": " ".join(imports), "trial": name}
    deps = imports if deps is None else deps
    return f"""
model(
    name = "{name}",
    env = {json.dumps(env or {})},
    network = {bool(env)},  # the packages report to the test's probe
    hyperparams = {json.dumps(hyperparams)},
    train_executable = "train.py",
    training_data = "data.txt",
    deps = [{", ".join(f'requirement("{p}")' for p in deps)}],
)
"""


def test_a_bump_in_the_lock_reruns_exactly_the_trials_that_declare_it(
    stack: Stack,
) -> None:
    ws = stack.ws
    # `b` declares beta only; alpha comes with it (beta's Requires-Dist).
    trials = {
        "a": (["alpha"], None),
        "b": (["beta", "alpha"], ["beta"]),
        "g": (["gamma"], None),
        "n": ([], None),
    }
    ws.write(
        "t/BUILD",
        LOAD_PYPI + DEFS + "".join(_model(n, i, d) for n, (i, d) in trials.items()),
    )
    targets = [f"//t:{n}" for n in trials]
    first = ws.build(*targets)
    assert first.executed("DatabazelTrain") == 4
    model_b = json.loads(ws.bin("t/b.model").read_text())
    assert model_b["used"] == {"alpha": "1.0", "beta": "1.0"}
    assert ws.build(*targets).executed() == 0  # a no-op rebuild runs nothing

    stack.bump("gamma", "1.1")
    again = ws.build(*targets)
    assert again.executed("DatabazelTrain") == 1
    assert json.loads(ws.bin("t/g.model").read_text())["used"] == {"gamma": "1.1"}

    stack.bump("alpha", "1.1")  # `a`, and `b` through beta's dependency on it
    again = ws.build(*targets)
    assert again.executed("DatabazelTrain") == 2
    assert json.loads(ws.bin("t/b.model").read_text())["used"]["alpha"] == "1.1"


def test_undeclared_package_names_its_pip_label(stack: Stack) -> None:
    ws = stack.ws
    ws.write(
        "t/undeclared/BUILD",
        LOAD_PYPI
        + DEFS
        # gamma is in the lock, and the script's other package is declared.
        + _model("m", ["alpha", "gamma"], ["alpha"])
        .replace('"train.py"', '"//t:train.py"')
        .replace('"data.txt"', '"//t:data.txt"'),
    )
    ws.write(
        "t/BUILD",
        (ws.root / "t/BUILD").read_text() + 'exports_files(["train.py", "data.txt"])\n',
    )
    for flags in ((), SANDBOXED):
        result = ws.build("//t/undeclared:m", check=False, flags=flags)
        assert result.returncode != 0
        assert (
            "databazel: error: //t/undeclared:m: train script t/train.py exited with code 1\n"
            "The script imports `gamma`, which no entry of the target's `deps` provides: "
            'add "@pypi_gamma//:pkg" (distribution gamma, requirement("gamma") in '
            "@pypi//:requirements.bzl) to `deps`."
        ) in result.stderr, (flags, result.stderr[-3000:])


def test_warm_workers_import_pip_packages_ahead_and_key_them(
    stack: Stack, tmp_path: Path, probe: Probe
) -> None:
    ws = stack.ws
    log = tmp_path / "imports.log"
    names = ["w1", "w2", "w3"]
    ws.write("w/train.py", TRAIN)
    ws.write("w/data.txt", "data\n")
    env = {"IMPORT_LOG": str(log), "DATABAZEL_PROBE": probe.address}
    ws.write(
        "w/BUILD",
        LOAD_PYPI
        + DEFS
        + "".join(_model(n, ["alpha", "gamma"], env=env) for n in names),
    )
    targets = [f"//w:{n}" for n in names]
    warm = ws.build(*targets, flags=WARM)
    assert warm.executed("DatabazelTrain") == 3
    assert {
        s.get("runner") for s in warm.spawns if s.get("mnemonic") == "DatabazelTrain"
    } == {"worker"}
    importers = [line.split() for line in log.read_text().splitlines()]
    # Each package: by the first trial, then by the worker, which the later
    # trials inherit.
    assert [n for n, _ in importers].count("alpha") == 2, importers
    assert [n for n, _ in importers].count("gamma") == 2, importers
    warm_models = {n: ws.bin(f"w/{n}.model").read_bytes() for n in names}
    assert json.loads(warm_models["w1"])["used"] == {
        "alpha": stack.versions["alpha"],
        "gamma": stack.versions["gamma"],
    }

    sandboxed = ws.build(*targets, flags=SANDBOXED)
    assert sandboxed.executed("DatabazelTrain") == 3
    assert {n: ws.bin(f"w/{n}.model").read_bytes() for n in names} == warm_models

    # A new version is another worker (the worker that imported the old one
    # ahead never serves it).
    stack.bump("gamma", "2.0")
    log.unlink()
    again = ws.build(*targets, flags=WARM)
    assert again.executed("DatabazelTrain") == 3
    for n in names:
        assert json.loads(ws.bin(f"w/{n}.model").read_text())["used"]["gamma"] == "2.0"
    assert [line.split()[0] for line in log.read_text().splitlines()].count(
        "gamma"
    ) == 2


MNIST_BUILD = """
load("@rules_python//python:defs.bzl", "py_binary", "py_library")

DATA = "data/mnist.npz"

SCRIPT_DEPS = [":lib", requirement("scikit-learn")]

py_library(
    name = "lib",
    srcs = ["lib.py"],
    deps = [requirement("numpy")],
)
"""

MOVE_SEARCH = """
hyperparam_search(
    name = "move",
    eval_executable = "evaluate.py",
    grid = {"C": ["0.1", "1"], "max_iter": ["50"]},
    metric = "accuracy",
    model_file = "model.pkl",
    test_data = DATA,
    train_executable = "train.py",
    training_data = DATA,
    deps = SCRIPT_DEPS,
)
"""


def _outputs(ws: Workspace, prefix: str, trials: list[str]) -> dict[str, bytes]:
    out = {}
    for t in trials:
        out[f"{t}/model.pkl"] = ws.bin(f"{prefix}{t}/model.pkl").read_bytes()
        out[f"{t}__eval.metrics.json"] = ws.bin(
            f"{prefix}{t}__eval.metrics.json"
        ).read_bytes()
    return out


def _actions(ws: Workspace, target: str) -> list[dict]:
    """The training actions of `target` and what it depends on (aquery)."""
    out = ws.bazel(
        "aquery",
        "--output=jsonproto",
        f"mnemonic('DatabazelTrain', deps({target}))",
        check=True,
    ).stdout
    return json.loads(out).get("actions", [])


def _keys(ws: Workspace, target: str) -> list[str]:
    return sorted(a["actionKey"] for a in _actions(ws, target))


def test_moving_from_python_env_to_rules_python_and_back(
    stack: Stack, tmp_path: Path
) -> None:
    """docs/python-environment.md, "Moving between python_env and rules_python"."""
    ws = stack.ws
    trials = ["move__C-0.1__max_iter-50", "move__C-1__max_iter-50"]
    # The action cache keeps the last action of each output; a disk cache
    # (or a remote one) keeps them all.
    disk_cache = f"--disk_cache={tmp_path / 'disk_cache'}"

    def build(load: str) -> tuple[dict[str, bytes], int, list[str]]:
        ws.write("mnist/BUILD", load + DEFS + MNIST_BUILD + MOVE_SEARCH)
        result = ws.build("//mnist:move", flags=(disk_cache,))
        return (
            _outputs(ws, "mnist/", trials),
            result.executed("DatabazelTrain"),
            _keys(ws, "//mnist:move"),
        )

    env_outputs, ran, env_keys = build(LOAD_ENV)
    assert ran == 2 and len(env_keys) == 2
    # rules_python's packages: the same package files at other paths, so the
    # trials run again, with byte-identical models and metrics.
    pypi_outputs, ran, pypi_keys = build(LOAD_PYPI)
    assert ran == 2 and pypi_outputs == env_outputs
    assert set(pypi_keys).isdisjoint(env_keys)
    # ... and rules_python's interpreter: the host's (the interpreter is an input).
    with stack.rules_python_toolchain():
        host_outputs, ran, _ = build(LOAD_PYPI)
        assert ran == 2 and host_outputs == env_outputs
    # Back to python_env: the old cache keys; nothing runs (the disk cache
    # has every result).
    back_outputs, ran, back_keys = build(LOAD_ENV)
    assert ran == 0 and back_keys == env_keys and back_outputs == env_outputs


# Under rules_python's toolchain: the MNIST scripts (scikit-learn, matplotlib
# for the plots, from @pypi) as plain scripts and as a rules_python py_binary...
MNIST_KINDS = """
py_binary(
    name = "train_bin",
    srcs = ["train.py"],
    main = "train.py",
    deps = SCRIPT_DEPS,
)

model(
    name = "binary",
    hyperparams = {"C": "1", "max_iter": "50"},
    model_file = "binary/model.pkl",
    train_executable = ":train_bin",
    training_data = DATA,
)

hyperparam_search(
    name = "grid",
    eval_executable = "evaluate.py",
    grid = {"C": ["0.1", "1"], "max_iter": ["50"]},
    metric = "accuracy",
    model_file = "model.pkl",
    html_deps = [requirement("optuna"), requirement("plotly")],
    plot_deps = [requirement("matplotlib")],
    plots = True,
    test_data = DATA,
    train_executable = "train.py",
    training_data = DATA,
    deps = SCRIPT_DEPS,
)
"""

# ... and the other kinds of search with the fixture's standard-library scripts
# (tests/e2e/fixture: `x` scores best at 1, trained in epochs on request), the
# suggestions of the tpe search by optuna from @pypi.
FIXTURE_SCRIPTS = """
    eval_executable = "//scripts:evaluate.py",
    metric = "accuracy",
    test_data = "data.txt",
    train_executable = "//scripts:train.py",
    training_data = "data.txt",
    deps = ["//lib:fixturelib"],"""

KINDS = "".join(
    f"""
hyperparam_search(
    name = "{name}",{arguments}{FIXTURE_SCRIPTS}
)
"""
    for name, arguments in {
        "random": """
    num_trials = 2,
    search_space = {"x": uniform(0, 2)},
    seed = 1,
    strategy = "random",""",
        "tpe": """
    num_rounds = 2,
    search_space = {"x": uniform(0, 2)},
    seed = 1,
    strategy = "tpe",
    suggest_deps = [requirement("optuna")],
    trials_per_round = 1,""",
        "epochs": """
    grid = {"x": ["1"], "epochs": ["1", "2"]},
    learning_curve = True,""",
        "halving": """
    early_stopping = successive_halving(eta = 3, max_epochs = 3, min_epochs = 1),
    grid = {"x": ["0.5", "1", "2"]},""",
    }.items()
)


def test_rules_python_toolchain_builds_every_kind_of_search(stack: Stack) -> None:
    ws = stack.ws
    ws.write("mnist/BUILD", LOAD_PYPI + DEFS + MNIST_BUILD + MNIST_KINDS)
    ws.write("kinds/BUILD", LOAD_PYPI + DEFS + KINDS)
    ws.write("kinds/data.txt", "rules_python\n")
    searches = {
        "//mnist:grid": "mnist/grid",
        **{
            f"//kinds:{n}": f"kinds/{n}" for n in ("random", "tpe", "epochs", "halving")
        },
    }
    with stack.rules_python_toolchain():
        result = ws.build("//mnist:binary", *searches, flags=("--jobs=2",))
        # 1 + 2 + 2 + 2 trials, the 2 epochs of `epochs` and halving's 3 x 3
        # epochs (those of the stopped trials write a stop record).
        assert result.executed("DatabazelTrain") == 1 + 2 + 2 + 2 + 2 + 9
        # Round 1 from the seed, round 2 from optuna's suggestion.
        assert result.executed("DatabazelSuggest") == 1
        assert result.executed("DatabazelPlot") == 1
        for target, path in searches.items():
            report = json.loads(ws.bin(f"{path}.json").read_text())
            assert report["best"]["status"] == "ok", target
            assert report["best"]["metrics"]["accuracy"] > 0.4, target
        halving = json.loads(ws.bin("kinds/halving.json").read_text())
        assert sorted(t["epochs"] for t in halving["trials"]) == [1, 1, 3]
        assert halving["best"]["hyperparams"]["x"] == "1"
        assert [p.name for p in ws.bin("mnist/grid.plots").iterdir()]
        assert "plotly" in ws.bin("mnist/grid.html").read_text()
        assert ws.bin("mnist/binary/model.pkl").stat().st_size > 0
        # Every trial ran with the toolchain's interpreter: the host's.
        actions = _actions(ws, "//mnist:grid + //kinds:tpe")
        assert len(actions) == 4
        executables = {a["arguments"][0] for a in actions}
        assert executables == {rpw.host_python()}
        # Warm trials with this interpreter and these packages: byte-identical.
        trials = ["grid__C-0.1__max_iter-50", "grid__C-1__max_iter-50"]
        warm = _outputs(ws, "mnist/", trials)
        sandboxed = ws.build("//mnist:grid", flags=SANDBOXED)
        assert sandboxed.executed("DatabazelTrain") == 2
        assert _outputs(ws, "mnist/", trials) == warm
