from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from bazel_harness import REPO, Probe, Workspace

FIXTURE = Path(__file__).parent / "fixture"

# optuna and what `import optuna`, its TPE sampler and optuna.visualization
# import, and plotly with its dependencies.
OPTUNA_IMPORTS = (
    "colorlog",
    "narwhals",
    "numpy",
    "optuna",
    "packaging",
    "plotly",
    "tqdm",
)


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


def optuna_lock() -> str:
    """The blocks of requirements_lock.txt that pin OPTUNA_IMPORTS, with their hashes."""
    text = (REPO / "requirements_lock.txt").read_text()
    blocks = {}
    for block in re.split(r"\n(?=[a-z0-9])", text):
        match = re.match(r"([a-z0-9._-]+)==", block)
        if match:
            lines = [
                line for line in block.splitlines() if not line.lstrip().startswith("#")
            ]
            blocks[match.group(1)] = "\n".join(lines).rstrip(" \\")
    missing = [name for name in OPTUNA_IMPORTS if name not in blocks]
    assert not missing, f"requirements_lock.txt pins no {missing}"
    return "\n".join(blocks[name] for name in OPTUNA_IMPORTS) + "\n"


@pytest.fixture(scope="session")
def optuna_ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """A fixture workspace whose python_env has optuna and plotly (test_tpe.py, test_html.py).

    Its lock is the pinned, hashed lines of this checkout's
    requirements_lock.txt for OPTUNA_IMPORTS (pip takes them from its cache
    after the first run). Optuna's storage back ends (sqlalchemy, alembic and
    theirs) are left out to keep the environment small: python_env gives a
    package only the requirements that are installed.
    """
    base = tmp_path_factory.mktemp("optuna")
    workspace = Workspace.fixture(
        base / "ws",
        base / "output_base",
        python_env='requirements_lock = "//:lock.txt",',
    )
    shutil.copytree(FIXTURE, workspace.root, dirs_exist_ok=True)
    workspace.write("BUILD", 'exports_files(["lock.txt"])\n')
    workspace.write("lock.txt", optuna_lock())
    try:
        yield workspace
    finally:
        workspace.remove()
