"""Runs the Starlark unit tests (skylib unittest) with `bazel test` in this workspace."""

from __future__ import annotations

from bazel_harness import Workspace


def test_starlark_unit_tests_pass(repo: Workspace) -> None:
    result = repo.bazel("test", "//tests/starlark:all")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "10 tests pass" in result.stdout + result.stderr
