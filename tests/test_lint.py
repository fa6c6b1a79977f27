"""Lint and format: tools/lint.sh (buildifier for Starlark, ruff for Python)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bazel_harness import REPO

LINT = REPO / "tools" / "lint.sh"


def lint(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT), *args], capture_output=True, text=True, check=False, timeout=300
    )


def test_the_checkout_is_lint_clean_and_formatted() -> None:
    result = lint()
    assert result.returncode == 0, result.stdout + result.stderr


def test_lint_reports_unformatted_starlark_and_python(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "BUILD").write_text('filegroup(name="x",srcs=[ "a" ])\n')
    (pkg / "rules.bzl").write_text('"""Doc."""\n\nload(":other.bzl", "helper")\n')
    (pkg / "tool.py").write_text("import os\nx=1\n")
    result = lint(str(tmp_path))
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "pkg/BUILD # reformat" in output
    assert 'rules.bzl:3: load: Loaded symbol "helper" is unused' in output
    assert "F401" in output  # unused import
    assert "Would reformat" in output and "tool.py" in output
