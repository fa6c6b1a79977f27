"""Per-package environments and warm workers, with real Bazel.

A workspace of its own whose python_env installs small wheels the test builds
(no network): `alpha`, `beta` (which requires alpha), `gamma`, and `delta`,
which no trial declares. Trials declare packages in `deps`; the tests bump
versions in the lock file and count the trainings Bazel runs.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bazel_harness import SANDBOXED, Workspace
from wheels import make_wheel

LOAD = """\
load("@databazel//databazel:defs.bzl", "evaluate", "model")
load("@fixture_python//:requirements.bzl", "requirement")
"""

# Each package module keeps state a script could leave behind: SEEN grows by
# one per import-and-use in one process.
PACKAGE = """\
VERSION = "{version}"
SEEN = []
"""

TRAIN = """\
import argparse, json, os, sys, time

parser = argparse.ArgumentParser()
parser.add_argument("--data")
parser.add_argument("--model-output-path")
parser.add_argument("--hyperparams")
args = parser.parse_args()
params = json.loads(args.hyperparams)
used = {}
for name in params.get("packages", "").split():
    module = __import__(name)
    module.SEEN.append(params.get("trial"))  # state a warm worker must not keep
    used[name] = [module.VERSION, len(module.SEEN)]
# Module state of the script's own: a trial must not see the one before it.
leaked = getattr(sys, "databazel_test_leak", None)
sys.databazel_test_leak = params.get("trial")
if params.get("sleep"):
    import ctypes
    # PR_SET_NAME: the test finds the process by its name (an isolated trial
    # can write no file the test could read).
    ctypes.CDLL(None).prctl(15, params["process_name"].encode(), 0, 0, 0)
    time.sleep(float(params["sleep"]))
with open(args.model_output_path, "w") as f:
    json.dump({"used": used, "leaked": leaked, "data": open(args.data).read()}, f, sort_keys=True)
"""

EVALUATE = """\
import argparse, json, os

parser = argparse.ArgumentParser()
parser.add_argument("--model-path")
parser.add_argument("--data-path")
parser.add_argument("--output-dir")
args = parser.parse_args()
model = json.load(open(args.model_path))
with open(os.path.join(args.output_dir, "metrics.json"), "w") as f:
    json.dump({"packages": len(model["used"])}, f)
"""


class Packages:
    """The workspace and its lock file of test wheels."""

    REQUIRES = {"alpha": [], "beta": ["alpha>=1"], "gamma": [], "delta": []}

    def __init__(self, ws: Workspace, wheels: Path) -> None:
        self.ws, self.wheels = ws, wheels
        self.versions = {name: "1.0" for name in self.REQUIRES}
        self.write_lock()

    def write_lock(self) -> None:
        lines = ["--no-index", f"--find-links {self.wheels}"]
        for name, version in sorted(self.versions.items()):
            wheel = make_wheel(
                self.wheels,
                name,
                version,
                self.REQUIRES[name],
                PACKAGE.format(version=version),
            )
            digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
            lines.append(f"{name}=={version} --hash=sha256:{digest}")
        self.ws.write("lock.txt", "\n".join(lines) + "\n")

    def bump(self, name: str, version: str) -> None:
        self.versions[name] = version
        self.write_lock()


@pytest.fixture(scope="module")
def pkgs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Packages]:
    base = tmp_path_factory.mktemp("packages")
    wheels = base / "wheels"
    wheels.mkdir()
    ws = Workspace.fixture(
        base / "ws",
        base / "output_base",
        python_env='requirements_lock = "//:lock.txt",',
    )
    ws.write("BUILD", 'exports_files(["lock.txt"])\n')
    packages = Packages(ws, wheels)
    ws.write("t/train.py", TRAIN)
    ws.write("t/evaluate.py", EVALUATE)
    ws.write("t/data.txt", "data\n")
    try:
        yield packages
    finally:
        ws.remove()


def _model(
    name: str, imports: list[str], deps: list[str] | None = None, **extra: str
) -> str:
    """A model whose script imports `imports`; it declares `deps` (default: the same)."""
    hyperparams = {"packages": " ".join(imports), "trial": name, **extra}
    deps = ", ".join(f'requirement("{p}")' for p in (imports if deps is None else deps))
    return f"""
model(
    name = "{name}",
    hyperparams = {json.dumps(hyperparams)},
    train_executable = "train.py",
    training_data = "data.txt",
    deps = [{deps}],
)
"""


TRIALS = {"a": ["alpha"], "b": ["beta"], "g": ["gamma"], "n": []}


def test_trials_rerun_only_for_the_packages_they_declare(pkgs: Packages) -> None:
    ws = pkgs.ws
    # `b` declares beta only; alpha comes with it (beta's Requires-Dist) and
    # its script imports both.
    trials = dict(TRIALS, b=["beta", "alpha"])
    ws.write(
        "t/BUILD",
        LOAD + "".join(_model(n, p, TRIALS[n]) for n, p in trials.items()),
    )
    targets = [f"//t:{n}" for n in trials]
    first = ws.build(*targets)
    assert first.executed("DatabazelTrain") == 4
    model_b = json.loads(ws.bin("t/b.model").read_text())
    assert model_b["used"] == {"alpha": ["1.0", 1], "beta": ["1.0", 1]}

    # delta is in the environment, but no trial declares it.
    pkgs.bump("delta", "2.0")
    assert ws.build(*targets).executed("DatabazelTrain") == 0

    # gamma: only `g`.
    pkgs.bump("gamma", "1.1")
    again = ws.build(*targets)
    assert again.executed("DatabazelTrain") == 1
    assert json.loads(ws.bin("t/g.model").read_text())["used"] == {"gamma": ["1.1", 1]}

    # alpha: `a`, and `b` through beta's dependency on it.
    pkgs.bump("alpha", "1.1")
    again = ws.build(*targets)
    assert again.executed("DatabazelTrain") == 2
    assert json.loads(ws.bin("t/b.model").read_text())["used"]["alpha"] == [
        "1.1",
        1,
    ]


def test_undeclared_package_fails_naming_the_deps_entry(pkgs: Packages) -> None:
    ws = pkgs.ws
    ws.write("u/train.py", TRAIN)
    ws.write("u/data.txt", "data\n")
    ws.write(
        "u/BUILD",
        LOAD
        + _model("m", ["alpha"], deps=[])
        # gamma is installed, and the script's other package (alpha) is
        # declared: its import root is the environment's site-packages.
        + _model("m2", ["alpha", "gamma"], deps=["alpha"]),
    )
    for flags in ((), SANDBOXED):
        for target, module in (("m", "alpha"), ("m2", "gamma")):
            result = ws.build(f"//u:{target}", check=False, flags=flags)
            assert result.returncode != 0
            assert (
                f"databazel: error: //u:{target}: train script u/train.py exited with code 1\n"
                f"The script imports `{module}`, which no entry of the target's `deps` "
                f'provides: add "@fixture_python//:{module}" (distribution {module}, '
                f'requirement("{module}") in @fixture_python//:requirements.bzl) to `deps`.'
            ) in result.stderr, (flags, result.stderr[-3000:])


# Warm workers are the default; one of them, for the four trials in a row.
WARM = ("--worker_max_instances=1", "--jobs=1")


def test_warm_worker_keeps_no_state_between_trials(pkgs: Packages) -> None:
    ws = pkgs.ws
    names = [f"w{i}" for i in range(4)]
    ws.write("w/train.py", TRAIN)
    ws.write("w/evaluate.py", EVALUATE)
    ws.write("w/data.txt", "data\n")
    ws.write(
        "w/BUILD",
        LOAD
        + "".join(_model(n, ["alpha", "gamma"]) for n in names)
        + "".join(
            f'evaluate(name = "{n}_eval", model = ":{n}", eval_executable = "evaluate.py", test_data = "data.txt")\n'
            for n in names
        ),
    )
    targets = [f"//w:{n}_eval" for n in names]
    warm = ws.build(*targets, flags=WARM)
    assert warm.executed("DatabazelTrain") == 4
    assert {s.get("runner") for s in warm.spawns if s.get("mnemonic")} >= {"worker"}
    assert all(
        s.get("runner") == "worker"
        for s in warm.spawns
        if s.get("mnemonic") in ("DatabazelTrain", "DatabazelEvaluate")
    )
    warm_outputs = {}
    for n in names:
        model = json.loads(ws.bin(f"w/{n}.model").read_text())
        # One worker ran all four trials, yet each saw a fresh package module
        # (SEEN holds only its own entry) and none of the others' globals.
        assert model["used"] == {
            "alpha": [pkgs.versions["alpha"], 1],
            "gamma": [pkgs.versions["gamma"], 1],
        }, model
        assert model["leaked"] is None, model
        warm_outputs[n] = (
            ws.bin(f"w/{n}.model").read_bytes(),
            ws.bin(f"w/{n}_eval.metrics.json").read_bytes(),
        )

    # The same trials sandboxed: byte-identical models and metrics.
    sandboxed = ws.build(*targets, flags=("--jobs=1", *SANDBOXED))
    assert sandboxed.executed("DatabazelTrain") == 4
    assert all(
        s.get("runner") == "linux-sandbox"
        for s in sandboxed.spawns
        if s.get("mnemonic") in ("DatabazelTrain", "DatabazelEvaluate")
    )
    for n in names:
        assert warm_outputs[n] == (
            ws.bin(f"w/{n}.model").read_bytes(),
            ws.bin(f"w/{n}_eval.metrics.json").read_bytes(),
        )


def processes_named(name: str) -> list[int]:
    """The pids of this machine's processes whose name (/proc/PID/comm) is `name`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/comm").read_text().strip() == name:
                    found.append(int(entry))
            except OSError:
                continue
    return found


def test_warm_trial_past_its_timeout_is_killed_and_named(pkgs: Packages) -> None:
    ws = pkgs.ws
    name = f"dbz-slow-{os.getpid() % 100000}"
    ws.write("slow/train.py", TRAIN)
    ws.write("slow/data.txt", "data\n")
    ws.write(
        "slow/BUILD",
        LOAD
        + _model("m", ["alpha"], sleep="600", process_name=name).replace(
            "    deps", "    timeout = 2,\n    deps"
        ),
    )
    seen: list[list[int]] = []
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        build = pool.submit(ws.build, "//slow:m", check=False, flags=WARM)
        while not build.done():
            if pids := processes_named(name):
                seen.append(pids)
            time.sleep(0.05)
        result = build.result()
    assert seen, "the trial never ran"
    assert result.returncode != 0
    assert [s.get("runner") for s in result.spawns if s.get("mnemonic")] == ["worker"]
    assert (
        "databazel: error: //slow:m: train script slow/train.py was still running "
        "after the timeout of 2 s and was killed"
    ) in result.stderr, result.stderr[-3000:]
    assert processes_named(name) == []
    assert not ws.bin("slow/m.model").exists()


def _action_keys(ws: Workspace, targets: str) -> list[tuple[str, list[str]]]:
    """(action key, command line) of each training and evaluation of `targets`."""
    out = ws.bazel(
        "aquery",
        "--output=jsonproto",
        f"mnemonic('Databazel(Train|Evaluate)', {targets})",
        check=True,
    ).stdout
    actions = json.loads(out).get("actions", [])
    return sorted((a["actionKey"], a["arguments"]) for a in actions)


def test_a_second_environment_changes_no_other_trial(pkgs: Packages) -> None:
    """A packages-only environment added beside the toolchain's (as
    @databazel_torch is beside @databazel_python) changes no action key of the
    trials that do not declare its packages, and re-runs none of them; its
    packages reach the trials that declare them, on the same interpreter."""
    ws = pkgs.ws
    ws.write("k/train.py", TRAIN)
    ws.write("k/evaluate.py", EVALUATE)
    ws.write("k/data.txt", "data\n")
    trials = LOAD + _model("a", ["alpha"]) + _model("n", [])
    ws.write("k/BUILD", trials)
    before = _action_keys(ws, "//k:all")
    assert len(before) == 2 and all(key for key, _ in before)
    assert ws.build("//k:a", "//k:n").executed("DatabazelTrain") == 2

    extra = pkgs.wheels / "extra"
    extra.mkdir()
    wheel = make_wheel(extra, "epsilon", "1.0", [], PACKAGE.format(version="1.0"))
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    ws.write(
        "extra_lock.txt",
        f"--no-index\n--find-links {extra}\nepsilon==1.0 --hash=sha256:{digest}\n",
    )
    ws.write("BUILD", 'exports_files(["lock.txt", "extra_lock.txt"])\n')
    with ws.workspace_addition(
        """
        python_env(
            name = "extra_python",
            requirements_lock = "//:extra_lock.txt",
        )
        """
    ):
        ws.write(
            "k/BUILD",
            trials
            + _model("e", ["alpha", "epsilon"], deps=[]).replace(
                "deps = []", 'deps = [requirement("alpha"), "@extra_python//:epsilon"]'
            ),
        )
        assert _action_keys(ws, "//k:a + //k:n") == before
        again = ws.build("//k:a", "//k:n", "//k:e")
        assert again.executed("DatabazelTrain") == 1  # only the new trial
        used = json.loads(ws.bin("k/e.model").read_text())["used"]
        assert used == {"alpha": [pkgs.versions["alpha"], 1], "epsilon": ["1.0", 1]}
    ws.write("k/BUILD", trials)  # the WORKSPACE is back without @extra_python
