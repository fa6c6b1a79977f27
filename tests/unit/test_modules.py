"""Each databazel tool starts with only the modules its action gets.

databazel/private/BUILD lists, for each tool an action runs, the entry point
tool.py, the tool's module and the modules it imports (`<tool>_modules`); the
rules give the action exactly those files. Each tool is started here as the
actions start it (`python3 -S tool.py NAME`) from a directory holding only
them, as a sandbox does (through symbolic links), so a missing module fails.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import tool

PRIVATE = Path(__file__).resolve().parents[2] / "databazel" / "private"


def filegroups() -> dict[str, list[str]]:
    """Each `<tool>_modules` filegroup's files, the filegroups it names expanded."""
    text = (PRIVATE / "BUILD").read_text()
    found = re.findall(r'filegroup\(\s*name = "(\w+)",\s*srcs = \[([^\]]*)\]', text)
    srcs = {name: re.findall(r'"([^"]+)"', body) for name, body in found}

    def files(name: str) -> set[str]:
        return {
            f
            for src in srcs[name]
            for f in (files(src[1:]) if src.startswith(":") else {src})
        }

    return {
        name.removesuffix("_modules"): sorted(files(name))
        for name in srcs
        if name.endswith("_modules")
    }


def test_every_python_file_is_in_a_filegroup() -> None:
    groups = filegroups()
    assert set(groups) == set(tool.TOOLS)
    for name, files in groups.items():
        assert {"tool.py", f"{name}.py"} <= set(files), name
    listed = {f for files in groups.values() for f in files}
    # env_layout.py runs in the python_env repository rule, not in an action.
    assert listed | {"env_layout.py"} == {p.name for p in PRIVATE.glob("*.py")}


@pytest.mark.parametrize("tool", sorted(filegroups()))
def test_a_tool_starts_with_only_its_modules(tool: str, tmp_path: Path) -> None:
    for name in filegroups()[tool]:
        (tmp_path / name).symlink_to(PRIVATE / name)
    flags = ["-I"] if tool == "runner" else []
    started = subprocess.run(
        [sys.executable, *flags, "-S", str(tmp_path / "tool.py"), tool, "--help"],
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
        [sys.executable, "-S", str(tmp_path / "tool.py"), "report", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 1
    assert started.stderr == (
        "databazel: error: databazel: internal error in the databazel report: "
        "ModuleNotFoundError: No module named 'records'\n"
    )


def test_the_launcher_turns_what_escapes_a_tool_into_one_line(
    tmp_path: Path,
) -> None:
    for name in filegroups()["rung"]:
        (tmp_path / name).symlink_to(PRIVATE / name)

    def start(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-S", str(tmp_path / "tool.py"), *argv],
            capture_output=True,
            text=True,
            timeout=60,
        )

    # An OSError escaping the tool: its message, under the target, no traceback.
    missing = tmp_path / "missing.json"
    started = start("rung", "--target", "//p:s__rung-0", "--manifest", str(missing))
    assert started.returncode == 1
    assert started.stderr.startswith("databazel: error: //p:s__rung-0: ")
    assert "Traceback" not in started.stderr and len(started.stderr.splitlines()) == 1
    # Anything else is an internal error of the tool, also one line.
    missing.write_text("[]")
    started = start("rung", "--target", "//p:s__rung-0", "--manifest", str(missing))
    assert started.returncode == 1
    assert "Traceback" not in started.stderr and len(started.stderr.splitlines()) == 1
    # A name that is no tool: the usage, exit 2.
    started = start("nope")
    assert started.returncode == 2
    assert started.stderr.startswith("usage: tool.py NAME ARGS..., NAME one of card,")


def test_a_module_over_450_lines_says_why_in_its_docstring() -> None:
    # Modules of one job: a long one is split where its jobs are, or says why not.
    for path in sorted(PRIVATE.glob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > 460:
            docstring = text.split('"""')[1]
            assert "past 450 lines" in docstring, path.name
