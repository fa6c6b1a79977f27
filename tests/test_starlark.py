"""Runs the Starlark unit tests (skylib unittest) with `bazel test` in this workspace."""

from __future__ import annotations

import re

from bazel_harness import REPO, Workspace


def test_starlark_unit_tests_pass(repo: Workspace) -> None:
    # Every test made with unittest.make in tests/starlark runs and passes: a
    # test left out of its suite, or a suite left out of the BUILD file, fails.
    made = sum(
        len(re.findall(r"^\w+ = unittest\.make\(", p.read_text(), re.M))
        for p in (REPO / "tests" / "starlark").glob("*.bzl")
    )
    assert made > 0
    query = repo.bazel("query", "tests(//tests/starlark:all)")
    assert query.returncode == 0, query.stderr[-4000:]
    assert len(query.stdout.split()) == made, query.stdout
    result = repo.bazel("test", "//tests/starlark:all")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    summary = f"{made} test{'s' if made != 1 else ''} pass"
    assert summary in result.stdout + result.stderr
