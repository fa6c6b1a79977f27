"""The example searches and the fixture workspace build with newer Bazel's flags.

tools/newer_bazel.bazelrc lists the --incompatible_* flags later releases
flipped (tests/test_newer_bazel.py checks the list); every workspace imports
it, so every Bazel test of this repository runs with them. Here: they are
flags of this Bazel whose default they flip, Bazel applies every one of them,
the example searches (//mnist, //torch_digits) analyse with them, and a small
search in the fixture workspace runs with them.
"""

from __future__ import annotations

import json
import re

from bazel_harness import Workspace
from test_newer_bazel import FLIPPED


def _announced(stderr: str) -> set[str]:
    """The flags Bazel says it took from rc files (--announce_rc)."""
    flags = set()
    for line in stderr.splitlines():
        if (
            "options:" in line
        ):  # "Inherited 'common' options: ...", "'build' options: ..."
            flags.update(f[2:] for f in line.split() if f.startswith("--"))
    return flags


def test_they_flip_flags_of_this_bazel(repo: Workspace) -> None:
    text = repo.bazel("help", "build", "--long", check=True).stdout
    for flag in FLIPPED:
        name = flag.removeprefix("no")
        match = re.search(
            rf"--\[no\]{name} \(a boolean; default: \"(true|false)\"\)", text
        )
        if match is None:
            # Undocumented: named only among what --all_incompatible_changes sets.
            assert re.search(rf"\b{name}\b", text), f"Bazel has no --{name}"
            continue
        assert match.group(1) == ("true" if flag.startswith("no") else "false"), flag


def test_the_example_searches_analyse_with_them(repo: Workspace) -> None:
    result = repo.bazel(
        "build",
        "--nobuild",
        "--announce_rc",
        "//mnist/...",
        "//torch_digits/...",
        check=True,
    )
    assert set(FLIPPED) <= _announced(result.stderr), result.stderr[-3000:]


def test_a_search_in_the_fixture_workspace_runs_with_them(ws: Workspace) -> None:
    ws.write(
        "newer/BUILD",
        """
        load("@databazel//databazel:defs.bzl", "hyperparam_search")

        hyperparam_search(
            name = "s",
            eval_executable = "//scripts:evaluate.py",
            grid = {"x": ["1", "2"]},
            metric = "accuracy",
            plots = False,
            test_data = "data.txt",
            train_executable = "//scripts:train.py",
            training_data = "data.txt",
            deps = ["//lib:fixturelib"],
        )
        """,
    )
    ws.write("newer/data.txt", "newer Bazel\n")
    result = ws.build(
        "//newer:s", "//scripts:all", "//lib:all", flags=("--announce_rc",)
    )
    assert set(FLIPPED) <= _announced(result.stderr), result.stderr[-3000:]
    assert result.executed_by_mnemonic() == {
        "DatabazelTrain": 2,
        "DatabazelEvaluate": 2,
        "DatabazelReport": 1,
    }
    report = json.loads(ws.bin("newer/s.json").read_text())
    assert [t["status"] for t in report["trials"]] == ["ok", "ok"]
