from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from bazel_harness import Probe, Workspace

FIXTURE = Path(__file__).parent / "fixture"


@pytest.fixture(scope="session")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """One fixture workspace (one Bazel server, one stdlib-only Python env) for the session."""
    base = tmp_path_factory.mktemp("e2e")
    workspace = Workspace.fixture(base / "ws", base / "output_base")
    shutil.copytree(FIXTURE, workspace.root, dirs_exist_ok=True)
    try:
        yield workspace
    finally:
        workspace.remove()


@pytest.fixture(scope="session")
def probe() -> Iterator[Probe]:
    """The server isolated fixture scripts report to (bazel_harness.Probe)."""
    server = Probe()
    try:
        yield server
    finally:
        server.close()
