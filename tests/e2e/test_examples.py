"""The examples/ workspace, and the release archive used through its printed snippet.

Both build a workspace of their own, which loads databazel as an external
repository the way a user's workspace does.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from bazel_harness import REPO, Workspace

EXAMPLES = REPO / "examples"


def check_example_search(ws: Workspace) -> None:
    result = ws.build("//search:search")
    assert result.executed_by_mnemonic() == {
        "DatabazelTrain": 3,
        "DatabazelEvaluate": 3,
        "DatabazelReport": 1,
    }
    report = json.loads(ws.bin("search/search.json").read_text())
    assert report["search"] == "//search:search" and report["mode"] == "min"
    assert [t["hyperparams"]["scale"] for t in report["trials"]] == ["1", "0.5", "2"]
    assert report["best"]["metrics"] == {"examples": 3, "mse": 1 / 6}


def test_examples_workspace_runs_its_search(tmp_path: Path) -> None:
    # Built in place, as `cd examples && bazel build //search:search` would,
    # but with an output base of its own and no bazel-* symlinks.
    ws = Workspace(EXAMPLES, tmp_path / "output_base", convenience_symlinks=False)
    try:
        check_example_search(ws)
    finally:
        ws.remove(keep_root=True)


def test_release_archive_works_through_the_printed_http_archive_snippet(
    tmp_path: Path,
) -> None:
    dist = tmp_path / "dist"
    release = subprocess.run(
        [sys.executable, str(REPO / "tools/release.py"), "--allow-dirty"]
        + ["--out", str(dist)],
        capture_output=True,
        text=True,
        check=True,
    )
    archive = Path(re.search(r"^archive: (.+)$", release.stdout, re.M).group(1))
    sha256 = re.search(r"^sha256: +([0-9a-f]{64})$", release.stdout, re.M).group(1)
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == sha256
    version = re.search(r"databazel-(.+)\.tar\.gz$", archive.name).group(1)
    with tarfile.open(archive) as tar:
        files = {m.name for m in tar.getmembers() if not m.isdir()}
    # Only what users load (.gitattributes export-ignore keeps out the rest):
    # the rule set's directory as committed, the module file, license, README.
    committed = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", "HEAD", "databazel"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "databazel/private/runner.py" in committed
    prefix = f"databazel-{version}/"
    assert files == {
        prefix + name for name in ["LICENSE", "MODULE.bazel", "README.md", *committed]
    }

    snippet = release.stdout.split("# WORKSPACE\n")[1].split("# MODULE.bazel")[0]
    ws = Workspace.fixture(tmp_path / "ws", tmp_path / "output_base")
    ws.write("WORKSPACE", 'workspace(name = "release_user")\n\n' + snippet)
    shutil.copytree(EXAMPLES / "search", ws.root / "search")
    try:
        check_example_search(ws)
    finally:
        ws.remove()
