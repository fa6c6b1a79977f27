from __future__ import annotations

from collections.abc import Iterator

import pytest
from bazel_harness import REPO, Workspace


@pytest.fixture(scope="session")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """This checkout as a workspace, with an output base (and server) of the test session's own."""
    # No bazel-* symlinks: the developer's own bazel-bin keeps pointing at their output base.
    workspace = Workspace(
        REPO,
        tmp_path_factory.mktemp("repo") / "output_base",
        convenience_symlinks=False,
    )
    try:
        yield workspace
    finally:
        workspace.remove(keep_root=True)
