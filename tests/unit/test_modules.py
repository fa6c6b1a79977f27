"""Each databazel tool starts with only the modules its action gets.

databazel/private/BUILD lists, for each script an action runs, the script and
the modules it imports (`<tool>_modules`); the rules give the action exactly
those files. Each tool is started here from a directory holding only them, as
a sandbox does (through symbolic links), so a missing module fails.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

PRIVATE = Path(__file__).resolve().parents[2] / "databazel" / "private"


def filegroups() -> dict[str, list[str]]:
    text = (PRIVATE / "BUILD").read_text()
    found = re.findall(
        r'filegroup\(\s*name = "(\w+)_modules",\s*srcs = \[([^\]]*)\]', text
    )
    return {name: re.findall(r'"([^"]+)"', srcs) for name, srcs in found}


def test_every_python_file_is_in_a_filegroup() -> None:
    groups = filegroups()
    assert set(groups) == {
        "runner",
        "report",
        "plot",
        "card",
        "gate",
        "rung",
        "suggest",
        "html_report",
        "leaderboard",
        "mlflow_export",
    }
    listed = {f for files in groups.values() for f in files}
    # env_layout.py runs in the python_env repository rule, not in an action.
    assert listed | {"env_layout.py"} == {p.name for p in PRIVATE.glob("*.py")}


@pytest.mark.parametrize("tool", sorted(filegroups()))
def test_a_tool_starts_with_only_its_modules(tool: str, tmp_path: Path) -> None:
    for name in filegroups()[tool]:
        (tmp_path / name).symlink_to(PRIVATE / name)
    flags = ["-I"] if tool == "runner" else []
    started = subprocess.run(
        [sys.executable, *flags, "-S", str(tmp_path / f"{tool}.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 0, started.stderr
    assert "usage:" in started.stdout


def test_a_module_left_out_fails_to_import(tmp_path: Path) -> None:
    # Python puts the resolved directory of a script on sys.path; the tools
    # import from the one the action sees, so the source tree cannot hide a
    # module missing from the action's inputs.
    for name in filegroups()["report"]:
        if name != "records.py":
            (tmp_path / name).symlink_to(PRIVATE / name)
    started = subprocess.run(
        [sys.executable, "-S", str(tmp_path / "report.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 1
    assert "No module named 'records'" in started.stderr
